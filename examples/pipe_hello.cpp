// A child sends [42, None, 'hello'] through a pipe and closes its end.
//
// Python:
//     def f(conn):
//         conn.send([42, None, 'hello'])
//         conn.close()
//     parent_conn, child_conn = Pipe()
//     p = Process(target=f, args=(child_conn,)); p.start()
//     print(parent_conn.recv()); p.join()

#include <pactor/pactor.hpp>

#include <cstdio>
#include <optional>
#include <string>
#include <tuple>

using triple = std::tuple<int, std::optional<int>, std::string>;

void f(pactor::connection<triple> conn) {
  conn.send({42, std::nullopt, "hello"});
  conn.close();
}

int main(int argc, char** argv) {
  pactor::init(argc, argv);
  auto [parent_conn, child_conn] = pactor::pipe<triple>();
  pactor::process p(pactor::with_spawn, f, child_conn);
  p.start();
  child_conn.close(); // the child has its own copy
  auto [n, nothing, word] = parent_conn.recv(std::chrono::seconds(10));
  std::printf("[%d, %s, '%s']\n", n, nothing ? "?" : "None", word.c_str());
  p.join();
  try {
    (void)parent_conn.recv(std::chrono::seconds(10));
  } catch (const pactor::eof_error&) {
    std::printf("the child closed its end: end of file\n");
  }
}
