// Deliberate data race: two threads increment a plain int. TSan must report it.
#include <cstdio>
#include <thread>

int main() {
  int counter = 0;
  std::thread other([&counter] {
    for (int i = 0; i < 1000; ++i) ++counter;
  });
  for (int i = 0; i < 1000; ++i) ++counter;
  other.join();
  std::printf("%d\n", counter);
  return 0;
}
