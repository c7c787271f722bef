// Deliberate heap use after free. ASan must report it.
#include <cstdio>

int main() {
  int* volatile p = new int(7);
  delete p;
  std::printf("%d\n", *p);
  return 0;
}
