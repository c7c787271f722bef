// The type-erased side of tables: options, info, ownership, access rules, and AnyTable.
//
// A table is owned by a process (its creator). Access is checked on every operation against the
// calling process (CurrentPid(); a plain thread outside any process is a non-owner):
//   private    only the owner reads or writes;
//   protected  anyone reads, only the owner writes (the default, as in ETS);
//   public     anyone reads and writes.
// Ownership changes (Erlang's heir option and give_away/3):
//   - The owner may name an heir (pid + heir_data) at creation or later (SetHeir).
//   - When the owner exits, before its links and monitors fire, a live heir becomes the owner
//     and receives TableTransfer{table, from = old owner, heir_data}; with no live heir the table
//     is deleted. The heir setting stays as it was (ETS keeps it too).
//   - GiveAway(pid, data): only the owner, only to a live process other than itself; the new owner
//     receives TableTransfer{table, from, data}.
// Deleting (owner, or anyone for a public table) frees the storage at once; every handle then
// answers NotFound on every call; the small core goes when the last handle does.
// Rename (a write: the owner, or anyone for a public table) moves a table to another name, or
// names an unnamed one. The manager keeps its entries under the name they were registered with.
// Every live table of a node, named or not, is listed by AllTables / AllTablesInfo (ets:all()
// and ets:i()).
//
// Thread safety: every function may be called from any thread and any process.
#ifndef ETSMGR_TABLE_TABLE_CORE_H_
#define ETSMGR_TABLE_TABLE_CORE_H_

#include <any>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <typeindex>
#include <typeinfo>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "etsmgr/process/internal/process_control.h"
#include "etsmgr/process/node.h"
#include "etsmgr/process/pid.h"
#include "etsmgr/table/shared/shared_options.h"

namespace etsmgr {

enum class TableType : uint8_t { kSet, kOrderedSet, kBag, kDuplicateBag };
enum class Access : uint8_t { kPrivate, kProtected, kPublic };
const char* ToString(TableType type);  // "set", "ordered_set", "bag", "duplicate_bag"
const char* ToString(Access access);   // "private", "protected", "public"

// Where a table with shared storage keeps its data (TableOptions::shared).
struct SharedStorage {
  // The segment's name: 1 to 200 of [A-Za-z0-9._-], not starting with '.'. One live program at a
  // time may hold it (AlreadyExists otherwise).
  std::string segment;
  // directory (empty: /dev/shm; a directory: a file there, which survives a reboot as of the last
  // Sync()), and, when the segment is created, shards and max_bytes; lock_timeout. `mode` is
  // ignored: the segment is opened, or created when there is none.
  SharedMapOptions map;
  // An existing segment whose initialised mark is false (the program filling it died first, see
  // SharedMap::initialised) is emptied before the table is published under its name, so nobody
  // who finds the table by name can write into it and see the write wiped by a later emptying.
  // The manager sets this: it hands such a segment out as created.
  bool empty_if_uninitialised = false;
};

struct TableOptions {
  TableType type = TableType::kSet;
  Access access = Access::kProtected;
  // Non-empty: a named table (ETS named_table), found by FindTable(node, name); names are unique
  // per node while the table lives.
  std::string name;
  Pid heir;  // Null: no heir.
  std::any heir_data;
  // Hash types (set, bag, duplicate_bag): true spreads keys over 16 independently locked shards
  // (allocated on the first write, so empty tables stay small); false keeps one lock.
  // ordered_set always has one reader-writer lock.
  bool write_concurrency = true;
  // Set: the table keeps its data in a named shared-memory segment (or a file) instead of the
  // heap, and the data survives the crash of the whole program (see table.h, "Shared storage").
  std::optional<SharedStorage> shared;
};

// ETS update_counter's extras: {Pos, Incr, Threshold, SetValue} and update_counter/4's Default.
template <typename V>
struct CounterOptions {
  // When set: an increment (incr >= 0) whose result would exceed `threshold`, or a decrement
  // whose result would fall below it, stores `set_value` instead (also on int overflow).
  std::optional<V> threshold;
  V set_value{};
  // When set: a missing key is first inserted with this value (else NotFound).
  std::optional<V> default_value;
};

// A key range of an ordered_set scan (SelectRange): each end open (absent) or bounded, inclusive
// or not.
template <typename K>
struct KeyRange {
  std::optional<K> lo;
  bool lo_inclusive = true;
  std::optional<K> hi;
  bool hi_inclusive = true;

  static KeyRange All() { return {}; }
  static KeyRange Closed(K lo, K hi) { return {std::move(lo), true, std::move(hi), true}; }
  static KeyRange HalfOpen(K lo, K hi) { return {std::move(lo), true, std::move(hi), false}; }
  static KeyRange AtLeast(K lo) { return {std::move(lo), true, std::nullopt, true}; }
  static KeyRange GreaterThan(K lo) { return {std::move(lo), false, std::nullopt, true}; }
  static KeyRange AtMost(K hi) { return {std::nullopt, true, std::move(hi), true}; }
  static KeyRange LessThan(K hi) { return {std::nullopt, true, std::move(hi), false}; }
};

struct TableInfo {
  uint64_t id = 0;
  std::string name;  // Empty for an unnamed table.
  TableType type = TableType::kSet;
  Access access = Access::kProtected;
  Pid owner;
  Pid heir;
  size_t size = 0;
  // Bytes held by the table's own structures (core, shards, hash slots, tree nodes); heap memory
  // owned by keys and values themselves (long strings, vectors) is not counted.
  size_t memory = 0;
  std::string key_type;
  std::string value_type;
  std::string storage;  // "heap", or "shared segment <path>" (TableOptions::shared)
};

class TableCore;

// A type-erased table handle: what TableTransfer carries and what the manager keeps. Copyable;
// every copy refers to the same table. Attach a typed Table<K, V> to use the data.
class AnyTable {
 public:
  AnyTable() = default;
  explicit AnyTable(std::shared_ptr<TableCore> core) : core_(std::move(core)) {}

  bool valid() const { return core_ != nullptr; }
  explicit operator bool() const { return valid(); }
  // False once deleted (a snapshot).
  bool alive() const;
  // True when the table was deleted because its owner exited with no live heir.
  bool lost_with_owner() const;
  uint64_t id() const;
  std::string name() const;      // The current name (Rename changes it).
  std::string ToString() const;  // "table #12 \"counters\"" or "table #12".

  absl::StatusOr<TableInfo> Info() const;  // Any process may ask, whatever the access mode.
  absl::StatusOr<Pid> Owner() const;
  absl::StatusOr<size_t> Size() const;  // A read: subject to the access mode.
  absl::Status Clear() const;           // A write.
  absl::Status GiveAway(const Pid& to, std::any data = {}) const;
  absl::Status SetHeir(const Pid& heir, std::any data = {}) const;
  // ETS rename/2: a write. AlreadyExists when another table has the name, InvalidArgument for an
  // empty name.
  absl::Status Rename(std::string name) const;
  absl::Status Delete() const;

  const std::shared_ptr<TableCore>& core() const { return core_; }
  friend bool operator==(const AnyTable& a, const AnyTable& b) { return a.core_ == b.core_; }
  friend std::ostream& operator<<(std::ostream& os, const AnyTable& t) {
    return os << t.ToString();
  }

 private:
  std::shared_ptr<TableCore> core_;
};

// Sent to a table's new owner: its heir when the owner exited, or the receiver of a GiveAway.
struct TableTransfer {
  AnyTable table;
  Pid from;
  std::any heir_data;
};

class TableKeeper;

// The error of every call on a null (default-constructed) handle, AnyTable or Table<K, V>.
absl::Status NullTableHandle(const char* what);

// The table named `name` on `node`: NotFound when there is none.
absl::StatusOr<AnyTable> FindTable(Node& node, std::string_view name);

// ets:all(): every live table of `node`, named or not, in creation order. One lock held while
// the handles are copied; tables created or deleted meanwhile may or may not be in the list.
std::vector<AnyTable> AllTables(Node& node);
// ets:i(): Info() of every live table of `node` (name, type, access, owner, heir, size, memory,
// key and value types), whatever the access mode. Each table is looked at under its own locks,
// one at a time (a read lock per shard, nothing held across tables), so it is cheap enough for a
// monitoring loop: about as much work per table as Size().
std::vector<TableInfo> AllTablesInfo(Node& node);

namespace table_internal {
class ManagerAccess;
struct TableDirectory;
}  // namespace table_internal

// The shared state of one table. Typed storage derives from it (internal/storage.h); users hold
// AnyTable or Table<K, V>.
class TableCore : private process_internal::ExitResource,
                  public std::enable_shared_from_this<TableCore> {
 public:
  enum class Op : uint8_t { kRead, kWrite };

  ~TableCore() override;

  uint64_t id() const { return id_; }
  std::string name() const;
  TableType type() const { return type_; }
  Access access() const { return access_; }
  bool deleted() const { return deleted_.load(std::memory_order_acquire); }
  // True once the table was deleted because its owner exited with no live heir (a lost table,
  // as opposed to one deleted on purpose).
  bool lost_with_owner() const { return lost_with_owner_.load(std::memory_order_acquire); }
  // Which inlined fast path of Table<K, V> applies: the in-process set and ordered_set cores
  // and shared storage have one; bags answer kNone.
  enum class FastPath : uint8_t { kSet, kOrderedSet, kShared, kNone };
  FastPath fast_path() const { return fast_path_; }
  // True once the table was deleted on purpose (Delete, or released by its keeper), as opposed to
  // lost with its owner: shared storage then removes its segment.
  bool discarded() const { return discarded_.load(std::memory_order_acquire); }
  // The table keeps its data in a shared segment (TableOptions::shared).
  bool storage_is_shared() const { return shared_storage_; }
  // Shared storage: the segment existed before this table was made (a previous program's data).
  virtual bool storage_existed() const { return false; }
  // Shared storage: the segment existed uninitialised and was emptied when the table was made
  // (SharedStorage::empty_if_uninitialised), before anyone could find it.
  virtual bool storage_emptied_at_open() const { return false; }
  // A table whose creation failed after its storage was made: shared storage removes a segment
  // it created (one that existed stays). Heap storage: nothing to do.
  virtual void AbandonNewStorage() {}
  // "heap", or where shared storage keeps the data.
  virtual std::string storage_description() const { return "heap"; }
  // Shared storage: the segment and options it was opened with (what a manager records to find
  // it again by name). Heap storage: none.
  virtual std::optional<SharedStorage> shared_storage() const { return std::nullopt; }
  // Shared storage: Sync (msync + fsync of a file-backed segment) and Check (a walk of the whole
  // segment). A heap table: FailedPrecondition.
  virtual absl::Status SyncStorage(const char* what) const;
  virtual absl::Status CheckStorage(const char* what) const;
  std::type_index key_type() const { return key_type_; }
  std::type_index value_type() const { return value_type_; }
  std::string type_names() const;       // "<K, V>", demangled.
  std::string key_type_name() const;    // K, demangled.
  std::string value_type_name() const;  // V, demangled.
  std::string ToString() const;

  // OK when the calling process may perform `op`; PermissionDenied naming the table, the
  // operation, the caller and the owner otherwise. Inline: it is on every operation's path.
  // The fast answer to Check(): true when allowed (no Status built on the hot path).
  bool Allowed(Op op) const {
    if (access_ == Access::kPublic || (access_ == Access::kProtected && op == Op::kRead)) {
      return true;
    }
    process_internal::ProcessControl* me = process_internal::CurrentProcess();
    return me != nullptr && me->serial() == owner_serial_.load(std::memory_order_acquire);
  }
  absl::Status Check(Op op, const char* what) const {
    return Allowed(op) ? absl::OkStatus() : Denied(op, what);
  }
  // The error for every call on a deleted table.
  absl::Status DeletedError(const char* what) const;

  absl::StatusOr<TableInfo> Info() const;
  Pid owner() const;          // Null once deleted, and while parked by its keeper.
  bool has_keeper() const;    // A TableKeeper keeps it (see table_keeper.h).
  Pid keeper_holder() const;  // That keeper's holder (null: no keeper, or none yet).
  // The heir if one is set, else the holder of the table's keeper (see TableKeeper), else null.
  Pid heir() const;
  absl::Status GiveAway(const Pid& to, std::any data);
  // The owner lets the keeper that keeps the table have it (see TableKeeper): held from now on
  // when the caller is the keeper's holder; otherwise adopted by that holder if it is alive, or
  // parked for the next one. Yields the holder that has it (null: parked). FailedPrecondition
  // when the caller is not the owner or no keeper keeps the table; NotFound once deleted.
  absl::StatusOr<Pid> ReturnToKeeper();
  absl::Status SetHeir(const Pid& heir, std::any data);
  absl::Status Rename(std::string name);
  absl::Status Delete(const char* what = "delete");

  // --- Storage, implemented by the typed core. Each checks deleted() under its own lock.
  virtual absl::StatusOr<size_t> Size(const char* what) const = 0;
  virtual absl::Status Clear(const char* what) = 0;
  virtual size_t StorageMemory() const = 0;  // 0 once deleted.
  // Size and memory (as Info() reports them) in one pass; false once deleted.
  virtual bool Footprint(size_t* size, size_t* memory) const = 0;

  // Creates the core's ownership: the calling process becomes the owner; registers the name.
  // Used by Table<K, V>::New.
  static absl::Status Establish(const std::shared_ptr<TableCore>& core, TableOptions options);

 protected:
  TableCore(const TableOptions& options, const std::type_info& key_type,
            const std::type_info& value_type);
  // Frees every entry and, where possible, the storage itself; called once, after deleted() is
  // set, while other threads may still be calling in (they then find deleted() under the lock).
  virtual void DropStorage() = 0;

  // The typed core's storage root (null until the first write), kept with the hot fields above.
  void* storage() const { return storage_.load(std::memory_order_acquire); }
  // Installs `fresh` unless another thread installed a root first; returns the root in place.
  void* PublishStorage(void* fresh) {
    void* current = nullptr;
    storage_.compare_exchange_strong(current, fresh, std::memory_order_acq_rel,
                                     std::memory_order_acquire);
    return current == nullptr ? fresh : current;
  }

 private:
  // ExitResource (the process package's hook, a private base): the owner exited (runs on its
  // thread, before its links fire).
  void OnOwnerExit(const Pid& owner, const ExitReason& reason) override;
  // Logs that a user's code (a keeper's hook, heir_data's copy) threw; never throws itself.
  void LogHookThrew(const char* what) const noexcept;
  // This table as the process package holds it (shared ownership of the table).
  std::shared_ptr<process_internal::ExitResource> AsResource() {
    return std::shared_ptr<process_internal::ExitResource>(shared_from_this(), this);
  }
  static std::shared_ptr<process_internal::ExitResource> AsResource(
      const std::shared_ptr<TableCore>& core) {
    return std::shared_ptr<process_internal::ExitResource>(core, core.get());
  }

  // The manager's hooks (table_internal::ManagerAccess, internal/manager_access.h).
  friend class table_internal::ManagerAccess;
  // A flag for whoever fills the table first (the manager's "created" answer uses it): false until
  // set. Any thread.
  bool initialised() const { return initialised_.load(std::memory_order_acquire); }
  void SetInitialised(bool done) { initialised_.store(done, std::memory_order_release); }
  // Shared storage: the segment's own "initialised" mark (SharedMap::initialised), which outlives
  // the program: false while the program that created the segment had not finished filling it.
  // Heap storage: true (the in-process flag above is all there is).
  virtual bool storage_initialised() const { return true; }
  virtual void MarkStorageInitialised(bool /*done*/) {}
  // Owner, heir and size in one look, as info() over many tables wants them (the Pids copied
  // through `copier`): a table that never stored an entry answers from one cache line, with no
  // virtual call. `*kept` says whether a TableKeeper keeps it (its heir, when *heir is null).
  // False, and nothing set, once the table is deleted.
  bool Glance(PidCopier& copier, Pid* owner, Pid* heir, size_t* size, bool* kept) const;
  // Starts loading what Glance reads: a caller walking many tables runs a few tables ahead.
  void PrefetchGlance() const {
    __builtin_prefetch(&meta_mu_);
    __builtin_prefetch(&storage_);
  }

  absl::Status Denied(Op op, const char* what) const;
  absl::Status NotOwner(process_internal::ProcessControl* me, const char* what,
                        const char* verb) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(meta_mu_);
  // Makes `owner` the owner (and its serial the one Allowed() checks); returns the previous owner,
  // to release after the lock.
  Pid ReplaceOwner(Pid owner) ABSL_EXCLUSIVE_LOCKS_REQUIRED(meta_mu_);
  // After an owner change other than the keeper's own: whether the keeper has the table now (a
  // process gave it to the keeper's holder). `alive` (optional) is a
  // keeper the caller knows to be alive (the keeper itself), saving a weak_ptr lock.
  void NoteKeptLocked(const TableKeeper* alive = nullptr) ABSL_EXCLUSIVE_LOCKS_REQUIRED(meta_mu_);
  // Whether `keeper` keeps this table: one atomic load, no lock of the weak_ptr (an expired
  // keeper at a reused address never matches).
  bool KeptBy(const TableKeeper* keeper) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(meta_mu_) {
    return keeper != nullptr && keeper_raw_ == keeper && !keeper_.expired();
  }
  // Deletes the table unless someone did already; `unless_kept_since` (a keeps_ count): nor if
  // a keeper took it since (kept now or not), and then deleted on purpose (discarded). False:
  // not deleted here.
  bool DeleteNow(const uint64_t* unless_kept_since = nullptr);
  absl::Status DeleteUnlessKeptAgain(const char* what, uint64_t keeps);
  uint64_t keeps() const {
    ExclusiveLock lock(meta_mu_);
    return keeps_;
  }

  // Read by every operation (type, access, owner serial, deleted, storage) and by info() over
  // many tables (owner, heir, storage): together, right after the 64 bytes of the base classes,
  // so a look at a table costs one cache line, not four.
  // meta_mu_ guards owner_, heir_ and heir_data_; taken before any process's lock. A spin lock:
  // held for a few field updates (user heir data is never destroyed under it), rarely contended.
  mutable SpinLock meta_mu_;
  std::atomic<bool> deleted_{false};
  std::atomic<bool> lost_with_owner_{false};
  std::atomic<bool> initialised_{false};
  bool has_keeper_ ABSL_GUARDED_BY(meta_mu_) = false;  // A keeper was set (what Glance reports).
  uint64_t keeps_ ABSL_GUARDED_BY(meta_mu_) = 0;       // How many times a keeper took it.
  const TableType type_;
  const Access access_;
  const FastPath fast_path_;
  const bool shared_storage_;
  std::atomic<bool> discarded_{false};
  Pid owner_ ABSL_GUARDED_BY(meta_mu_);
  Pid heir_ ABSL_GUARDED_BY(meta_mu_);
  std::atomic<void*> storage_{nullptr};
  std::atomic<uint64_t> owner_serial_{0};

  const uint64_t id_;
  mutable SpinLock name_mu_;  // Rename also holds the directory's lock.
  std::string name_ ABSL_GUARDED_BY(name_mu_);
  // Demangled only when a message or Info() needs the names (demangling costs a microsecond).
  const std::type_info& key_type_;
  const std::type_info& value_type_;
  // The node's directory of tables (names and the list of all tables); set by Establish.
  // dir_prev_, dir_next_ and listed_ are guarded by the directory's lock.
  friend struct table_internal::TableDirectory;
  friend std::vector<AnyTable> AllTables(Node& node);
  std::shared_ptr<table_internal::TableDirectory> directory_;
  TableCore* dir_prev_ = nullptr;
  TableCore* dir_next_ = nullptr;
  bool listed_ = false;
  // Shared and immutable: the lock only passes the pointer around; the user's copy (which may
  // throw, or use this table) runs after it. Null: no data.
  std::shared_ptr<const std::any> heir_data_ ABSL_GUARDED_BY(meta_mu_);
  // The keeper (see TableKeeper) and its tag, guarded by meta_mu_. `kept_`: the keeper has the
  // table (its holder owns it, or it is parked with no owner).
  friend class TableKeeper;
  std::weak_ptr<TableKeeper> keeper_ ABSL_GUARDED_BY(meta_mu_);
  // keeper_'s object, for identity checks.
  const TableKeeper* keeper_raw_ ABSL_GUARDED_BY(meta_mu_) = nullptr;
  std::shared_ptr<const void> keeper_tag_ ABSL_GUARDED_BY(meta_mu_);
  bool kept_ ABSL_GUARDED_BY(meta_mu_) = false;
  // While parked (no process owns it, the keeper has it): its links in the keeper's parked list
  // and the reference that keeps it alive, under the keeper's lock (TableKeeper::mu_).
  TableCore* parked_prev_ = nullptr;
  TableCore* parked_next_ = nullptr;
  std::shared_ptr<TableCore> parked_self_;
};

// Demangled name of a type, for error messages ("long", "std::string").
std::string TypeName(const std::type_info& type);

}  // namespace etsmgr

#endif  // ETSMGR_TABLE_TABLE_CORE_H_
