// The fuzz target's body in every test run: seeds of every shape (well-formed, pipelined, inline,
// malformed, oversized) in several piece sizes, then 20,000 inputs mutated from them with a fixed
// seed (the libFuzzer target explores further: see request_fuzzer.cc).
#include "etsredis/request_fuzz.h"

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace etsredis {
namespace {

const std::vector<std::string>& Seeds() {
  static const auto* seeds = new std::vector<std::string>{
      "*1\r\n$4\r\nPING\r\n",
      "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n",
      "*2\r\n$4\r\nINCR\r\n$1\r\nc\r\n*3\r\n$6\r\nINCRBY\r\n$1\r\nc\r\n$2\r\n-5\r\n",
      "*5\r\n$4\r\nMSET\r\n$1\r\na\r\n$1\r\n1\r\n$1\r\nb\r\n$1\r\n2\r\n*3\r\n$4\r\nMGET\r\n$"
      "1\r\na\r\n$"
      "1\r\nb\r\n",
      "PING\r\nSET k \"a b\\x41\"\r\nGET k\r\nDEL k\r\nEXISTS k\r\nDBSIZE\r\nFLUSHALL\r\n",
      "CONFIG GET *\r\nINFO\r\nCOMMAND DOCS\r\nCLIENT SETNAME x\r\nSELECT 0\r\nQUIT\r\nPING\r\n",
      "SET k v NX GET\r\nSET k w XX GET\r\nSET k v EX 10\r\nDECRBY k 1\r\n",
      "*1\r\n$9999\r\n",
      "*99999\r\n",
      "*2\r\n$3\r\nGET\r\n:1\r\n",
      "*1\r\n*1\r\n$1\r\na\r\n",
      "ECHO 'unbalanced\r\n",
      "*0\r\n*-1\r\n\r\n\n*1\r\n$4\r\nPING\r\n",
      std::string(2000, 'a'),
  };
  return *seeds;
}

void Feed(const std::string& input, uint8_t piece) {
  std::string data(1, static_cast<char>(piece));
  data += input;
  FuzzRequests(reinterpret_cast<const uint8_t*>(data.data()), data.size());
}

TEST(RequestFuzzTest, SeedsInEveryPieceSize) {
  for (const std::string& seed : Seeds()) {
    for (uint8_t piece : {0, 1, 2, 6, 255}) Feed(seed, piece);
  }
}

TEST(RequestFuzzTest, MutatedSeeds) {
  std::mt19937_64 rng(20261130);
  const std::string alphabet = "*$:+-\r\n0123456789-aAbZ \"'\\x";
  for (int i = 0; i < 20000; ++i) {
    std::string s = Seeds()[rng() % Seeds().size()];
    s += Seeds()[rng() % Seeds().size()];
    for (int m = static_cast<int>(rng() % 6); m > 0 && !s.empty(); --m) {
      size_t at = rng() % s.size();
      switch (rng() % 4) {
        case 0:
          s[at] = alphabet[rng() % alphabet.size()];
          break;
        case 1:
          s.erase(at, 1 + rng() % 4);
          break;
        case 2:
          s.insert(at, 1, alphabet[rng() % alphabet.size()]);
          break;
        default:
          s.insert(at, s.substr(rng() % s.size(), rng() % 16));
          break;
      }
    }
    Feed(s, static_cast<uint8_t>(rng()));
  }
}

}  // namespace
}  // namespace etsredis
