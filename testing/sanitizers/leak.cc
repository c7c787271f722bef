// Deliberate leak: the only pointer to a heap block is dropped. LeakSanitizer must report it.
#include <cstdio>

int main() {
  int* volatile p = new int[64];
  p[0] = 1;
  std::printf("%d\n", p[0]);
  p = nullptr;
  return 0;
}
