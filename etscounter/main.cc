// etscounter: `bazel run //etscounter:shell` (interactive, or commands from a pipe) and
// `bazel run //etscounter:demo` (the scripted example run, then the crash of the whole program;
// README command 1).
//   --shared[=SEGMENT]   keep the counter's table in a shared-memory segment (default name
//                        "etscounter"): it survives a kill -9 of this program
//   --shared_dir=DIR     ... in a file in DIR instead of /dev/shm
//   --instance=NAME      the manager instance (default "etsmgr")
//   --demo / --shell     run the demo / the shell (the default depends on the target)
#include <unistd.h>

#include <cstring>
#include <iostream>
#include <string>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "etscounter/shell.h"

int main(int argc, char** argv) {
#ifdef ETSCOUNTER_DEMO_BY_DEFAULT
  bool demo = true;
#else
  bool demo = false;
#endif
  etscounter::StorageOptions storage;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--demo") {
      demo = true;
    } else if (arg == "--shell") {
      demo = false;
    } else if (arg == "--shared") {
      storage.shared_segment = "etscounter";
    } else if (arg.substr(0, 9) == "--shared=") {
      storage.shared_segment = std::string(arg.substr(9));
    } else if (arg.substr(0, 13) == "--shared_dir=") {
      storage.shared_directory = std::string(arg.substr(13));
    } else if (arg.substr(0, 11) == "--instance=") {
      storage.instance = std::string(arg.substr(11));
    } else {
      std::cerr << "usage: " << argv[0]
                << " [--demo|--shell] [--shared[=SEGMENT]] [--shared_dir=DIR] [--instance=NAME]\n";
      return 2;
    }
  }
  if (!storage.shared_directory.empty() && storage.shared_segment.empty()) {
    storage.shared_segment = "etscounter";
  }
  absl::StatusOr<std::unique_ptr<etscounter::App>> app = etscounter::App::Start(std::cout, storage);
  if (!app.ok()) {
    std::cerr << "etscounter: " << app.status() << "\n";
    return 1;
  }
  if (demo) {
    etscounter::StreamLogSink& out = (*app)->sink();
    absl::StatusOr<int64_t> count = etscounter::RunDemo(**app);
    if (!count.ok()) {
      out.Print("demo failed: " + count.status().ToString());
      return 1;
    }
    out.Print("--- step 16: kill -9 the whole program, start it again, check");
    absl::StatusOr<etscounter::ProgramKillResult> killed = etscounter::RunProgramKill(
        out, "/proc/self/exe", absl::StrCat("etscounter-demo-", getpid()), 3);
    if (!killed.ok()) {
      out.Print("demo failed: " + killed.status().ToString());
      return 1;
    }
    out.Print(absl::StrCat("=== program kill: count ", killed->before, " before kill -9, ",
                           killed->after,
                           " after the restart; kill -9 -> restarted -> count "
                           "back in ",
                           absl::FormatDuration(killed->kill_to_check)));
    return 0;
  }
  return etscounter::RunShell(**app, std::cin, isatty(STDIN_FILENO) != 0);
}
