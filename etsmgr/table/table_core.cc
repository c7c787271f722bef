#include "etsmgr/table/table_core.h"

#include <cxxabi.h>

#include <cstdlib>
#include <new>
#include <typeindex>
#include <unordered_map>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "etsmgr/base/log.h"
#include "etsmgr/process/process.h"
#include "etsmgr/table/table_keeper.h"

namespace etsmgr {

using process_internal::CurrentProcess;
using process_internal::ProcessAccess;
using process_internal::ProcessControl;
namespace {

std::atomic<uint64_t> g_next_table_id{1};

// heir_data as the table keeps it (see heir_data_); null when there is none.
std::shared_ptr<const std::any> ShareHeirData(std::any data) {
  if (!data.has_value()) return nullptr;
  return std::make_shared<const std::any>(std::move(data));
}

}  // namespace

namespace table_internal {

// One node's tables: the named ones by name, and every live one on an intrusive list (linking a
// table costs no allocation). Cores hold it by shared_ptr, so a core that outlives its node can
// still unlink itself.
struct TableDirectory {
  std::mutex mu;
  absl::flat_hash_map<std::string, std::shared_ptr<TableCore>> names;
  TableCore* head = nullptr;
  TableCore* tail = nullptr;
  size_t count = 0;

  void LinkLocked(TableCore* core) {
    core->dir_prev_ = tail;
    core->dir_next_ = nullptr;
    (tail != nullptr ? tail->dir_next_ : head) = core;
    tail = core;
    core->listed_ = true;
    ++count;
  }
  void UnlinkLocked(TableCore* core) {
    if (!core->listed_) return;
    (core->dir_prev_ != nullptr ? core->dir_prev_->dir_next_ : head) = core->dir_next_;
    (core->dir_next_ != nullptr ? core->dir_next_->dir_prev_ : tail) = core->dir_prev_;
    core->dir_prev_ = core->dir_next_ = nullptr;
    core->listed_ = false;
    --count;
  }
};

}  // namespace table_internal

namespace {

using table_internal::TableDirectory;

// The node's directory (Node::Service). When the node goes, named tables still registered (a
// parked table, say) are let go, so the directory and its cores do not keep each other alive.
struct TableDirectoryService {
  std::shared_ptr<TableDirectory> dir = std::make_shared<TableDirectory>();
  ~TableDirectoryService() {
    absl::flat_hash_map<std::string, std::shared_ptr<TableCore>> names;  // Dropped unlocked.
    std::lock_guard<std::mutex> lock(dir->mu);
    names.swap(dir->names);
  }
};

TableDirectory& DirectoryOf(Node& node) { return *node.Service<TableDirectoryService>().dir; }

// Demangled type names, cached: Info() over many tables would otherwise demangle twice a table.
std::string Demangle(const char* mangled);

std::string CachedTypeName(std::type_index type) {
  static std::mutex mu;
  static auto* names = new std::unordered_map<std::type_index, std::string>();
  std::lock_guard<std::mutex> lock(mu);
  auto it = names->find(type);
  if (it == names->end()) it = names->emplace(type, Demangle(type.name())).first;
  return it->second;
}

std::string CallerName(ProcessControl* me) {
  return me != nullptr ? me->self().ToString() : std::string("a thread outside any process");
}

}  // namespace

const char* ToString(TableType type) {
  switch (type) {
    case TableType::kSet:
      return "set";
    case TableType::kOrderedSet:
      return "ordered_set";
    case TableType::kBag:
      return "bag";
    case TableType::kDuplicateBag:
      return "duplicate_bag";
  }
  return "?";
}

const char* ToString(Access access) {
  switch (access) {
    case Access::kPrivate:
      return "private";
    case Access::kProtected:
      return "protected";
    case Access::kPublic:
      return "public";
  }
  return "?";
}

namespace {

std::string Demangle(const char* mangled) {
  int status = 0;
  char* demangled = abi::__cxa_demangle(mangled, nullptr, nullptr, &status);
  if (demangled == nullptr) return mangled;
  std::string name = demangled;
  std::free(demangled);
  // The common long spelling of std::string, kept readable in messages.
  const std::string long_string =
      "std::__cxx11::basic_string<char, std::char_traits<char>, std::allocator<char> >";
  for (size_t at; (at = name.find(long_string)) != std::string::npos;) {
    name.replace(at, long_string.size(), "std::string");
  }
  return name;
}

}  // namespace

std::string TypeName(const std::type_info& type) { return Demangle(type.name()); }

// --- TableCore.

TableCore::TableCore(const TableOptions& options, const std::type_info& key_type,
                     const std::type_info& value_type)
    : type_(options.type),
      access_(options.access),
      fast_path_(options.shared                           ? FastPath::kShared
                 : options.type == TableType::kSet        ? FastPath::kSet
                 : options.type == TableType::kOrderedSet ? FastPath::kOrderedSet
                                                          : FastPath::kNone),
      shared_storage_(options.shared.has_value()),
      id_(g_next_table_id.fetch_add(1, std::memory_order_relaxed)),
      name_(options.name),
      key_type_(key_type),
      value_type_(value_type) {}

std::string TableCore::type_names() const {
  return absl::StrCat("<", CachedTypeName(std::type_index(key_type_)), ", ",
                      CachedTypeName(std::type_index(value_type_)), ">");
}

std::string TableCore::key_type_name() const { return TypeName(key_type_); }
std::string TableCore::value_type_name() const { return TypeName(value_type_); }

TableCore::~TableCore() {
  if (directory_ != nullptr) {
    std::lock_guard<std::mutex> lock(directory_->mu);
    directory_->UnlinkLocked(this);
  }
}

std::string TableCore::name() const {
  ExclusiveLock lock(name_mu_);
  return name_;
}

std::string TableCore::ToString() const {
  ExclusiveLock lock(name_mu_);
  if (name_.empty()) return absl::StrCat("table #", id_);
  return absl::StrCat("table #", id_, " \"", name_, "\"");
}

absl::Status TableCore::Denied(Op op, const char* what) const {
  if (deleted()) return DeletedError(what);  // A deleted table has no owner: say why instead.
  return absl::PermissionDeniedError(
      absl::StrCat(what, " on ", ToString(), ": ", op == Op::kRead ? "read" : "write", " by ",
                   CallerName(CurrentProcess()), " denied: the table is ",
                   etsmgr::ToString(access_), " and owned by ", owner().ToString()));
}

absl::Status TableCore::NotOwner(ProcessControl* me, const char* what, const char* verb) const {
  return absl::PermissionDeniedError(absl::StrCat(what, " on ", ToString(), " by ", CallerName(me),
                                                  ": only the owner ", owner_.ToString(), " may ",
                                                  verb));
}

absl::Status TableCore::DeletedError(const char* what) const {
  return absl::NotFoundError(absl::StrCat(what, " on ", ToString(), ": the table was deleted"));
}

Pid TableCore::ReplaceOwner(Pid owner) {
  owner_serial_.store(owner.serial(), std::memory_order_release);
  return std::exchange(owner_, std::move(owner));
}

void TableCore::NoteKeptLocked(const TableKeeper* alive) {
  const uint64_t owner = owner_serial_.load(std::memory_order_relaxed);
  if (alive != nullptr && KeptBy(alive)) {
    kept_ = owner == 0 || alive->IsHolderSerial(owner);
    return;
  }
  std::shared_ptr<TableKeeper> keeper = keeper_.lock();
  kept_ = keeper != nullptr && (owner == 0 || keeper->IsHolderSerial(owner));
}

bool TableCore::has_keeper() const {
  ExclusiveLock lock(meta_mu_);
  return !keeper_.expired();
}

Pid TableCore::keeper_holder() const {
  std::shared_ptr<TableKeeper> keeper;  // (A keeper's last reference never goes under the lock.)
  ExclusiveLock lock(meta_mu_);
  keeper = keeper_.lock();
  return keeper != nullptr ? keeper->holder() : Pid();
}

Pid TableCore::owner() const {
  ExclusiveLock lock(meta_mu_);
  return owner_;
}

bool TableCore::Glance(PidCopier& copier, Pid* owner, Pid* heir, size_t* size, bool* kept) const {
  if (storage() != nullptr || shared_storage_) {  // Shared storage has no heap root.
    absl::StatusOr<size_t> stored = Size("info");
    if (!stored.ok()) return false;
    *size = *stored;
  } else if (deleted()) {
    return false;
  } else {
    *size = 0;
  }
  ExclusiveLock lock(meta_mu_);
  *owner = copier.Copy(owner_);
  *heir = copier.Copy(heir_);
  *kept = has_keeper_;
  return true;
}

Pid TableCore::heir() const {
  ExclusiveLock lock(meta_mu_);
  if (heir_.valid()) return heir_;
  std::shared_ptr<TableKeeper> keeper = keeper_.lock();
  return keeper != nullptr ? keeper->holder() : Pid();
}

absl::Status TableCore::Establish(const std::shared_ptr<TableCore>& core, TableOptions options) {
  ProcessControl* me = CurrentProcess();
  if (me == nullptr) {
    return absl::FailedPreconditionError(
        "new table: tables are owned by processes; create it from a process body");
  }
  // A dead heir is accepted (as ETS does): it simply never inherits.
  core->directory_ = me->node()->Service<TableDirectoryService>().dir;
  // Owned first, named last: a table found by its name already has its owner (a process that
  // found it earlier could delete it before it had one, and the creation went on with a
  // deleted table).
  std::shared_ptr<const std::any> heir_data = ShareHeirData(std::move(options.heir_data));
  {
    ExclusiveLock lock(core->meta_mu_);
    core->ReplaceOwner(me->self());
    core->heir_ = std::move(options.heir);
    core->heir_data_ = std::move(heir_data);
  }
  // The caller is running, so it has not begun exiting: adopting cannot fail, except while its
  // exit procedure runs (a destructor creating a table), which leaves nobody to own it.
  if (!me->AdoptResource(core->AsResource(core))) {
    core->DeleteNow();
    return absl::FailedPreconditionError(
        absl::StrCat("new table: the calling process ", me->self().ToString(), " is exiting"));
  }
  absl::Status named;
  {
    TableDirectory& dir = *core->directory_;
    std::lock_guard<std::mutex> lock(dir.mu);
    if (!options.name.empty()) {
      auto [it, inserted] = dir.names.emplace(options.name, core);
      if (!inserted) {
        named = absl::AlreadyExistsError(absl::StrCat(
            "new table \"", options.name, "\": the name is taken by ", it->second->ToString()));
      }
    }
    if (named.ok()) dir.LinkLocked(core.get());
  }
  if (!named.ok()) {
    // Never was: the caller's process gives it up (not deleted: the caller abandons its storage
    // next, with its shared segment's claim still held).
    Pid previous;  // Released after the lock.
    {
      ExclusiveLock lock(core->meta_mu_);
      previous = core->ReplaceOwner(Pid());
    }
    ProcessAccess::ReleaseResource(me->self(), core.get());
  }
  return named;
}

absl::StatusOr<TableInfo> TableCore::Info() const {
  if (deleted()) return DeletedError("info");
  TableInfo info;
  info.id = id_;
  info.name = name();
  info.type = type_;
  info.access = access_;
  info.owner = owner();
  info.heir = heir();
  // Size regardless of the access mode: info is metadata, as in ETS.
  absl::StatusOr<size_t> size = Size("info");
  if (!size.ok()) return size.status();
  info.size = *size;
  info.memory = StorageMemory();
  info.key_type = CachedTypeName(std::type_index(key_type_));
  info.value_type = CachedTypeName(std::type_index(value_type_));
  info.storage = storage_description();
  return info;
}

absl::Status TableCore::GiveAway(const Pid& to, std::any data) {
  ProcessControl* me = CurrentProcess();
  Pid from;
  {
    ExclusiveLock lock(meta_mu_);
    if (deleted()) return DeletedError("give_away");
    if (me == nullptr || me->serial() != owner_serial_.load(std::memory_order_relaxed)) {
      return NotOwner(me, "give_away", "give it away");
    }
    if (!to.valid()) {
      return absl::InvalidArgumentError(
          absl::StrCat("give_away of ", ToString(), ": the receiver is the null pid"));
    }
    if (to == owner_) {
      return absl::InvalidArgumentError(
          absl::StrCat("give_away of ", ToString(), " to ", to.ToString(), ": it already owns it"));
    }
    if (!ProcessAccess::AdoptResource(to, AsResource())) {
      return absl::FailedPreconditionError(absl::StrCat("give_away of ", ToString(), " to ",
                                                        to.ToString(), ": process is not alive"));
    }
    from = ReplaceOwner(to);
    NoteKeptLocked();
  }
  Send(to, TableTransfer{AnyTable(shared_from_this()), from, std::move(data)});
  return absl::OkStatus();
}

absl::StatusOr<Pid> TableCore::ReturnToKeeper() {
  ProcessControl* me = CurrentProcess();
  std::shared_ptr<TableKeeper> keeper;  // Released after the lock (never its last reference in it).
  Pid previous;                         // The caller's reference, released after the lock.
  ExclusiveLock lock(meta_mu_);
  if (deleted()) return DeletedError("return to its keeper");
  if (me == nullptr || me->serial() != owner_serial_.load(std::memory_order_relaxed)) {
    return NotOwner(me, "return to its keeper", "return it");
  }
  keeper = keeper_.lock();
  if (keeper == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("return ", ToString(), " to its keeper: no keeper keeps it"));
  }
  if (keeper->IsHolderSerial(me->serial())) {
    kept_ = true;  // Reached the holder before it became the holder: held from now on.
    return owner_;
  }
  const Pid holder = keeper->PlaceLocked(this, owner_);
  previous = ReplaceOwner(holder);
  kept_ = true;
  return holder;
}

absl::Status TableCore::SetHeir(const Pid& heir, std::any data) {
  ProcessControl* me = CurrentProcess();
  // The old heir and data (swapped into `shared`) go after the lock.
  Pid old_heir;
  std::shared_ptr<const std::any> shared = ShareHeirData(std::move(data));
  ExclusiveLock lock(meta_mu_);
  if (deleted()) return DeletedError("set_heir");
  if (me == nullptr || me->serial() != owner_serial_.load(std::memory_order_relaxed)) {
    return NotOwner(me, "set_heir", "set the heir");
  }
  old_heir = std::exchange(heir_, heir);
  std::swap(heir_data_, shared);
  return absl::OkStatus();
}

absl::Status TableCore::Rename(std::string name) {
  absl::Status allowed = Check(Op::kWrite, "rename");
  if (!allowed.ok()) return allowed;
  if (name.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("rename of ", ToString(), ": the new name is empty"));
  }
  if (directory_ == nullptr) return DeletedError("rename");  // Never established.
  std::shared_ptr<TableCore> old_entry;  // Dropped after the lock (the caller holds the table).
  std::lock_guard<std::mutex> lock(directory_->mu);
  // Checked under the directory's lock: DeleteNow sets deleted() before it takes that lock to
  // remove the name, so a rename either precedes the removal or sees the table deleted.
  if (deleted()) return DeletedError("rename");
  std::string old_name = this->name();
  if (old_name == name) return absl::OkStatus();
  auto [it, inserted] = directory_->names.emplace(name, nullptr);
  if (!inserted) {
    return absl::AlreadyExistsError(absl::StrCat("rename of ", ToString(), " to \"", name,
                                                 "\": the name is taken by ",
                                                 it->second->ToString()));
  }
  it->second = shared_from_this();
  if (!old_name.empty()) {
    auto old = directory_->names.find(old_name);
    if (old != directory_->names.end() && old->second.get() == this) {
      old_entry = std::move(old->second);
      directory_->names.erase(old);
    }
  }
  ExclusiveLock name_lock(name_mu_);
  name_ = std::move(name);
  return absl::OkStatus();
}

absl::Status TableCore::SyncStorage(const char* what) const {
  if (deleted()) return DeletedError(what);
  return absl::FailedPreconditionError(
      absl::StrCat(what, " on ", ToString(), ": a heap table has no storage to sync"));
}

absl::Status TableCore::CheckStorage(const char* what) const {
  if (deleted()) return DeletedError(what);
  return absl::FailedPreconditionError(
      absl::StrCat(what, " on ", ToString(), ": a heap table has no shared storage to check"));
}

absl::Status TableCore::Delete(const char* what) {
  absl::Status allowed = Check(Op::kWrite, what);
  if (!allowed.ok()) return allowed;
  if (deleted()) return DeletedError(what);
  discarded_.store(true, std::memory_order_release);
  DeleteNow();
  return absl::OkStatus();
}

absl::Status TableCore::DeleteUnlessKeptAgain(const char* what, uint64_t keeps) {
  absl::Status allowed = Check(Op::kWrite, what);
  if (!allowed.ok()) return allowed;
  if (deleted()) return DeletedError(what);
  if (!DeleteNow(&keeps)) {
    return absl::FailedPreconditionError(
        absl::StrCat(what, " on ", ToString(), ": managed again (registered anew), not deleted"));
  }
  return absl::OkStatus();
}

bool TableCore::DeleteNow(const uint64_t* unless_kept_since) {
  Pid owner;
  Pid heir;  // Released after the lock, with the heir data and the keeper's tag.
  std::shared_ptr<const std::any> heir_data;
  std::shared_ptr<const void> tag;
  std::shared_ptr<TableKeeper> keeper;  // Told after the lock: a kept table was lost.
  {
    ExclusiveLock lock(meta_mu_);
    if (unless_kept_since != nullptr) {
      if (has_keeper_ || keeps_ != *unless_kept_since) return false;
      discarded_.store(true, std::memory_order_release);  // On purpose: its segment goes too.
    }
    if (deleted_.exchange(true, std::memory_order_acq_rel)) return false;  // Someone else did.
    owner = ReplaceOwner(Pid());
    heir = std::move(heir_);
    heir_data = std::move(heir_data_);
    keeper = keeper_.lock();
    keeper_.reset();
    keeper_raw_ = nullptr;
    has_keeper_ = false;
    tag = std::move(keeper_tag_);
    if (keeper != nullptr && kept_ && !owner.valid()) keeper->UnparkLocked(this);
    kept_ = false;
  }
  std::shared_ptr<TableCore> keep = shared_from_this();  // The owner's reference may be the last.
  if (owner.valid()) ProcessAccess::ReleaseResource(owner, this);
  if (directory_ != nullptr) {
    std::shared_ptr<TableCore> registered;  // Dropped after the directory's lock.
    std::lock_guard<std::mutex> lock(directory_->mu);
    directory_->UnlinkLocked(this);
    std::string name = this->name();
    auto it = name.empty() ? directory_->names.end() : directory_->names.find(name);
    if (it != directory_->names.end() && it->second.get() == this) {
      registered = std::move(it->second);
      directory_->names.erase(it);
    }
  }
  DropStorage();
  if (keeper != nullptr) {
    try {
      keeper->OnLost(AnyTable(keep));
    } catch (...) {  // A hook of the keeper's user: the deletion is done regardless.
      LogHookThrew("the keeper's OnLost");
    }
  }
  return true;
}

void TableCore::LogHookThrew(const char* what) const noexcept {
  try {
    Logf(LogLevel::kWarning, "%s: %s threw", ToString().c_str(), what);
  } catch (...) {  // No memory even for the message.
  }
}

void TableCore::OnOwnerExit(const Pid& owner, const ExitReason& reason) {
  Pid heir;
  Pid kept_by;                           // The keeper's holder that took the table (null: parked).
  Pid previous;                          // The exiting owner's reference, released after the lock.
  std::shared_ptr<const std::any> data;  // The heir's, copied after the lock.
  std::shared_ptr<TableKeeper> keeper;
  bool heir_failed = false;  // The heir could not take it (no memory): as if it had none.
  Pid dropped_heir;          // Its heir and data then, dropped after the
  std::shared_ptr<const std::any> dropped_data;  // lock (the data's destructor is the user's).
  {
    ExclusiveLock lock(meta_mu_);
    if (deleted()) return;
    // Handed over (TableKeeper::HandOver) while `owner` was exiting: no longer its table.
    if (owner_serial_.load(std::memory_order_relaxed) != owner.serial()) return;
    bool adopted = false;
    if (heir_.valid() && heir_ != owner) {
      try {
        adopted = ProcessAccess::AdoptResource(heir_, AsResource());
      } catch (const std::bad_alloc&) {
        // Nothing changed: the table goes to its keeper, or is deleted, as without an heir (an
        // exception out of here left it with its dead owner, found by nobody).
        heir_failed = true;
        dropped_heir = std::exchange(heir_, Pid());
        dropped_data = std::move(heir_data_);
      }
    }
    if (adopted) {
      heir = heir_;
      data = heir_data_;
      previous = ReplaceOwner(heir);
      NoteKeptLocked();
    } else if ((keeper = keeper_.lock()) != nullptr) {
      kept_by = keeper->PlaceLocked(this, owner);
      previous = ReplaceOwner(kept_by);
      kept_ = true;
    }
  }
  if (heir_failed) LogHookThrew("its heir's adoption (no memory; the heir is dropped)");
  if (heir.valid()) {
    // The user's copy of the data runs here, after the lock (it may take time, or use this
    // table). A copy that throws (the user's type, or no memory) must not stop the exit from
    // handing over the process's other tables: the heir, which holds the table already,
    // inherits without the data then (losing the table would be worse).
    std::any copy;
    try {
      if (data != nullptr) copy = *data;
    } catch (...) {
      LogHookThrew("copying its heir_data (the heir inherits it without)");
    }
    if (LogEnabled(LogLevel::kDebug)) {  // Not even the arguments otherwise: once per table.
      Logf(LogLevel::kDebug, "%s: owner %s exited (%s); heir %s inherits it", ToString().c_str(),
           owner.ToString().c_str(), reason.ToString().c_str(), heir.ToString().c_str());
    }
    Send(heir, TableTransfer{AnyTable(shared_from_this()), owner, std::move(copy)});
    return;
  }
  if (keeper != nullptr) {
    try {
      keeper->OnKept(AnyTable(shared_from_this()), owner, kept_by);
    } catch (...) {  // A hook of the keeper's user: the table is kept regardless.
      LogHookThrew("the keeper's OnKept");
    }
    return;
  }
  if (LogEnabled(LogLevel::kDebug)) {
    Logf(LogLevel::kDebug, "%s: owner %s exited (%s) with no live heir; deleted",
         ToString().c_str(), owner.ToString().c_str(), reason.ToString().c_str());
  }
  lost_with_owner_.store(true, std::memory_order_release);
  DeleteNow();
}

// --- AnyTable.

absl::Status NullTableHandle(const char* what) {
  return absl::FailedPreconditionError(absl::StrCat(what, ": null table handle"));
}

namespace table_internal {
absl::Status UnorderedKeyError(const char* what) {
  return absl::InvalidArgumentError(
      absl::StrCat(what, ": the key is (or holds) a NaN, which has no order: a table refuses it"));
}
}  // namespace table_internal

bool AnyTable::alive() const { return core_ != nullptr && !core_->deleted(); }
bool AnyTable::lost_with_owner() const { return core_ != nullptr && core_->lost_with_owner(); }
uint64_t AnyTable::id() const { return core_ != nullptr ? core_->id() : 0; }
std::string AnyTable::name() const { return core_ != nullptr ? core_->name() : std::string(); }
std::string AnyTable::ToString() const {
  return core_ != nullptr ? core_->ToString() : std::string("table <null>");
}

absl::StatusOr<TableInfo> AnyTable::Info() const {
  if (!core_) return NullTableHandle("info");
  return core_->Info();
}

absl::StatusOr<Pid> AnyTable::Owner() const {
  if (!core_) return NullTableHandle("owner");
  if (core_->deleted()) return core_->DeletedError("owner");
  return core_->owner();
}

absl::StatusOr<size_t> AnyTable::Size() const {
  if (!core_) return NullTableHandle("size");
  absl::Status allowed = core_->Check(TableCore::Op::kRead, "size");
  if (!allowed.ok()) return allowed;
  return core_->Size("size");
}

absl::Status AnyTable::Clear() const {
  if (!core_) return NullTableHandle("clear");
  absl::Status allowed = core_->Check(TableCore::Op::kWrite, "clear");
  if (!allowed.ok()) return allowed;
  return core_->Clear("clear");
}

absl::Status AnyTable::GiveAway(const Pid& to, std::any data) const {
  if (!core_) return NullTableHandle("give_away");
  return core_->GiveAway(to, std::move(data));
}

absl::Status AnyTable::SetHeir(const Pid& heir, std::any data) const {
  if (!core_) return NullTableHandle("set_heir");
  return core_->SetHeir(heir, std::move(data));
}

absl::Status AnyTable::Rename(std::string name) const {
  if (!core_) return NullTableHandle("rename");
  return core_->Rename(std::move(name));
}

absl::Status AnyTable::Delete() const {
  if (!core_) return NullTableHandle("delete");
  return core_->Delete();
}

absl::StatusOr<AnyTable> FindTable(Node& node, std::string_view name) {
  TableDirectory& dir = DirectoryOf(node);
  std::lock_guard<std::mutex> lock(dir.mu);
  auto it = dir.names.find(std::string(name));
  if (it == dir.names.end()) {
    return absl::NotFoundError(absl::StrCat("no table named \"", std::string(name), "\""));
  }
  return AnyTable(it->second);
}

std::vector<AnyTable> AllTables(Node& node) {
  TableDirectory& dir = DirectoryOf(node);
  std::vector<AnyTable> out;
  std::lock_guard<std::mutex> lock(dir.mu);
  out.reserve(dir.count);
  for (TableCore* core = dir.head; core != nullptr; core = core->dir_next_) {
    // A core whose last handle is going (its destructor waits for this lock to unlink it) is
    // skipped: lock() fails once no shared_ptr is left.
    if (std::shared_ptr<TableCore> held = core->weak_from_this().lock()) {
      out.emplace_back(std::move(held));
    }
  }
  return out;
}

std::vector<TableInfo> AllTablesInfo(Node& node) {
  std::vector<AnyTable> tables = AllTables(node);
  std::vector<TableInfo> out;
  out.reserve(tables.size());
  for (const AnyTable& t : tables) {
    const TableCore& core = *t.core();
    TableInfo info;
    if (!core.Footprint(&info.size, &info.memory)) continue;  // Deleted meanwhile.
    info.id = core.id();
    info.name = core.name();
    info.type = core.type();
    info.access = core.access();
    info.owner = core.owner();
    info.heir = core.heir();
    info.key_type = CachedTypeName(core.key_type());
    info.value_type = CachedTypeName(core.value_type());
    out.push_back(std::move(info));
  }
  return out;
}

}  // namespace etsmgr
