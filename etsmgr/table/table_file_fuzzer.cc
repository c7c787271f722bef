// libFuzzer target for loading table files (file2tab's checks and decoding): whatever the bytes,
// loading answers a status, never crashes, hangs or reads out of bounds.
//
//   bazel build --config=fuzz //etsmgr/table:table_file_fuzzer
//   bazel-bin/etsmgr/table/table_file_fuzzer -max_total_time=60 /tmp/corpus
//
// The first input byte picks how the rest is used, so the fuzzer reaches past the checksums:
//   even: the rest is a whole file, as is, and then again with its checksums recomputed;
//   odd:  the rest is a body behind a well-formed header (type, count from the input).
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "etsmgr/table/internal/table_file_format.h"
#include "etsmgr/table/table_codec.h"
#include "etsmgr/table/table_file.h"

namespace {

using etsmgr::TableFileInfo;
namespace tf = etsmgr::table_file_internal;

template <typename K, typename V>
void Decode(const std::string& bytes) {
  TableFileInfo info;
  absl::StatusOr<std::vector<std::pair<K, V>>> objects = tf::DecodeFile<K, V>(bytes, "fuzz", &info);
  if (objects.ok() && objects->size() != info.objects) __builtin_trap();
  uint64_t file_bytes = bytes.size();
  TableFileInfo header;
  (void)tf::ParseHeader(bytes, file_bytes, "fuzz", "fuzz", &header);
}

void DecodeAll(const std::string& bytes) {
  Decode<int64_t, std::string>(bytes);
  Decode<std::string, std::vector<std::pair<int32_t, bool>>>(bytes);
  Decode<double, std::vector<std::string>>(bytes);
}

template <typename K, typename V>
void DecodeBody(std::string_view body, uint8_t type, uint16_t objects) {
  TableFileInfo info;
  info.type = static_cast<etsmgr::TableType>(type % 4);
  info.key_tag = etsmgr::TableCodec<K>::Tag();
  info.value_tag = etsmgr::TableCodec<V>::Tag();
  info.objects = objects;
  info.body_bytes = body.size();
  info.body_crc = tf::Crc32c(0, body.data(), body.size());
  Decode<K, V>(tf::EncodeHeader(info) + std::string(body));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  if ((data[0] & 1) == 0) {
    DecodeAll(rest);
    std::string resealed = rest;
    tf::Reseal(&resealed);
    DecodeAll(resealed);
    return 0;
  }
  if (rest.size() < 3) return 0;
  const uint8_t type = static_cast<uint8_t>(rest[0]);
  uint16_t objects;
  std::memcpy(&objects, rest.data() + 1, sizeof objects);
  const std::string_view body = std::string_view(rest).substr(3);
  switch (data[0] >> 1 & 3) {
    case 0:
      DecodeBody<int64_t, std::string>(body, type, objects);
      break;
    case 1:
      DecodeBody<std::string, std::vector<std::pair<int32_t, bool>>>(body, type, objects);
      break;
    case 2:
      DecodeBody<double, std::vector<std::string>>(body, type, objects);
      break;
    default:
      DecodeBody<bool, std::pair<uint8_t, std::string>>(body, type, objects);
      break;
  }
  return 0;
}
