// Deliberate undefined behaviour: signed integer overflow. The asan config includes UBSan and
// must stop the program with a report (tools/check_sanitizers.sh checks that it does).
#include <climits>
#include <cstdio>
#include <cstdlib>

int main(int argc, char**) {
  volatile int big = INT_MAX - 1 + argc;  // INT_MAX, unknown to the compiler.
  int sum = big + argc;                   // Overflows.
  std::printf("%d\n", sum);
  return EXIT_SUCCESS;
}
