// A parallel transform over files: generate PGM images in a temporary
// directory, blur each one in a worker process (3x3 box blur), write the
// results beside them, with a progress bar on the terminal (plain progress
// lines otherwise). Tasks get a file name and return a small summary, so
// only names and numbers travel between processes.
//
//     pool_blur [--images N] [--size S]

#include <pactor/pactor.hpp>

#include <CLI/CLI.hpp>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace fs = std::filesystem;

namespace {

struct image {
  int width = 0;
  int height = 0;
  std::vector<std::uint8_t> pixels;
};

image read_pgm(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::string magic;
  int maxval = 0;
  image img;
  in >> magic >> img.width >> img.height >> maxval;
  in.get();
  if (magic != "P5" || maxval != 255 || img.width <= 0 || img.height <= 0)
    throw std::runtime_error(path + ": not an 8-bit binary PGM");
  img.pixels.resize(static_cast<std::size_t>(img.width) * img.height);
  in.read(reinterpret_cast<char*>(img.pixels.data()),
          static_cast<std::streamsize>(img.pixels.size()));
  if (!in)
    throw std::runtime_error(path + ": truncated");
  return img;
}

void write_pgm(const std::string& path, const image& img) {
  std::ofstream out(path, std::ios::binary);
  out << "P5\n" << img.width << " " << img.height << "\n255\n";
  out.write(reinterpret_cast<const char*>(img.pixels.data()),
            static_cast<std::streamsize>(img.pixels.size()));
}

// What a task returns: the output path and the mean brightness.
struct blurred {
  std::string path;
  double mean = 0;
  MSGPACK_DEFINE(path, mean)
};

// The task: read, blur, write; runs in a worker process.
blurred blur_file(std::string path) {
  auto img = read_pgm(path);
  image out = img;
  const int w = img.width;
  const int h = img.height;
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      int sum = 0;
      int n = 0;
      for (int dy = -1; dy <= 1; ++dy)
        for (int dx = -1; dx <= 1; ++dx) {
          int yy = y + dy;
          int xx = x + dx;
          if (yy < 0 || yy >= h || xx < 0 || xx >= w)
            continue;
          sum += img.pixels[static_cast<std::size_t>(yy) * w + xx];
          ++n;
        }
      out.pixels[static_cast<std::size_t>(y) * w + x]
        = static_cast<std::uint8_t>(sum / n);
    }
  auto target = fs::path(path).replace_extension(".blur.pgm").string();
  write_pgm(target, out);
  double mean = std::accumulate(out.pixels.begin(), out.pixels.end(), 0.0)
                / static_cast<double>(out.pixels.size());
  return {target, mean};
}

} // namespace

int main(int argc, char** argv) {
  pactor::init(argc, argv);
  CLI::App app("Blurs generated PGM images in a process pool.");
  int images = 200;
  int size = 256;
  app.add_option("--images", images, "How many images")
    ->check(CLI::Range(1, 100000));
  app.add_option("--size", size, "Width and height in pixels")
    ->check(CLI::Range(8, 4096));
  CLI11_PARSE(app, argc, argv);

  // Generated input in a temporary directory, removed at the end.
  auto dir
    = fs::temp_directory_path() / ("pactor-blur-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::vector<std::string> files;
  std::mt19937 rng(42);
  for (int i = 0; i < images; ++i) {
    image img{size, size, {}};
    img.pixels.resize(static_cast<std::size_t>(size) * size);
    for (auto& px : img.pixels)
      px = static_cast<std::uint8_t>(rng() & 0xff);
    files.push_back((dir / ("img" + std::to_string(i) + ".pgm")).string());
    write_pgm(files.back(), img);
  }

  pactor::pool pool(0, {.progress_bar = true});
  auto results = pool.map(blur_file, files, 4);

  double mean = 0;
  std::size_t written = 0;
  for (auto& r : results) {
    mean += r.mean;
    written += fs::exists(r.path) ? 1 : 0;
  }
  std::printf("blurred %zu images of %dx%d with %zu workers; mean brightness "
              "%.1f (noise averages to about 127.5)\n",
              written, size, size, pool.size(),
              mean / static_cast<double>(results.size()));
  fs::remove_all(dir);
  return written == files.size() ? 0 : 1;
}
