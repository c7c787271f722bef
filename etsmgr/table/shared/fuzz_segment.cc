#include "etsmgr/table/shared/fuzz_segment.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "etsmgr/table/shared/shared_map.h"

namespace etsmgr::shared_testing {
namespace {

using etsmgr::SharedMap;
using etsmgr::SharedMapOptions;
using IntMap = SharedMap<int64_t, int64_t>;

const std::string& Directory() {
  static const std::string dir = [] {
    const char* tmp = std::getenv("TEST_TMPDIR");
    std::string templ_s = std::string(tmp != nullptr ? tmp : "/tmp") + "/etsmgr-fuzz-XXXXXX";
    std::vector<char> templ(templ_s.begin(), templ_s.end());
    templ.push_back(0);
    const char* made = mkdtemp(templ.data());
    if (made == nullptr) std::abort();
    return std::string(made);
  }();
  return dir;
}

SharedMapOptions Options() {
  SharedMapOptions o;
  o.directory = Directory();
  o.shards = 4;
  o.max_bytes = uint64_t{1} << 24;
  o.lock_timeout = absl::Milliseconds(1);
  o.mode = SharedMapOptions::Mode::kOpen;
  return o;
}

// A valid segment with a few hundred entries, as bytes.
const std::vector<char>& Pristine() {
  static const std::vector<char> bytes = [] {
    SharedMapOptions o = Options();
    o.mode = SharedMapOptions::Mode::kCreate;
    {
      IntMap m = IntMap::Open("seed", o).value();
      for (int64_t k = 0; k < 300; ++k) (void)m.Insert(k, k);
      for (int64_t k = 0; k < 300; k += 3) (void)m.Erase(k);
    }
    std::string path = Directory() + "/seed";
    int fd = open(path.c_str(), O_RDONLY);
    std::vector<char> out(static_cast<size_t>(lseek(fd, 0, SEEK_END)));
    if (pread(fd, out.data(), out.size(), 0) != static_cast<ssize_t>(out.size())) std::abort();
    close(fd);
    unlink(path.c_str());
    return out;
  }();
  return bytes;
}

void WriteSegment(const std::vector<char>& bytes) {
  std::string path = Directory() + "/m";
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW, 0600);
  if (fd < 0) std::abort();
  if (!bytes.empty() &&
      write(fd, bytes.data(), bytes.size()) != static_cast<ssize_t>(bytes.size())) {
    std::abort();
  }
  close(fd);
}

}  // namespace

void FuzzSegmentOnce(const uint8_t* data, size_t size) {
  if (size == 0) return;
  std::vector<char> bytes;
  const uint8_t mode = data[0];
  ++data;
  --size;
  if (mode % 4 == 0) {
    bytes.assign(data, data + size);  // the raw bytes are the file
  } else {
    // Overlay: chunks of (offset, length, bytes) on the valid segment.
    bytes = Pristine();
    size_t i = 0;
    while (i + 3 <= size) {
      size_t offset = (size_t{data[i]} << 8 | data[i + 1]) * (mode % 4 == 1 ? 1 : 8);
      size_t len = data[i + 2] % 16 + 1;
      i += 3;
      for (size_t j = 0; j < len && i < size; ++j, ++i) {
        if (offset + j < bytes.size()) bytes[offset + j] = static_cast<char>(data[i]);
      }
    }
  }
  WriteSegment(bytes);
  absl::StatusOr<IntMap> m = IntMap::Open("m", Options());
  if (m.ok()) {
    (void)m->Check();
    (void)m->Size();
    (void)m->Get(7);
    (void)m->Member(8);
    (void)m->Insert(1000, 1);
    (void)m->UpdateCounter(11, 1, {.default_value = 0});
    (void)m->Erase(13);
    (void)m->Take(14);
    (void)m->ToList();
    (void)m->Check();
  }
}

}  // namespace etsmgr::shared_testing
