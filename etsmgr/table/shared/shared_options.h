// Options and information of a shared map (see shared_map.h for the map itself).
#ifndef ETSMGR_TABLE_SHARED_SHARED_OPTIONS_H_
#define ETSMGR_TABLE_SHARED_SHARED_OPTIONS_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/time/time.h"

namespace etsmgr {

// The table kind a segment holds (stored in its header). Only `set` (one value per key) exists.
enum class SharedKind : uint32_t { kSet = 1 };

// What a SharedMap::Mutate decision does with the key: leave it, put the new value, erase it.
enum class SharedMapAction { kKeep, kPut, kErase };

struct SharedMapOptions {
  enum class Mode : uint8_t {
    kOpenOrCreate,  // open the segment, or create it when there is none
    kCreate,        // create; AlreadyExists when the name is taken
    kOpen,          // open; NotFound when there is none
  };
  Mode mode = Mode::kOpenOrCreate;
  // Empty: a POSIX shared-memory object, /dev/shm/<name> (survives the program, not a reboot).
  // Otherwise the file <directory>/<name>: survives a reboot too, as of the last Sync().
  std::string directory;
  // At creation only (an open takes them from the segment): the number of independently locked
  // shards (a power of two, 1..1024), and the size the segment may grow to (each open reserves
  // that much address space, no memory; 1 MiB..1 TiB).
  uint32_t shards = 64;
  uint64_t max_bytes = uint64_t{16} << 30;
  // At creation only: the new segment starts with its initialised mark false
  // (SharedMap::initialised), in the same step as its creation, so a program killed before it
  // filled the segment and called SetInitialised(true) leaves a segment that says so.
  bool create_uninitialised = false;
  // How long an operation waits for a lock held by a live process before DeadlineExceeded (a
  // lock held by a dead process is repaired at once, whatever this says).
  absl::Duration lock_timeout = absl::Seconds(5);
};

// UpdateCounter's extras, as ETS update_counter/4 (and the in-process Table's CounterOptions).
template <typename V>
struct SharedCounterOptions {
  // When set: an increment (incr >= 0) whose result would exceed `threshold`, or a decrement whose
  // result would fall below it, stores `set_value` instead (also on overflow).
  std::optional<V> threshold;
  V set_value{};
  // When set: a missing key is first inserted with this value (else NotFound).
  std::optional<V> default_value;
};

// What an open map knows about its segment. Counters are since the segment was created, summed
// over every process that used it.
struct SharedMapInfo {
  std::string name;
  std::string path;  // /dev/shm/<name> or <directory>/<name>
  bool file_backed = false;
  bool created = false;  // this open created the segment
  uint32_t shards = 0;
  uint64_t file_bytes = 0;       // the segment's size
  uint64_t allocated_bytes = 0;  // header, shard headers and regions ever carved out
  uint64_t max_bytes = 0;
  uint64_t opens = 0;
  uint64_t slot_rollbacks = 0;      // a killed writer's half-done slot write undone
  uint64_t resize_rollbacks = 0;    // a killed writer's unpublished region freed
  uint64_t resize_completions = 0;  // a killed writer's published region kept, the old freed
  uint64_t clears_completed = 0;    // a killed Clear() finished on a shard
  uint64_t log_rollbacks = 0;       // a killed allocator transaction undone
  uint64_t regions_reclaimed = 0;   // regions freed by repairs (either of the resize cases)
};

}  // namespace etsmgr

#endif  // ETSMGR_TABLE_SHARED_SHARED_OPTIONS_H_
