#include "etsmgr/table/table_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <new>
#include <string>
#include <string_view>
#include <utility>

#include "absl/strings/str_cat.h"
#include "etsmgr/base/errno_status.h"
#include "etsmgr/table/internal/table_file_format.h"

namespace etsmgr::table_file_internal {
namespace {

// --- CRC-32C.

constexpr uint32_t kCrc32cPoly = 0x82F63B78;  // Castagnoli, reflected.

constexpr std::array<uint32_t, 256> MakeCrcTable() {
  std::array<uint32_t, 256> table{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ kCrc32cPoly : c >> 1;
    table[i] = c;
  }
  return table;
}
constexpr std::array<uint32_t, 256> kCrcTable = MakeCrcTable();

uint32_t Crc32cSoftware(uint32_t crc, const unsigned char* p, size_t n) {
  uint32_t c = ~crc;
  while (n-- > 0) c = kCrcTable[(c ^ *p++) & 0xff] ^ (c >> 8);
  return ~c;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) uint32_t Crc32cHardware(uint32_t crc, const unsigned char* p,
                                                          size_t n) {
  uint64_t c = ~crc;
  while (n >= 8) {
    uint64_t word;
    std::memcpy(&word, p, 8);
    c = __builtin_ia32_crc32di(c, word);
    p += 8;
    n -= 8;
  }
  uint32_t c32 = static_cast<uint32_t>(c);
  while (n-- > 0) c32 = __builtin_ia32_crc32qi(c32, *p++);
  return ~c32;
}
#endif

// --- Little-endian fields (the host is little-endian: table_codec.h checks).

template <typename T>
void PutAt(std::string* s, size_t at, T v) {
  std::memcpy(s->data() + at, &v, sizeof v);
}
template <typename T>
T GetAt(std::string_view s, size_t at) {
  T v;
  std::memcpy(&v, s.data() + at, sizeof v);
  return v;
}

constexpr size_t kVersionAt = 8, kHeaderSizeAt = 12, kTypeAt = 16, kAccessAt = 17, kObjectsAt = 24,
                 kBodyBytesAt = 32, kBodyCrcAt = 40, kNameLenAt = 44, kKeyTagLenAt = 48,
                 kValueTagLenAt = 52, kHeaderCrcAt = 60;

uint32_t HeaderCrc(std::string_view header) {
  uint32_t crc = Crc32c(0, header.data(), kHeaderCrcAt);
  const uint32_t zero = 0;
  crc = Crc32c(crc, &zero, sizeof zero);
  return Crc32c(crc, header.data() + kFixedHeader, header.size() - kFixedHeader);
}

std::string Where(const char* what, const std::string& path) {
  return absl::StrCat(what, "(\"", path, "\")");
}

std::atomic<uint64_t> g_temp_counter{0};

}  // namespace

uint32_t Crc32c(uint32_t crc, const void* data, size_t n) {
  const auto* p = static_cast<const unsigned char*>(data);
#if defined(__x86_64__)
  static const bool hardware = __builtin_cpu_supports("sse4.2");
  if (hardware) return Crc32cHardware(crc, p, n);
#endif
  return Crc32cSoftware(crc, p, n);
}

std::string EncodeHeader(const TableFileInfo& info) {
  std::string h(kFixedHeader, '\0');
  std::memcpy(h.data(), kMagic, sizeof kMagic);
  PutAt<uint32_t>(&h, kVersionAt, kVersion);
  PutAt<uint32_t>(&h, kHeaderSizeAt,
                  static_cast<uint32_t>(kFixedHeader + info.name.size() + info.key_tag.size() +
                                        info.value_tag.size()));
  PutAt<uint8_t>(&h, kTypeAt, static_cast<uint8_t>(info.type));
  PutAt<uint8_t>(&h, kAccessAt, static_cast<uint8_t>(info.access));
  PutAt<uint64_t>(&h, kObjectsAt, info.objects);
  PutAt<uint64_t>(&h, kBodyBytesAt, info.body_bytes);
  PutAt<uint32_t>(&h, kBodyCrcAt, info.body_crc);
  PutAt<uint32_t>(&h, kNameLenAt, static_cast<uint32_t>(info.name.size()));
  PutAt<uint32_t>(&h, kKeyTagLenAt, static_cast<uint32_t>(info.key_tag.size()));
  PutAt<uint32_t>(&h, kValueTagLenAt, static_cast<uint32_t>(info.value_tag.size()));
  h += info.name;
  h += info.key_tag;
  h += info.value_tag;
  PutAt<uint32_t>(&h, kHeaderCrcAt, HeaderCrc(h));
  return h;
}

absl::StatusOr<size_t> ParseHeader(std::string_view bytes, uint64_t file_bytes, const char* what,
                                   const std::string& path, TableFileInfo* info) {
  const std::string where = Where(what, path);
  if (bytes.size() < sizeof kMagic || std::memcmp(bytes.data(), kMagic, sizeof kMagic) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": not a table file (no \"ETSMGRTB\" at its start)"));
  }
  if (bytes.size() < kFixedHeader) {
    return absl::DataLossError(absl::StrCat(where, ": the header is cut short (", bytes.size(),
                                            " of ", kFixedHeader, " bytes)"));
  }
  const uint32_t version = GetAt<uint32_t>(bytes, kVersionAt);
  if (version != kVersion) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": format version ", version, ", this build reads version ", kVersion));
  }
  const uint32_t name_len = GetAt<uint32_t>(bytes, kNameLenAt);
  const uint32_t key_len = GetAt<uint32_t>(bytes, kKeyTagLenAt);
  const uint32_t value_len = GetAt<uint32_t>(bytes, kValueTagLenAt);
  const uint64_t header_size = GetAt<uint32_t>(bytes, kHeaderSizeAt);
  if (name_len > kMaxHeaderString || key_len > kMaxHeaderString || value_len > kMaxHeaderString ||
      header_size != kFixedHeader + uint64_t{name_len} + key_len + value_len) {
    return absl::DataLossError(
        absl::StrCat(where, ": the header is damaged (its string lengths disagree with its size)"));
  }
  if (bytes.size() < header_size || file_bytes < header_size) {
    return absl::DataLossError(absl::StrCat(where, ": the header is cut short (",
                                            std::min<uint64_t>(bytes.size(), file_bytes), " of ",
                                            header_size, " bytes)"));
  }
  const std::string_view header = bytes.substr(0, header_size);
  if (GetAt<uint32_t>(header, kHeaderCrcAt) != HeaderCrc(header)) {
    return absl::DataLossError(absl::StrCat(where, ": the header's checksum does not match"));
  }
  const uint8_t type = GetAt<uint8_t>(header, kTypeAt);
  const uint8_t access = GetAt<uint8_t>(header, kAccessAt);
  if (type > static_cast<uint8_t>(TableType::kDuplicateBag) ||
      access > static_cast<uint8_t>(Access::kPublic)) {
    return absl::DataLossError(absl::StrCat(where, ": the header names table type ", int{type},
                                            " and access ", int{access}, ", which do not exist"));
  }
  info->version = version;
  info->type = static_cast<TableType>(type);
  info->access = static_cast<Access>(access);
  info->objects = GetAt<uint64_t>(header, kObjectsAt);
  info->body_bytes = GetAt<uint64_t>(header, kBodyBytesAt);
  info->body_crc = GetAt<uint32_t>(header, kBodyCrcAt);
  info->name.assign(header.substr(kFixedHeader, name_len));
  info->key_tag.assign(header.substr(kFixedHeader + name_len, key_len));
  info->value_tag.assign(header.substr(kFixedHeader + name_len + key_len, value_len));
  info->file_bytes = file_bytes;
  if (file_bytes - header_size != info->body_bytes) {
    return absl::DataLossError(absl::StrCat(
        where, ": the file is ", file_bytes, " bytes long, the header says ",
        header_size + info->body_bytes,
        file_bytes < header_size + info->body_bytes ? " (cut short)" : " (bytes after the end)"));
  }
  if (info->objects > info->body_bytes) {
    return absl::DataLossError(absl::StrCat(where, ": the header counts ", info->objects,
                                            " objects in a body of ", info->body_bytes, " bytes"));
  }
  return header_size;
}

absl::Status ParseFile(std::string_view bytes, const char* what, const std::string& path,
                       TableFileInfo* info, std::string_view* body) {
  absl::StatusOr<size_t> header_size = ParseHeader(bytes, bytes.size(), what, path, info);
  if (!header_size.ok()) return header_size.status();
  *body = bytes.substr(*header_size);
  if (Crc32c(0, body->data(), body->size()) != info->body_crc) {
    return absl::DataLossError(
        absl::StrCat(Where(what, path), ": the body's checksum does not match (damaged)"));
  }
  return absl::OkStatus();
}

void Reseal(std::string* bytes) {
  if (bytes->size() < kFixedHeader) return;
  const uint64_t header_size = GetAt<uint32_t>(*bytes, kHeaderSizeAt);
  if (header_size < kFixedHeader || header_size > bytes->size()) return;
  const std::string_view body = std::string_view(*bytes).substr(header_size);
  PutAt<uint32_t>(bytes, kBodyCrcAt, Crc32c(0, body.data(), body.size()));
  PutAt<uint32_t>(bytes, kHeaderCrcAt, HeaderCrc(std::string_view(*bytes).substr(0, header_size)));
}

namespace {

absl::Status ReadAll(int fd, char* out, size_t n, uint64_t offset, const std::string& where,
                     size_t* got) {
  *got = 0;
  while (*got < n) {
    ssize_t r = pread(fd, out + *got, n - *got, static_cast<off_t>(offset + *got));
    if (r < 0) {
      if (errno == EINTR) continue;
      return ErrnoToStatus(errno, absl::StrCat(where, ": read"));
    }
    if (r == 0) break;  // Shorter than it was a moment ago: the caller sees a short read.
    *got += static_cast<size_t>(r);
  }
  return absl::OkStatus();
}

// Opens `path` to read, refusing anything but a regular file; sets `*file_bytes` to its size.
absl::StatusOr<int> OpenRegular(const std::string& path, const std::string& where,
                                uint64_t* file_bytes) {
  // Non-blocking for the open alone: opening a FIFO to read would wait for a writer (for ever);
  // anything but a regular file is refused below.
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd < 0) return ErrnoToStatus(errno, absl::StrCat(where, ": open"));
  struct stat st;
  if (fstat(fd, &st) != 0) {
    absl::Status error = ErrnoToStatus(errno, absl::StrCat(where, ": fstat"));
    close(fd);
    return error;
  }
  if (!S_ISREG(st.st_mode)) {
    close(fd);
    return absl::InvalidArgumentError(absl::StrCat(where, ": not a regular file"));
  }
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  *file_bytes = static_cast<uint64_t>(st.st_size);
  return fd;
}

// The first `limit` bytes of the open file `fd` whose size is `file_bytes` (fewer if it is
// shorter now).
absl::StatusOr<std::string> ReadOpen(int fd, size_t limit, uint64_t file_bytes,
                                     const std::string& where) {
  std::string out;
  try {
    out.assign(std::min<uint64_t>(limit, file_bytes), '\0');
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        absl::StrCat(where, ": no memory for the file's ", file_bytes, " bytes"));
  }
  size_t got = 0;
  absl::Status read = ReadAll(fd, out.data(), out.size(), 0, where, &got);
  if (!read.ok()) return read;
  out.resize(got);
  return out;
}

absl::StatusOr<std::string> Read(const std::string& path, size_t limit, const char* what,
                                 uint64_t* file_bytes) {
  const std::string where = Where(what, path);
  absl::StatusOr<int> fd = OpenRegular(path, where, file_bytes);
  if (!fd.ok()) return fd.status();
  absl::StatusOr<std::string> out = ReadOpen(*fd, limit, *file_bytes, where);
  close(*fd);
  return out;
}

// The CRC-32C of `n` bytes of `fd` from `offset`, read through a small buffer; DataLoss when the
// file ends sooner.
absl::StatusOr<uint32_t> StreamCrc(int fd, uint64_t offset, uint64_t n, const std::string& where) {
  constexpr size_t kChunk = size_t{1} << 20;
  std::string buffer(static_cast<size_t>(std::min<uint64_t>(n, kChunk)), '\0');
  uint32_t crc = 0;
  while (n > 0) {
    const size_t want = static_cast<size_t>(std::min<uint64_t>(n, kChunk));
    size_t got = 0;
    if (absl::Status st = ReadAll(fd, buffer.data(), want, offset, where, &got); !st.ok()) {
      return st;
    }
    if (got != want)
      return absl::DataLossError(absl::StrCat(where, ": the file shrank while read"));
    crc = Crc32c(crc, buffer.data(), got);
    offset += got;
    n -= got;
  }
  return crc;
}

uint64_t PhysicalMemoryBytes() {
  const long pages = sysconf(_SC_PHYS_PAGES);
  const long page = sysconf(_SC_PAGESIZE);
  if (pages <= 0 || page <= 0) return ~uint64_t{0};
  return static_cast<uint64_t>(pages) * static_cast<uint64_t>(page);
}

}  // namespace

absl::StatusOr<std::string> ReadFile(const std::string& path, const char* what) {
  const std::string where = Where(what, path);
  uint64_t file_bytes = 0;
  absl::StatusOr<int> opened = OpenRegular(path, where, &file_bytes);
  if (!opened.ok()) return opened.status();
  const int fd = *opened;
  struct Closer {
    int fd;
    ~Closer() { close(fd); }
  } closer{fd};
  // The header first: a file that is not a table file, or whose length disagrees with its
  // header (a huge or sparse foreign file), is refused before its bytes are read or allocated.
  absl::StatusOr<std::string> prefix =
      ReadOpen(fd, kFixedHeader + 3 * size_t{kMaxHeaderString}, file_bytes, where);
  if (!prefix.ok()) return prefix.status();
  TableFileInfo info;
  absl::StatusOr<size_t> header = ParseHeader(*prefix, file_bytes, what, path, &info);
  if (!header.ok()) return header.status();
  // A file larger than the machine's memory cannot be loaded: refused before it is read (with
  // the kernel's overcommit, allocating it would not fail but end in the OOM killer).
  if (const uint64_t memory = PhysicalMemoryBytes(); file_bytes > memory) {
    return absl::ResourceExhaustedError(absl::StrCat(where, ": the file's ", file_bytes,
                                                     " bytes exceed this machine's memory (",
                                                     memory, " bytes)"));
  }
  // The body's checksum is checked through a small buffer before the file's size is allocated:
  // a damaged (say sparse) file with a valid header costs its reading, never its size in memory.
  absl::StatusOr<uint32_t> crc = StreamCrc(fd, *header, info.body_bytes, where);
  if (!crc.ok()) return crc.status();
  if (*crc != info.body_crc) {
    return absl::DataLossError(
        absl::StrCat(where, ": the body's checksum does not match (damaged)"));
  }
  absl::StatusOr<std::string> bytes = ReadOpen(fd, ~size_t{0}, file_bytes, where);
  if (bytes.ok() && bytes->size() != file_bytes) {
    return absl::DataLossError(absl::StrCat(where, ": the file shrank while read"));
  }
  return bytes;
}

absl::StatusOr<std::string> ReadPrefix(const std::string& path, size_t limit, const char* what,
                                       uint64_t* file_bytes) {
  return Read(path, limit, what, file_bytes);
}

// --- AtomicFile.

AtomicFile::AtomicFile(std::string path, std::string what)
    : path_(std::move(path)), what_(std::move(what)) {}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) close(fd_);
  if (!committed_ && !temp_.empty()) unlink(temp_.c_str());
}

absl::Status AtomicFile::Error(const char* step, int err) const {
  return ErrnoToStatus(err, absl::StrCat(what_, " to \"", path_, "\": ", step));
}

absl::Status AtomicFile::Open() {
  // A stray temporary file of a save cut short by a crash may hold the name (a restarted
  // program often has the same pid): take the next one. Mode 0600: a table's contents are its
  // owner's (a private table's too).
  for (int attempt = 0;; ++attempt) {
    temp_ = absl::StrCat(path_, ".tmp.", getpid(), ".",
                         g_temp_counter.fetch_add(1, std::memory_order_relaxed));
    fd_ = open(temp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd_ >= 0) return absl::OkStatus();
    const int err = errno;
    temp_.clear();  // Nothing of ours to remove.
    if (err != EEXIST || attempt >= 1000) return Error("create the temporary file", err);
  }
}

absl::Status AtomicFile::Append(std::string_view bytes) {
  while (!bytes.empty()) {
    ssize_t n = write(fd_, bytes.data(), bytes.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return Error("write", errno);
    }
    bytes.remove_prefix(static_cast<size_t>(n));
  }
  return absl::OkStatus();
}

absl::Status AtomicFile::WriteAt(uint64_t offset, std::string_view bytes) {
  while (!bytes.empty()) {
    ssize_t n = pwrite(fd_, bytes.data(), bytes.size(), static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Error("write", errno);
    }
    bytes.remove_prefix(static_cast<size_t>(n));
    offset += static_cast<uint64_t>(n);
  }
  return absl::OkStatus();
}

absl::Status AtomicFile::Commit() {
  if (fsync(fd_) != 0) return Error("fsync", errno);
  if (close(fd_) != 0) {
    fd_ = -1;
    return Error("close", errno);
  }
  fd_ = -1;
  if (rename(temp_.c_str(), path_.c_str()) != 0) return Error("rename", errno);
  committed_ = true;
  // The rename is durable once the directory is.
  const size_t slash = path_.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : path_.substr(0, slash + 1);
  int dir_fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd < 0) return Error("open the directory to fsync it", errno);
  const int synced = fsync(dir_fd);
  const int err = errno;
  close(dir_fd);
  if (synced != 0) return Error("fsync the directory", err);
  return absl::OkStatus();
}

}  // namespace etsmgr::table_file_internal

namespace etsmgr {

absl::StatusOr<TableFileInfo> TabFileInfo(const std::string& path) {
  namespace tf = table_file_internal;
  uint64_t file_bytes = 0;
  absl::StatusOr<std::string> prefix = tf::ReadPrefix(
      path, tf::kFixedHeader + 3 * size_t{tf::kMaxHeaderString}, "tabfile_info", &file_bytes);
  if (!prefix.ok()) return prefix.status();
  TableFileInfo info;
  absl::StatusOr<size_t> header = tf::ParseHeader(*prefix, file_bytes, "tabfile_info", path, &info);
  if (!header.ok()) return header.status();
  return info;
}

}  // namespace etsmgr
