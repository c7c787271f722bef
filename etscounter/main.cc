// etscounter: `bazel run //etscounter:shell` (interactive, or commands from a pipe) and
// `bazel run //etscounter:demo` (the scripted example run; README command 1).
#include <unistd.h>

#include <cstring>
#include <iostream>

#include "etscounter/shell.h"

int main(int argc, char** argv) {
#ifdef ETSCOUNTER_DEMO_BY_DEFAULT
  bool demo = true;
#else
  bool demo = false;
#endif
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--demo") == 0) {
      demo = true;
    } else {
      std::cerr << "usage: " << argv[0] << " [--demo]\n";
      return 2;
    }
  }
  absl::StatusOr<std::unique_ptr<etscounter::App>> app = etscounter::App::Start(std::cout);
  if (!app.ok()) {
    std::cerr << "etscounter: " << app.status() << "\n";
    return 1;
  }
  if (demo) {
    absl::StatusOr<int64_t> count = etscounter::RunDemo(**app);
    if (!count.ok()) {
      (*app)->sink().Print("demo failed: " + count.status().ToString());
      return 1;
    }
    return 0;
  }
  return etscounter::RunShell(**app, std::cin, isatty(STDIN_FILENO) != 0);
}
