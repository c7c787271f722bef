// Test helper: a process that creates a table and keeps it alive until told to stop.
#ifndef ETSMGR_TABLE_TESTING_TEST_OWNER_H_
#define ETSMGR_TABLE_TESTING_TEST_OWNER_H_

#include <cstdint>
#include <future>
#include <memory>
#include <utility>

#include "etsmgr/process/node.h"
#include "etsmgr/table/table.h"
#include "gtest/gtest.h"

namespace etsmgr {

struct StopOwner {};

struct OwnedTable {
  Pid owner;
  AnyTable table;
};

// Spawns a process that creates a T (a Table<K, V>) with `options`, calls `fill(table)`, hands
// the table out, and waits for StopOwner (then returns: exit normal).
template <typename T, typename Fill>
OwnedTable SpawnOwnerOf(Node& node, TableOptions options, Fill fill) {
  auto promise = std::make_shared<std::promise<AnyTable>>();
  std::future<AnyTable> future = promise->get_future();
  Pid pid = node.Spawn([promise, options, fill](Process& self) -> Task<void> {
                  absl::StatusOr<T> table = T::New(options);
                  EXPECT_TRUE(table.ok()) << table.status();
                  fill(*table);
                  promise->set_value(table->any());
                  co_await self.Receive<StopOwner>();
                })
                .value();
  return OwnedTable{pid, future.get()};
}

// A Table<int64_t, int64_t> with `seed` rows (k -> k).
inline OwnedTable SpawnOwner(Node& node, TableOptions options, int64_t seed = 0) {
  return SpawnOwnerOf<Table<int64_t, int64_t>>(node, std::move(options),
                                               [seed](Table<int64_t, int64_t>& table) {
                                                 for (int64_t k = 0; k < seed; ++k) {
                                                   EXPECT_TRUE(table.Insert(k, k).ok());
                                                 }
                                               });
}

}  // namespace etsmgr

#endif  // ETSMGR_TABLE_TESTING_TEST_OWNER_H_
