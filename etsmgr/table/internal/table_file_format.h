// The table file format and its file handling (internal; the public API is table_file.h).
//
// A file is a header, then the body: every object as its key's encoding then its value's
// (table_codec.h), nothing between them. All integers little-endian.
//
//   offset  size  field
//        0     8  magic "ETSMGRTB"
//        8     4  format version (1)
//       12     4  header size: 64 + the three strings below; the body starts there
//       16     1  table type (TableType), 17: access (Access), 18..23: zero
//       24     8  object count
//       32     8  body size in bytes; the file is exactly header size + body size long
//       40     4  CRC-32C of the body
//       44     4  name length, 48: key tag length, 52: value tag length
//       56     4  zero
//       60     4  CRC-32C of the header's bytes with this field taken as zero
//       64        name, key tag, value tag
#ifndef ETSMGR_TABLE_INTERNAL_TABLE_FILE_FORMAT_H_
#define ETSMGR_TABLE_INTERNAL_TABLE_FILE_FORMAT_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "etsmgr/table/table_core.h"
#include "etsmgr/table/table_file_info.h"

namespace etsmgr {

namespace table_file_internal {

inline constexpr char kMagic[8] = {'E', 'T', 'S', 'M', 'G', 'R', 'T', 'B'};
inline constexpr uint32_t kVersion = 1;
inline constexpr size_t kFixedHeader = 64;
// Longest name or tag a header may hold (a corrupt length must not ask for gigabytes).
inline constexpr uint32_t kMaxHeaderString = 1 << 16;

// CRC-32C (Castagnoli), continuing from `crc` (0 to start). SSE4.2 when the CPU has it.
uint32_t Crc32c(uint32_t crc, const void* data, size_t n);

// The header for `info` (its objects, body_bytes and body_crc as given).
std::string EncodeHeader(const TableFileInfo& info);

// Parses and checks the header at the start of `bytes` (a prefix of the file is enough when
// `whole_file` is false). `file_bytes` is the file's size. Errors, each naming `what` and `path`:
// InvalidArgument for a file that is not a table file or has another version; DataLoss for a cut
// short or damaged header, or a size that disagrees with the header. Yields the header's size.
absl::StatusOr<size_t> ParseHeader(std::string_view bytes, uint64_t file_bytes, const char* what,
                                   const std::string& path, TableFileInfo* info);

// Parses a whole file: the header as above, then the body's size and checksum (DataLoss when
// they disagree). Sets `*body` to the body's bytes (a view into `bytes`).
absl::Status ParseFile(std::string_view bytes, const char* what, const std::string& path,
                       TableFileInfo* info, std::string_view* body);

// Recomputes both checksums of a file in memory after its fields were changed (tests and the
// fuzzer use it to reach the checks behind them). Does nothing when the header is cut short.
void Reseal(std::string* bytes);

// The whole file, or an error naming `what` and the path (NotFound, PermissionDenied, ...).
absl::StatusOr<std::string> ReadFile(const std::string& path, const char* what);
// The first `limit` bytes of a file (fewer if it is shorter), and the file's size.
absl::StatusOr<std::string> ReadPrefix(const std::string& path, size_t limit, const char* what,
                                       uint64_t* file_bytes);

// Writes a file so that a crash never leaves a partial file under `path`: the bytes go to a
// temporary file beside it, which is fsynced, renamed over `path`, and the directory fsynced.
// Destroying it before Commit removes the temporary file.
class AtomicFile {
 public:
  AtomicFile(std::string path, std::string what);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  absl::Status Open();
  absl::Status Append(std::string_view bytes);
  absl::Status WriteAt(uint64_t offset, std::string_view bytes);
  absl::Status Commit();

 private:
  absl::Status Error(const char* step, int err) const;
  std::string path_;
  std::string temp_;
  std::string what_;
  int fd_ = -1;
  bool committed_ = false;
};

}  // namespace table_file_internal
}  // namespace etsmgr

#endif  // ETSMGR_TABLE_INTERNAL_TABLE_FILE_FORMAT_H_
