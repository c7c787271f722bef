// Saving a table to a file and loading it back: ETS's tab2file, file2tab and tabfile_info.
//
//   // In any process that may read the table:
//   absl::Status saved = SaveTable(scores, "/var/lib/app/scores.tab");
//   // Later, perhaps after a restart, in the process that is to own the table:
//   absl::StatusOr<Table<std::string, int64_t>> loaded =
//       LoadTable<std::string, int64_t>("/var/lib/app/scores.tab");
//   absl::StatusOr<TableFileInfo> info = TabFileInfo("/var/lib/app/scores.tab");
//
// The file (format in internal/table_file_format.h) holds a header -- the table's name, type and
// access, the key and value types' tags (TableCodec<T>::Tag(), see table_codec.h), the object
// count and a CRC-32C of the body -- and then every object. Keys and values are written by
// TableCodec: built in for arithmetic types, std::string, std::pair and std::vector; user types
// specialize it.
//
// SaveTable (tab2file) writes to a temporary file beside `path`, fsyncs it, renames it over
// `path` and fsyncs the directory, so a crash at any moment leaves either the old file or the
// new one under `path`, never a part of one (at worst a stray "<path>.tmp.<pid>.<n>"). It needs
// read access (private: the owner). It reads one shard at a time under that shard's read lock
// (an ordered_set: one run of 4096 consecutive keys at a time), encoding straight from the
// table, so writers wait for at most one shard's encoding, never for the disk. What a save
// taken while writers run captures: each shard (run) as it was at one moment, so every object
// present for the whole save is in the file exactly once, objects inserted or deleted meanwhile
// may or may not be, and a multi-key Insert that spans shards may be caught in part. Quiesce
// the writers for a point-in-time copy of the whole table.
//
// LoadTable (file2tab) reads the whole file, checks it -- the format, the header's checksum, the
// file's length against the header, the body's checksum, the type tags against K and V, the
// object count, and that every object decodes -- and only then creates the table (owned by the
// calling process, which must be a process), with the saved name, type and access unless
// `options` says otherwise. Errors: InvalidArgument for a file that is not a table file, has
// another format version, or holds other key or value types; DataLoss for one cut short,
// damaged, or whose objects disagree with its header (count, repeated keys of a set);
// NotFound / PermissionDenied from opening it; AlreadyExists when the name is taken. A bad file
// is an error, never a crash. Memory: the file's bytes and the decoded objects, until the table
// is filled. K and V must be default-constructible to be loaded.
//
// TabFileInfo (tabfile_info) reads and checks the header alone.
//
// All three block the calling thread on file I/O (in a process: its scheduler too); the
// directory must exist. Thread-safe; two saves to the same path at once leave one of the two
// files whole.
#ifndef ETSMGR_TABLE_TABLE_FILE_H_
#define ETSMGR_TABLE_TABLE_FILE_H_

#include <algorithm>
#include <any>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "etsmgr/table/internal/table_file_format.h"
#include "etsmgr/table/table.h"
#include "etsmgr/table/table_codec.h"
#include "etsmgr/table/table_file_info.h"

namespace etsmgr {

struct LoadOptions {
  std::optional<std::string> name;  // Unset: the saved name ("" makes it unnamed).
  std::optional<Access> access;     // Unset: the saved access.
  Pid heir;
  std::any heir_data;
  bool write_concurrency = true;
};

// tab2file.
template <TableKey K, typename V>
requires TableSerializable<K> && TableSerializable<V> absl::Status SaveTable(
    const Table<K, V>& table, const std::string& path);

// file2tab.
template <TableKey K, typename V>
requires TableSerializable<K> && TableSerializable<V> absl::StatusOr<Table<K, V>> LoadTable(
    const std::string& path, LoadOptions options = {});

// tabfile_info.
absl::StatusOr<TableFileInfo> TabFileInfo(const std::string& path);

// ---------------------------------------------------------------------------------------------
// Implementation.

namespace table_internal {
struct TableAccess {
  template <TableKey K, typename V>
  static TypedCore<K, V>* Core(const Table<K, V>& table) {
    return table.core_.get();
  }
  template <TableKey K, typename V>
  static absl::StatusOr<Table<K, V>> NewFilled(TableOptions options,
                                               std::vector<std::pair<K, V>> entries,
                                               const char* what,
                                               absl::FunctionRef<absl::Status(size_t)> check) {
    return Table<K, V>::NewFilled(std::move(options), std::move(entries), what, check);
  }
};
}  // namespace table_internal

namespace table_file_internal {

// Checks a whole file's bytes and decodes its objects (what LoadTable does before it creates
// the table; the fuzzer drives it directly). `path` is for messages only.
template <typename K, typename V>
absl::StatusOr<std::vector<std::pair<K, V>>> DecodeFile(std::string_view bytes,
                                                        const std::string& path,
                                                        TableFileInfo* info) {
  constexpr const char* kWhat = "file2tab";
  std::string_view body;
  if (absl::Status st = ParseFile(bytes, kWhat, path, info, &body); !st.ok()) return st;
  const std::string key_tag = TableCodec<K>::Tag();
  const std::string value_tag = TableCodec<V>::Tag();
  if (info->key_tag != key_tag || info->value_tag != value_tag) {
    return absl::InvalidArgumentError(
        absl::StrCat(kWhat, "(\"", path, "\"): the file holds <", info->key_tag, ", ",
                     info->value_tag, "> objects, the table is <", key_tag, ", ", value_tag, ">"));
  }
  std::vector<std::pair<K, V>> out;
  // Reserved for what the body's bytes could hold at most and at most 64 MiB of objects; beyond
  // that the vector grows as objects really decode: the header's count is not taken on trust.
  out.reserve(static_cast<size_t>(std::min<uint64_t>(
      {info->objects, body.size(), (uint64_t{64} << 20) / sizeof(std::pair<K, V>)})));
  TableDecoder in(body);
  for (uint64_t i = 0; i < info->objects; ++i) {
    K key{};
    V value{};
    if (!in.Get(&key) || !in.Get(&value)) {
      return absl::DataLossError(absl::StrCat(kWhat, "(\"", path, "\"): object ", i + 1, " of ",
                                              info->objects, " is cut short or malformed"));
    }
    out.emplace_back(std::move(key), std::move(value));
  }
  if (in.remaining() != 0) {
    return absl::DataLossError(absl::StrCat(kWhat, "(\"", path, "\"): ", in.remaining(),
                                            " bytes follow the last of the ", info->objects,
                                            " objects the header counts"));
  }
  return out;
}

// Bytes buffered before a write to the file (the buffer is written between shards, unlocked).
inline constexpr size_t kSaveFlushBytes = size_t{1} << 20;

}  // namespace table_file_internal

template <TableKey K, typename V>
requires TableSerializable<K> && TableSerializable<V> absl::Status SaveTable(
    const Table<K, V>& table, const std::string& path) {
  namespace tf = table_file_internal;
  const table_internal::TypedCore<K, V>* core = table_internal::TableAccess::Core(table);
  if (core == nullptr) return NullTableHandle("tab2file");
  if (absl::Status st = core->Check(TableCore::Op::kRead, "tab2file"); !st.ok()) return st;
  if (core->deleted()) return core->DeletedError("tab2file");
  TableFileInfo info;
  info.name = core->name();
  info.type = core->type();
  info.access = core->access();
  info.key_tag = TableCodec<K>::Tag();
  info.value_tag = TableCodec<V>::Tag();
  const std::string what = absl::StrCat("tab2file of ", core->ToString());
  if (info.key_tag.size() > tf::kMaxHeaderString || info.value_tag.size() > tf::kMaxHeaderString ||
      info.name.size() > tf::kMaxHeaderString) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": the name or a type tag is longer than ",
                                                   tf::kMaxHeaderString, " bytes"));
  }
  tf::AtomicFile file(path, what);
  if (absl::Status st = file.Open(); !st.ok()) return st;
  // The header goes last (at offset 0), once the count and checksum are known.
  const size_t header_bytes = tf::EncodeHeader(info).size();
  if (absl::Status st = file.Append(std::string(header_bytes, '\0')); !st.ok()) return st;
  std::string buffer;
  buffer.reserve(tf::kSaveFlushBytes + 4096);
  TableEncoder out(&buffer);
  uint32_t crc = 0;
  auto flush = [&]() -> absl::Status {
    crc = tf::Crc32c(crc, buffer.data(), buffer.size());
    info.body_bytes += buffer.size();
    absl::Status st = file.Append(buffer);
    buffer.clear();
    return st;
  };
  absl::Status scanned = core->SaveScan(
      [&](const K& key, const V& value) {
        out.Put(key);
        out.Put(value);
        ++info.objects;
      },
      [&]() { return buffer.size() >= tf::kSaveFlushBytes ? flush() : absl::OkStatus(); },
      "tab2file");
  if (!scanned.ok()) return scanned;
  if (absl::Status st = flush(); !st.ok()) return st;
  info.body_crc = crc;
  if (absl::Status st = file.WriteAt(0, tf::EncodeHeader(info)); !st.ok()) return st;
  return file.Commit();
}

namespace table_file_internal {

// LoadTable, once the file is read and its checksums checked: decodes the objects and makes
// the table from them.
template <TableKey K, typename V>
requires TableSerializable<K> && TableSerializable<V> absl::StatusOr<Table<K, V>> LoadFromBytes(
    const std::string& path, std::string bytes, LoadOptions options) {
  TableFileInfo info;
  absl::StatusOr<std::vector<std::pair<K, V>>> objects = DecodeFile<K, V>(bytes, path, &info);
  if (!objects.ok()) return objects.status();
  if constexpr (table_internal::MayHoldNaN<K>()) {
    // SaveTable never writes one (a table refuses them): the file is damaged.
    for (const auto& object : *objects) {
      if (table_internal::HoldsNaN(object.first)) {
        return absl::DataLossError(
            absl::StrCat("file2tab(\"", path,
                         "\"): a key is a NaN, which no table holds (the file is damaged)"));
      }
    }
  }
  bytes.clear();
  bytes.shrink_to_fit();
  TableOptions table_options;
  table_options.type = info.type;
  table_options.access = options.access.value_or(info.access);
  table_options.name = options.name.value_or(info.name);
  table_options.heir = std::move(options.heir);
  table_options.heir_data = std::move(options.heir_data);
  table_options.write_concurrency = options.write_concurrency;
  const uint64_t expected = info.objects;
  const TableType type = info.type;
  return table_internal::TableAccess::NewFilled<K, V>(
      std::move(table_options), std::move(*objects), "file2tab", [&](size_t added) {
        if (added == expected) return absl::OkStatus();
        return absl::DataLossError(absl::StrCat(
            "file2tab(\"", path, "\"): the header counts ", expected, " objects but only ", added,
            " are distinct (a ", ToString(type), " cannot hold them all: the file is damaged)"));
      });
}

}  // namespace table_file_internal

template <TableKey K, typename V>
requires TableSerializable<K> && TableSerializable<V> absl::StatusOr<Table<K, V>> LoadTable(
    const std::string& path, LoadOptions options) {
  absl::StatusOr<std::string> bytes = table_file_internal::ReadFile(path, "file2tab");
  if (!bytes.ok()) return bytes.status();
  // Decoding allocates each object (a string's bytes, a vector's elements) and the table its
  // storage: memory running out there is an error of this load, as for the file's bytes.
  try {
    return table_file_internal::LoadFromBytes<K, V>(path, std::move(*bytes), std::move(options));
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        absl::StrCat("file2tab(\"", path, "\"): no memory for the file's objects"));
  }
}

}  // namespace etsmgr

#endif  // ETSMGR_TABLE_TABLE_FILE_H_
