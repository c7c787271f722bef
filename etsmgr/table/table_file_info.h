// TableFileInfo: what a table file's header says, as TabFileInfo (table_file.h) returns it.
#ifndef ETSMGR_TABLE_TABLE_FILE_INFO_H_
#define ETSMGR_TABLE_TABLE_FILE_INFO_H_

#include <cstdint>
#include <string>

#include "etsmgr/table/table_core.h"

namespace etsmgr {

struct TableFileInfo {
  uint32_t version = 0;
  std::string name;  // Empty: the table was unnamed.
  TableType type = TableType::kSet;
  Access access = Access::kProtected;
  std::string key_tag;  // TableCodec<K>::Tag() of the saved table's key type.
  std::string value_tag;
  uint64_t objects = 0;
  uint64_t body_bytes = 0;
  uint32_t body_crc = 0;
  uint64_t file_bytes = 0;
};

}  // namespace etsmgr

#endif  // ETSMGR_TABLE_TABLE_FILE_INFO_H_
