// A child attaches to a named shared memory segment by its name and writes
// into it; the parent prints what it finds, then removes the segment.
//
// Python:
//     def f(name):
//         shm = SharedMemory(name)
//         shm.buf[:20] = b'hello from the child'
//         shm.close()
//     shm = SharedMemory(create=True, size=64)
//     p = Process(target=f, args=(shm.name,)); p.start(); p.join()
//     print(bytes(shm.buf[:20]).decode())
//     shm.close(); shm.unlink()

#include <pactor/pactor.hpp>

#include <cstdio>
#include <cstring>
#include <string>
#include <system_error>

void f(std::string name) {
  auto shm = pactor::shared_memory::attach(name);
  const char text[] = "hello from the child";
  std::memcpy(shm.buf().data(), text, sizeof text); // with its '\0'
}

int main(int argc, char** argv) {
  pactor::init(argc, argv);
  auto shm = pactor::shared_memory::create(64); // made-up name: shm.name()
  std::printf("created a segment of %zu bytes\n", shm.size());
  pactor::process p(pactor::with_spawn, f, shm.name()); // a spawned child
  p.start();
  p.join();
  std::printf("the child wrote: %s\n",
              reinterpret_cast<const char*>(shm.buf().data()));
  shm.unlink(); // our mapping stays valid; the name is gone
  try {
    (void)pactor::shared_memory::attach(shm.name());
  } catch (const std::system_error& e) {
    std::printf("after unlink, attach fails: %s\n", e.code().message().c_str());
  }
}
