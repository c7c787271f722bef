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

// Spawns a process that creates a Table<int64_t, int64_t> with `options`, inserts `seed` rows
// (k -> k), hands the table out, and waits for StopOwner (then returns: exit normal).
inline OwnedTable SpawnOwner(Node& node, TableOptions options, int64_t seed = 0) {
  auto promise = std::make_shared<std::promise<AnyTable>>();
  std::future<AnyTable> future = promise->get_future();
  Pid pid = node.Spawn([promise, options, seed](Process& self) -> Task<void> {
                  auto table = Table<int64_t, int64_t>::New(options);
                  EXPECT_TRUE(table.ok()) << table.status();
                  for (int64_t k = 0; k < seed; ++k) EXPECT_TRUE(table->Insert(k, k).ok());
                  promise->set_value(table->any());
                  co_await self.Receive<StopOwner>();
                })
                .value();
  return OwnedTable{pid, future.get()};
}

}  // namespace etsmgr

#endif  // ETSMGR_TABLE_TESTING_TEST_OWNER_H_
