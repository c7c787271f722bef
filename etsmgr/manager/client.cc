// The client API: every table call runs in the calling process, under the instance's lock, with
// no suspension point (so the caller cannot die half-way and nothing can time out half-way).
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <typeindex>
#include <utility>
#include <vector>

#include "absl/container/inlined_vector.h"
#include "absl/strings/str_cat.h"
#include "etsmgr/base/error_atom.h"
#include "etsmgr/base/log.h"
#include "etsmgr/base/status_macros.h"
#include "etsmgr/manager/internal/instance.h"
#include "etsmgr/manager/manager.h"
#include "etsmgr/process/internal/process_control.h"
#include "etsmgr/table/internal/manager_access.h"

namespace etsmgr {

using manager_internal::Action;
using manager_internal::Decision;
using manager_internal::Entry;
using manager_internal::Instance;
using manager_internal::ManagedName;
using manager_internal::TableView;

namespace {

// `st`: null, or an instance whose lock the caller holds.
absl::Status NotRunning(const std::string& what, const Instance* st, const std::string& inst) {
  const char* state = "not_started";
  if (st != nullptr) {
    st->mu.AssertHeld();
    state = ToString(st->State());
  }
  return absl::UnavailableError(absl::StrCat(what, ": the manager ", InstToName("etsmgr_srv", inst),
                                             " is not running (instance ", state, ")"));
}

std::string Describe(const char* op, const std::string& name) {
  return absl::StrCat(op, " \"", name, "\"");
}

// Records a shared table in the instance's directory of shared tables, across programs: a
// restarted program's manager lists it, and can delete it. A failure is a warning (returned, to be
// logged after the lock); the table is managed all the same (it is reopened by its segment).
std::string BindShared(Instance& st, const std::string& name, const SharedStorage& storage,
                       const std::string& key_type, const std::string& value_type)
    ABSL_EXCLUSIVE_LOCKS_REQUIRED(st.mu) {
  absl::Status bound = st.shared_dir->Bind(name, storage, key_type, value_type);
  if (bound.ok()) return std::string();
  return absl::StrCat("etsmgr ", st.inst, ": \"", name, "\": not recorded in ",
                      st.shared_dir->segment(), ": ", bound.ToString());
}

// add_table: the caller filled the table. Both marks say so: the in-process one (a later new_table
// of the name must not initialise it again) and, for shared storage, the segment's own (a table
// left not initialised by a failed init or a killed client, then added and filled, must not be
// emptied by the next program's new_table).
void MarkFilled(TableCore& table) {
  table_internal::ManagerAccess::MarkInitialised(table);
  table_internal::ManagerAccess::SetStorageInitialised(table, true);
}

// One table call by the calling process, under the instance's lock: the manager must be running,
// and the caller is linked to it before it becomes a client. What must happen after the lock
// (deleting or releasing a table, logging) is collected in `after`.
// Set while this thread runs a table call (under the instance's lock, which is not recursive).
thread_local bool t_in_call = false;

// Whether `self` may make a table call now. The calls run in the calling process: `self` must be
// it (another process's Process& would make the table's owner and the registered client two
// different processes, and suspend a process that is not running): InvalidArgument otherwise,
// and outside any process. And not from inside another table call (a table factory's):
// FailedPrecondition.
absl::Status CheckCall(const Process& self, const char* op, const std::string& name) {
  const process_internal::ProcessControl* running = process_internal::CurrentProcess();
  if (running == nullptr || running->self() != self.self()) {
    return absl::InvalidArgumentError(
        absl::StrCat(Describe(op, name), ": called with the Process of ", self.self().ToString(),
                     running != nullptr ? absl::StrCat(" from process ", running->self().ToString())
                                        : std::string(" from outside any process"),
                     " (pass the calling process's own Process&)"));
  }
  if (t_in_call) {
    return absl::FailedPreconditionError(
        absl::StrCat(Describe(op, name),
                     ": called from inside another table call (a table factory must not "
                     "call the manager)"));
  }
  return absl::OkStatus();
}

class ClientCall {
 public:
  ClientCall(Process& self, std::shared_ptr<Instance> st)
      : self_(self), me_(self.self()), st_(std::move(st)), lock_(st_->mu) {
    t_in_call = true;
  }

  ~ClientCall() {
    t_in_call = false;
    st_->mu.AssertHeld();  // lock_ holds it from the constructor until below.
    // A call that left the caller with no table of the instance unlinks it from the manager again.
    if (linked_now_ && !registered_ && !st_->dir.HasClient(me_)) self_.Unlink(st_->manager);
    lock_.unlock();
    for (const AnyTable& t : release_) st_->keeper->Release(t).IgnoreError();
    try {
      for (const std::string& line : warnings_) Logf(LogLevel::kWarning, "%s", line);
    } catch (...) {  // No memory for a line, or a sink that throws: the call is done regardless.
    }
  }

  // A warning, logged after the lock (a sink that blocks, say on a full stderr pipe, would stall
  // every caller and every exiting client of the instance; one that reads the instance's state
  // would deadlock on the lock). Nothing when `line` is empty.
  void Warn(std::string line) {
    if (!line.empty()) warnings_.push_back(std::move(line));
  }

  // Unavailable unless the manager runs and the instance is not being discarded. Links the
  // caller to it if it is not a client yet.
  // A discard marks the instance under this lock, then releases what it took and forgets the
  // instance; its manager may still be alive meanwhile (its supervisor is dead, its parent's exit
  // signal not yet handled). A call let in then would be answered OK by an instance that no longer
  // exists: its table kept by a keeper about to be freed, in no directory a restart adopts.
  absl::Status Enter(const char* op, const std::string& name) {
    st_->mu.AssertHeld();
    if (!st_->manager.alive() || st_->discarded.load(std::memory_order_acquire)) {
      return NotRunning(Describe(op, name), st_.get(), st_->inst);
    }
    if (!st_->dir.HasClient(me_)) {
      // Linked first, so a failed link (the manager just died) leaves nothing to undo. A link
      // the caller had made itself is its own: never undone by a call that fails.
      const bool was_linked = self_.LinkedTo(st_->manager);
      if (!self_.TryLink(st_->manager)) {
        return NotRunning(Describe(op, name), st_.get(), st_->inst);
      }
      linked_now_ = !was_linked;
    }
    return absl::OkStatus();
  }

  // The instance, locked for the life of this call (callers assert it: st().mu.AssertHeld()).
  Instance& st() { return *st_; }
  const Pid& me() const { return me_; }

  // The caller becomes the entry's client.
  void SetClient(Entry& entry) {
    st_->mu.AssertHeld();
    Pid dropped;
    bool first = st_->dir.SetClient(entry, me_, &dropped);
    Settle(first, dropped);
  }
  void Add(const std::string& name, Entry entry) {
    st_->mu.AssertHeld();
    entry.client = me_;
    Settle(st_->dir.Add(name, std::move(entry)), Pid());
  }
  // Removes the name's entry, and the table from the instance after the lock.
  void Erase(const std::string& name, bool release) {
    st_->mu.AssertHeld();
    Pid dropped;
    Entry gone = st_->dir.Erase(name, &dropped);
    Settle(false, dropped);
    if (release) release_.push_back(std::move(gone.table));
  }

 private:
  void Settle(bool first, const Pid& dropped) {
    st_->mu.AssertHeld();
    // A client left with no table of the instance is unlinked from the manager.
    if (dropped.valid()) {
      process_internal::ProcessAccess::Unlink(dropped, st_->manager);
      if (dropped == me_) unlinked_me_ = true;
    }
    if (first) {
      registered_ = true;
      manager_internal::WatchClientLocked(st_, self_);
      // Linked by Enter, unless this call unlinked it meanwhile (its own dead entry replaced).
      if (!linked_now_ || unlinked_me_) self_.TryLink(st_->manager);
    }
  }

  Process& self_;
  const Pid me_;
  std::shared_ptr<Instance> st_;
  std::unique_lock<AdaptiveMutex> lock_;
  bool linked_now_ = false;
  bool unlinked_me_ = false;
  bool registered_ = false;  // The caller got its first table of the instance in this call.
  absl::InlinedVector<AnyTable, 1> release_;
  std::vector<std::string> warnings_;
};

// Claims a table the instance holds for the caller (hand-back).
absl::Status Claim(ClientCall& call, const char* op, const std::string& name, Entry& entry) {
  Instance& st = call.st();
  st.mu.AssertHeld();
  absl::Status given = st.keeper->HandOver(entry.table, call.me());
  if (given.code() == absl::StatusCode::kFailedPrecondition) {
    // Not the caller's to have now: its exiting owner's heir inherits it (or another live process
    // owns it). The heir itself asks again (Unavailable: the table is on its way to it); anyone
    // else is told table_exists, as for any table a live process holds.
    if (entry.table.core()->heir() == call.me()) {
      return Annotate(absl::UnavailableError(absl::StrCat(
                          given.message(), "; it is on its way to the caller: ask again")),
                      op, name);
    }
    return Annotate(WithAtom(absl::AlreadyExistsError(given.message()), Atom::kTableExists), op,
                    name);
  }
  if (!given.ok()) return Annotate(given, op, name);
  call.SetClient(entry);
  ++st.dir.counters.hand_backs;
  return absl::OkStatus();
}

// A factory's table: valid, alive, the caller's, of the types asked for, kept by nobody.
absl::Status CheckMade(const AnyTable& table, const manager_internal::TableFactory& factory,
                       const Pid& caller, const std::string&) {
  if (!table.valid()) return absl::InvalidArgumentError("returned a null table");
  absl::StatusOr<Pid> owner = table.Owner();
  if (!owner.ok() || *owner != caller) {
    return absl::InvalidArgumentError("returned a table the caller does not own");
  }
  const TableCore& core = *table.core();
  if (core.key_type() != std::type_index(*factory.key_type) ||
      core.value_type() != std::type_index(*factory.value_type)) {
    return absl::InvalidArgumentError(
        absl::StrCat("returned a table of ", core.type_names(), ", not of the types asked for"));
  }
  return absl::OkStatus();
}

void LogHandBack(const std::string& inst, const std::string& name, const Pid& client) {
  if (!LogEnabled(LogLevel::kDebug)) return;
  Logf(LogLevel::kDebug, "etsmgr %s: table %s handed back to %s", inst, name, client.ToString());
}

// Room for `n` more elements of `v`, with its pages faulted in by one system call where the
// kernel can (MADV_POPULATE_WRITE, Linux 5.14): an info() reply over 100k tables is megabytes of
// fresh memory, and taking its page faults one by one is a large share of the call (figures:
// bench/results/design-measurements.md).
template <typename T>
void ReserveFaultedIn(std::vector<T>& v, size_t n) {
  v.reserve(v.size() + n);
#ifdef MADV_POPULATE_WRITE
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t begin =
      (reinterpret_cast<uintptr_t>(v.data() + v.size()) + page - 1) & ~(page - 1);
  const uintptr_t end = reinterpret_cast<uintptr_t>(v.data() + v.capacity()) & ~(page - 1);
  // Best effort: an older kernel answers EINVAL and the pages fault in as they are written.
  if (end > begin) (void)madvise(reinterpret_cast<void*>(begin), end - begin, MADV_POPULATE_WRITE);
#endif
}

}  // namespace

Etsmgr::Etsmgr(std::string inst) : inst_(std::move(inst)) {}

bool Etsmgr::IsManager(Node& node, const Pid& pid) const {
  std::shared_ptr<Instance> st = manager_internal::FindInstance(node, inst_);
  if (st == nullptr || !pid.valid()) return false;
  ExclusiveLock lock(st->mu);
  return std::find(st->manager_serials.begin(), st->manager_serials.end(), pid.serial()) !=
         st->manager_serials.end();
}

// True when `path` does not exist but its directory does: a first start. A missing directory
// (an unmounted volume, a typo) is an error for the caller to see, not an empty table.
static bool NoFileInExistingDirectory(const std::string& path) {
  struct stat st;
  if (lstat(path.c_str(), &st) == 0 || errno != ENOENT) return false;
  const size_t slash = path.rfind('/');
  const std::string dir =
      slash == std::string::npos ? "." : path.substr(0, std::max<size_t>(slash, 1));
  return stat(dir.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

Task<absl::StatusOr<ManagedTableRef>> Etsmgr::NewTableErased(Process& self, std::string name,
                                                             TableOptions options,
                                                             manager_internal::TableFactory factory,
                                                             absl::Duration) const {
  if (name.empty()) co_return absl::InvalidArgumentError("new_table: empty table name");
  if (factory.create == nullptr || factory.key_type == nullptr || factory.value_type == nullptr) {
    co_return absl::InvalidArgumentError(
        absl::StrCat(Describe("new_table", name), ": the table factory has no create function"));
  }
  if (factory.load != nullptr && options.shared.has_value()) {
    // A loaded table lives on the heap: the segment's data (newer than any file after a crash)
    // would be passed over, and writes made after the load lost at the next kill of the program.
    co_return absl::InvalidArgumentError(
        absl::StrCat(Describe("new_table", name),
                     ": a table from a file (NewTableFromFile) cannot have shared "
                     "storage (options.shared); a shared table outlives the "
                     "program in its segment: create it with NewTable"));
  }
  if (absl::Status allowed = CheckCall(self, "new_table", name); !allowed.ok()) co_return allowed;
  std::shared_ptr<Instance> st = manager_internal::FindInstance(self.node(), inst_);
  if (st == nullptr) co_return NotRunning(Describe("new_table", name), nullptr, inst_);
  absl::StatusOr<ManagedTableRef> result;
  bool handed_back = false;
  {
    ClientCall call(self, st);
    st->mu.AssertHeld();  // Held by `call` for this scope.
    ETSMGR_CO_RETURN_IF_ERROR(call.Enter("new_table", name));
    Entry* entry = st->dir.Find(name);
    TableView view = st->View(entry != nullptr ? entry->table : AnyTable());
    Decision d = manager_internal::DecideNewTable(name, *factory.key_type, *factory.value_type,
                                                  entry, view, call.me());
    switch (d.action) {
      case Action::kConflict:
        result = d.status;
        break;
      case Action::kConfirm:
        call.SetClient(*entry);
        result = ManagedTableRef{st->manager, entry->table, !view.initialised};
        break;
      case Action::kClaim: {
        absl::Status claimed = Claim(call, "new_table", name, *entry);
        if (!claimed.ok()) {
          result = claimed;
          break;
        }
        handed_back = true;
        // Still "created" if the client that got it new died before it could initialise it.
        result = ManagedTableRef{st->manager, entry->table, !view.initialised};
        break;
      }
      case Action::kCreate: {
        if (entry != nullptr) call.Erase(name, /*release=*/false);  // Its table was deleted.
        options.heir = Pid();                                       // The instance is the heir.
        options.heir_data.reset();
        bool loaded = false;
        absl::StatusOr<AnyTable> table = absl::NotFoundError("");
        if (factory.load != nullptr && !factory.load_path.empty()) {
          table = factory.load(factory.load_path, options);
          // No file: a first start; the table starts empty. Any other failure is the caller's
          // to see (a damaged file is never silently replaced by an empty table).
          loaded = table.ok();
          if (!table.ok() && table.status().code() == absl::StatusCode::kNotFound &&
              NoFileInExistingDirectory(factory.load_path)) {
            table = absl::NotFoundError("");
          } else if (!table.ok()) {
            result = Annotate(table.status(), "new_table", name);
            break;
          }
        }
        const std::optional<SharedStorage> shared = options.shared;
        if (shared && name.size() > kMaxSharedTableName) {
          result = absl::InvalidArgumentError(absl::StrCat(Describe("new_table", name),
                                                           ": a shared table's name has at most ",
                                                           kMaxSharedTableName, " bytes"));
          break;
        }
        // A segment made here says "not initialised" from its first byte on, until the client
        // has initialised it (below for a plain NewTable; after its init for ManagedTable::Open):
        // a program killed between the two leaves a segment the next one initialises again.
        // One a dead program left uninitialised is emptied before the table is published under
        // its name (a write through the name in between would be wiped by a later emptying).
        if (shared) {
          options.shared->map.create_uninitialised = true;
          options.shared->empty_if_uninitialised = true;
        }
        if (!loaded) table = factory.create(std::move(options));
        if (!table.ok()) {
          result = Annotate(table.status(), "new_table", name);
          break;
        }
        // What a factory of the caller's own made must be a new table of the caller's, of the
        // types asked for (NewTable<K, V>'s own factory makes nothing else).
        absl::Status made = factory.create == factory.trusted
                                ? absl::OkStatus()
                                : CheckMade(*table, factory, call.me(), name);
        // A segment a dead program left uninitialised (or deleted) is handed out as created
        // below: emptied first, before the instance takes it (Table::New did, before publishing
        // its name; this is for a factory of the caller's that did not pass the option on). One
        // that cannot be emptied goes (its data was never initialised, or was deleted): its
        // claim must not stay with an unmanaged table.
        if (made.ok() && !loaded && table->core()->storage_existed() &&
            !table->core()->storage_emptied_at_open() &&
            !table_internal::ManagerAccess::StorageInitialised(*table->core())) {
          if (absl::Status cleared = table->core()->Clear("new_table"); !cleared.ok()) {
            (void)table->core()->Delete("new_table");
            result = Annotate(cleared, "new_table", name);
            break;
          }
        }
        ManagedName managed = std::make_shared<const std::string>(name);
        if (made.ok()) made = st->keeper->Keep(*table, managed);
        if (!made.ok()) {
          result = Annotate(
              absl::InvalidArgumentError(absl::StrCat("the table factory ", made.message())),
              "new_table", name);
          break;
        }
        call.Add(name, Entry{*table, Pid(), std::move(managed)});
        ++st->dir.counters.tables_created;
        if (shared) {
          call.Warn(BindShared(*st, name, *shared, TypeName(*factory.key_type),
                               TypeName(*factory.value_type)));
        }
        if (loaded) {
          // Its data came from the file: initialised already.
          table_internal::ManagerAccess::MarkInitialised(*table->core());
          result = ManagedTableRef{st->manager, *std::move(table), false, true};
        } else if (table->core()->storage_existed() &&
                   table_internal::ManagerAccess::StorageInitialised(*table->core())) {
          // A shared segment a previous program left (it died holding it): its data is there,
          // mapped, not copied; initialised already.
          table_internal::ManagerAccess::MarkInitialised(*table->core());
          result = ManagedTableRef{st->manager, *std::move(table), false};
        } else {
          if (table->core()->storage_existed()) {
            // The program that created the segment died before its client had initialised it
            // (or after del_table deleted it while another process still owned it): "created"
            // again, and empty, as a created table is: this client initialises it from nothing,
            // neither over half an initialisation nor over a deleted table's data.
            call.Warn(absl::StrCat(
                "etsmgr ", inst_, ": new_table \"", name,
                "\": ", table->core()->storage_description(),
                " was never initialised (or was deleted; its program died first): emptied and "
                "handed out as created"));
          }
          result = ManagedTableRef{st->manager, *std::move(table), true};
        }
        break;
      }
    }
  }
  if (handed_back) LogHandBack(inst_, name, self.self());
  // From here to the caller's code there is no suspension point, so the caller cannot be killed
  // between learning "created" and initialising: mark it now. A caller killed before this point
  // leaves the table uninitialised, and the next claimant is told "created" again.
  if (result.ok() && result->created)
    table_internal::ManagerAccess::MarkInitialised(*result->table.core());
  // A call does not suspend, but it costs a reduction: a loop of calls yields like any other.
  // (No suspension point between "created" and the caller's code otherwise: a yield here comes
  // before the caller learns "created", so a kill at it leaves the table uninitialised.)
  if (Scheduler::Current()->Charge()) {
    if (result.ok() && result->created)
      table_internal::ManagerAccess::ClearInitialised(*result->table.core());
    co_await self.Yield();
    if (result.ok() && result->created)
      table_internal::ManagerAccess::MarkInitialised(*result->table.core());
  }
  // Shared storage: the segment's own mark, for the next program. ManagedTable::Open clears it
  // after its init function returned OK; a plain NewTable caller is taken to have initialised
  // the table once it has it (as the in-process flag above).
  if (result.ok() && result->created) {
    table_internal::ManagerAccess::SetStorageInitialised(*result->table.core(),
                                                         !factory.caller_marks_initialised);
  }
  co_return result;
}

Task<absl::StatusOr<ManagedTableRef>> Etsmgr::AddTable(Process& self, std::string name,
                                                       AnyTable table, absl::Duration) const {
  if (name.empty()) co_return absl::InvalidArgumentError("add_table: empty table name");
  if (!table.valid()) {
    co_return absl::InvalidArgumentError(Describe("add_table", name) + ": null table handle");
  }
  if (absl::Status allowed = CheckCall(self, "add_table", name); !allowed.ok()) co_return allowed;
  std::shared_ptr<Instance> st = manager_internal::FindInstance(self.node(), inst_);
  if (st == nullptr) co_return NotRunning(Describe("add_table", name), nullptr, inst_);
  absl::StatusOr<ManagedTableRef> result;
  bool handed_back = false;
  {
    ClientCall call(self, st);
    st->mu.AssertHeld();  // Held by `call` for this scope.
    ETSMGR_CO_RETURN_IF_ERROR(call.Enter("add_table", name));
    Entry* entry = st->dir.Find(name);
    TableView entry_view = st->View(entry != nullptr ? entry->table : AnyTable());
    TableView table_view = st->View(table);
    std::shared_ptr<const void> tag = st->keeper->TagOf(table);
    const auto* managed_as = static_cast<const std::string*>(tag.get());
    Decision d = manager_internal::DecideAddTable(name, entry, entry_view, table, table_view,
                                                  managed_as, call.me());
    switch (d.action) {
      case Action::kConflict:
        result = d.status;
        break;
      case Action::kConfirm:
        call.SetClient(*entry);
        MarkFilled(*table.core());
        result = ManagedTableRef{st->manager, table, false};
        break;
      case Action::kClaim: {
        absl::Status claimed = Claim(call, "add_table", name, *entry);
        if (!claimed.ok()) {
          result = claimed;
          break;
        }
        handed_back = true;
        MarkFilled(*table.core());
        result = ManagedTableRef{st->manager, table, false};
        break;
      }
      case Action::kCreate: {
        if (table.core()->storage_is_shared() && name.size() > kMaxSharedTableName) {
          result = absl::InvalidArgumentError(absl::StrCat(Describe("add_table", name),
                                                           ": a shared table's name has at most ",
                                                           kMaxSharedTableName, " bytes"));
          break;
        }
        ManagedName managed = std::make_shared<const std::string>(name);
        absl::Status kept = st->keeper->Keep(table, managed);
        if (!kept.ok()) {  // Another instance manages it.
          result = Annotate(WithAtom(absl::AlreadyExistsError(kept.message()), Atom::kTableExists),
                            "add_table", name);
          break;
        }
        if (entry != nullptr) call.Erase(name, /*release=*/false);  // Its table was deleted.
        // (A del_table before may have marked its segment not initialised.)
        MarkFilled(*table.core());
        call.Add(name, Entry{table, Pid(), std::move(managed)});
        if (std::optional<SharedStorage> shared = table.core()->shared_storage()) {
          call.Warn(BindShared(*st, name, *shared, table.core()->key_type_name(),
                               table.core()->value_type_name()));
        }
        result = ManagedTableRef{st->manager, table, false};
        break;
      }
    }
  }
  if (handed_back) LogHandBack(inst_, name, self.self());
  if (Scheduler::Current()->Charge()) co_await self.Yield();
  co_return result;
}

Task<absl::Status> Etsmgr::DelTable(Process& self, std::string name, absl::Duration) const {
  if (name.empty()) co_return absl::InvalidArgumentError("del_table: empty table name");
  if (absl::Status allowed = CheckCall(self, "del_table", name); !allowed.ok()) co_return allowed;
  std::shared_ptr<Instance> st = manager_internal::FindInstance(self.node(), inst_);
  if (st == nullptr) co_return NotRunning(Describe("del_table", name), nullptr, inst_);
  AnyTable shared;            // A table with shared storage, deleted after the instance's lock.
  uint64_t shared_keeps = 0;  // Its keepers so far: one taking it after the release keeps it.
  absl::Status unknown;       // NotFound for a name the instance does not manage here.
  {
    ClientCall call(self, st);  // The instance's lock, until the end of this scope.
    st->mu.AssertHeld();
    if (!st->manager.alive()) co_return NotRunning(Describe("del_table", name), st.get(), inst_);
    Entry* entry = st->dir.Find(name);
    absl::Status allowed = manager_internal::DecideDelTable(
        name, entry, st->View(entry != nullptr ? entry->table : AnyTable()), call.me());
    if (entry == nullptr) unknown = allowed;
    if (!allowed.ok() && entry != nullptr) co_return allowed;
    // After the lock: one the instance holds is deleted; one a process owns stays with it.
    if (entry != nullptr && entry->table.core()->storage_is_shared()) {
      shared = entry->table;
      // Marked before the release: once released, its owner's exit may delete it at any moment
      // (on another scheduler), and a table deleted unmarked keeps its segment for a restarted
      // program, for a later new_table to bring back what was deleted. Marked, the segment goes
      // with the table whenever it goes; its owner, if another process, keeps it while it lives.
      table_internal::ManagerAccess::MarkDiscarded(*shared.core());
      // And its segment is no longer initialised: a program killed before the table goes (its
      // owner alive) leaves a segment the next new_table empties instead of bringing back.
      table_internal::ManagerAccess::SetStorageInitialised(*shared.core(), false);
      // The record too, under the lock: after it, a new_table or add_table of the name may have
      // recorded its own table.
      if (std::optional<SharedStorage> storage = shared.core()->shared_storage()) {
        (void)st->shared_dir->Unbind(name, *storage);  // Unless it names another's table now.
      }
      shared_keeps = table_internal::ManagerAccess::Keeps(*shared.core());
    }
    if (entry != nullptr) call.Erase(name, /*release=*/true);
  }
  if (!unknown.ok()) {
    // Perhaps a shared table a program that died left behind: the directory of shared tables
    // knows it; removed unless a live program holds it.
    absl::StatusOr<std::optional<SharedTableRecord>> record = st->shared_dir->Find(name);
    if (!record.ok() || !*record) co_return unknown;
    co_return st->shared_dir->RemoveUnheld(name);
  }
  // A shared table's object is removed too: its segment would otherwise outlive the program
  // with nobody to claim it (one the instance held went with the release above).
  if (shared.valid() && !shared.core()->deleted()) {
    if (manager_internal::DelTableHook hook =
            manager_internal::g_del_table_hook.load(std::memory_order_acquire)) {
      hook(name);
    }
    // Unless its owner registered it anew since the release (add_table on this instance or
    // another): deleting that would lose a table whose add_table was answered OK.
    absl::Status deleted = table_internal::ManagerAccess::DeleteUnlessKeptAgain(
        *shared.core(), "del_table", shared_keeps);
    if (!deleted.ok()) {
      Logf(LogLevel::kNotice,
           "etsmgr %s: del_table \"%s\": the shared table stays with its owner (%s)", inst_, name,
           deleted.ToString());
    }
  }
  if (Scheduler::Current()->Charge()) co_await self.Yield();
  co_return absl::OkStatus();
}

Task<absl::StatusOr<ManagerInfo>> Etsmgr::Info(Process& self, absl::Duration) const {
  if (absl::Status allowed = CheckCall(self, "info", ""); !allowed.ok()) co_return allowed;
  std::shared_ptr<Instance> st = manager_internal::FindInstance(self.node(), inst_);
  if (st == nullptr) co_return NotRunning("info", nullptr, inst_);
  ManagerInfo info;
  size_t expected;
  {
    ExclusiveLock lock(st->mu);
    expected = st->dir.size();
  }
  // The reply's pages are faulted in before the lock (a few more rows than were there).
  ReserveFaultedIn(info.tables, expected + expected / 8 + 16);
  // The tables, read after the lock. Reused by every info() on this thread (a monitoring loop
  // keeps its memory warm); there is no suspension point while it is in use.
  thread_local std::vector<TableCore*> t_cores;
  std::vector<TableCore*>& cores = t_cores;
  cores.clear();
  cores.reserve(expected + expected / 8 + 16);
  PidCopier pids;  // 300k Pid copies of a few processes (~1,000 clients and the vault).
  uint64_t snapshot = 0;
  {
    // One pass: names and clients into the reply, the table pointers aside; no table is touched.
    ExclusiveLock lock(st->mu);
    if (!st->manager.alive()) co_return NotRunning("info", st.get(), inst_);
    info.manager = st->manager;
    info.vault = st->vault;
    info.counters = st->Counters();
    snapshot = st->dir.BeginSnapshot([&](const std::string& name, const Entry& entry) {
      ManagedTableInfo& t = info.tables.emplace_back();
      t.name = name;
      t.client = pids.Copy(entry.client);
      cores.push_back(entry.table.core().get());
    });
  }
  // The snapshot ends whatever happens below (an allocation failure included).
  struct EndSnapshot {
    Instance& st;
    uint64_t id;
    ~EndSnapshot() {
      std::vector<Entry> dead;
      ExclusiveLock lock(st.mu);
      dead = st.dir.EndSnapshot(id);
    }  // `dead` goes after the lock.
  } end{*st, snapshot};
  // Owner, heir and size of each table (each its own allocation: at 100k tables the cache misses
  // are the cost, so a second index runs a few rows ahead prefetching).
  constexpr size_t kAhead = 16;
  for (size_t i = 0; i < cores.size() && i < kAhead; ++i)
    table_internal::ManagerAccess::PrefetchGlance(*cores[i]);
  for (size_t i = 0; i < cores.size(); ++i) {
    if (i + kAhead < cores.size())
      table_internal::ManagerAccess::PrefetchGlance(*cores[i + kAhead]);
    ManagedTableInfo& t = info.tables[i];
    bool kept = false;
    if (!table_internal::ManagerAccess::Glance(*cores[i], pids, &t.owner, &t.heir, &t.size,
                                               &kept)) {
      t.alive = false;
    } else if (kept && !t.heir.valid()) {
      t.heir = pids.Copy(info.vault);
    }
  }
  pids.Flush();
  // The shared tables across programs (one openat while the instance has none).
  absl::StatusOr<std::vector<SharedTableRecord>> shared = st->shared_dir->List();
  if (shared.ok()) {
    info.shared_tables = *std::move(shared);
  } else {
    Logf(LogLevel::kWarning, "etsmgr %s: info: the directory of shared tables %s: %s", inst_,
         st->shared_dir->segment(), shared.status().ToString());
  }
  // A large reply is a slice of its own.
  if (Scheduler::Current()->Charge(1 + static_cast<uint32_t>(cores.size() / 256))) {
    co_await self.Yield();
  }
  co_return info;
}

Task<absl::StatusOr<Pid>> Etsmgr::WaitForManager(Process& self, absl::Time deadline) const {
  // It suspends the process: only the running process's own, and never inside a table call (a
  // factory holding the instance's lock would wait for a manager that waits for that lock).
  if (absl::Status allowed = CheckCall(self, "wait_for_manager", ""); !allowed.ok()) {
    co_return allowed;
  }
  while (true) {
    std::optional<Pid> pid = co_await self.WaitForRegistered(server_name(), deadline);
    if (!pid) {
      co_return absl::DeadlineExceededError(absl::StrCat(
          "wait_for_manager: ", server_name(), " was not running by the deadline (instance ",
          ToString(State(self.node())), ")"));
    }
    // The instance's running manager: calls will be served. Anything else holding the name (a
    // manager on its way out, or an unrelated process) is waited out, never spun on.
    bool running = false;
    if (std::shared_ptr<Instance> st = manager_internal::FindInstance(self.node(), inst_)) {
      ExclusiveLock lock(st->mu);
      running = st->manager == *pid && st->State() == InstanceState::kRunning;
    }
    if (running) co_return std::move(*pid);
    std::optional<ExitReason> down = co_await AwaitDown(self, *pid, deadline);
    if (!down) {
      co_return absl::DeadlineExceededError(
          absl::StrCat("wait_for_manager: ", server_name(), " is held by ", pid->ToString(),
                       ", which is not the running manager of instance \"", inst_, "\" (",
                       ToString(State(self.node())), ")"));
    }
  }
}

}  // namespace etsmgr
