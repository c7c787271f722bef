#include "etsmgr/table/table_keeper.h"

#include <mutex>
#include <new>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "etsmgr/base/log.h"

namespace etsmgr {

using process_internal::CurrentProcess;
using process_internal::ProcessAccess;
using process_internal::ProcessControl;

TableKeeper::~TableKeeper() {
  // Parked tables hold themselves (parked_self_): let them go, one at a time, outside mu_ (a
  // table's last reference may run its destructor).
  while (PopParked() != nullptr) {
  }
}

void TableKeeper::OnKept(const AnyTable&, const Pid&, const Pid&) {}
void TableKeeper::OnLost(const AnyTable&) {}

Pid TableKeeper::holder() const {
  ExclusiveLock lock(mu_);
  return holder_;
}

size_t TableKeeper::parked_count() const {
  ExclusiveLock lock(mu_);
  return parked_count_;
}

Pid TableKeeper::PlaceLocked(TableCore* table, const Pid& from) noexcept {
  ExclusiveLock lock(mu_);
  // A holder that is exiting refuses the adoption (AdoptResource), and one with no memory for its
  // list of held tables cannot take it (AdoptResource throws, having changed nothing): the table
  // is parked instead (the next holder adopts what is parked).
  if (holder_.valid() && holder_ != from) {
    try {
      if (ProcessAccess::AdoptResource(holder_, table->AsResource())) return holder_;
    } catch (const std::bad_alloc&) {
    }
  }
  LinkParked(table);
  return Pid();
}

void TableKeeper::ParkLocked(TableCore* table) noexcept {
  ExclusiveLock lock(mu_);
  LinkParked(table);
}

void TableKeeper::UnparkLocked(TableCore* table) noexcept {
  std::shared_ptr<TableCore> dropped;  // Not the last reference: the caller holds the table.
  ExclusiveLock lock(mu_);
  dropped = UnlinkParked(table);
}

void TableKeeper::LinkParked(TableCore* table) noexcept {
  if (table->parked_self_ != nullptr) return;
  table->parked_self_ = table->shared_from_this();  // A count, no allocation.
  table->parked_prev_ = nullptr;
  table->parked_next_ = parked_head_;
  if (parked_head_ != nullptr) parked_head_->parked_prev_ = table;
  parked_head_ = table;
  ++parked_count_;
}

std::shared_ptr<TableCore> TableKeeper::UnlinkParked(TableCore* table) noexcept {
  if (table->parked_self_ == nullptr) return nullptr;
  if (table->parked_prev_ != nullptr) {
    table->parked_prev_->parked_next_ = table->parked_next_;
  } else {
    parked_head_ = table->parked_next_;
  }
  if (table->parked_next_ != nullptr) table->parked_next_->parked_prev_ = table->parked_prev_;
  table->parked_prev_ = table->parked_next_ = nullptr;
  --parked_count_;
  return std::move(table->parked_self_);
}

std::shared_ptr<TableCore> TableKeeper::PopParked() noexcept {
  ExclusiveLock lock(mu_);
  return parked_head_ == nullptr ? nullptr : UnlinkParked(parked_head_);
}

absl::StatusOr<size_t> TableKeeper::BecomeHolder() {
  ProcessControl* me = CurrentProcess();
  if (me == nullptr) {
    return absl::FailedPreconditionError("table keeper: the holder must be a process");
  }
  size_t waiting = 0;
  {
    ExclusiveLock lock(mu_);
    holder_ = me->self();
    holder_serial_.store(holder_.serial(), std::memory_order_release);
    waiting = parked_count_;
  }
  // One at a time off the list, each then under its own lock (taken before mu_, never inside
  // it). One handed over or deleted meanwhile has an owner or is gone: skipped. At most the
  // tables parked when this began.
  size_t adopted = 0;
  for (; waiting > 0; --waiting) {
    std::shared_ptr<TableCore> core = PopParked();
    if (core == nullptr) break;
    ExclusiveLock lock(core->meta_mu_);
    if (core->deleted() || !core->KeptBy(this) || core->owner_.valid()) continue;
    if (!me->AdoptResource(
            core->AsResource())) {  // Cannot happen while we run; keep it parked regardless.
      ParkLocked(core.get());
      break;  // (At the head again: the loop would meet it next.)
    }
    core->ReplaceOwner(me->self());
    ++adopted;
  }
  return adopted;
}

namespace {
bool Exiting(const Pid& pid) { return pid.valid() && ProcessAccess::Exiting(pid); }
}  // namespace

absl::Status TableKeeper::Keep(const AnyTable& table, std::shared_ptr<const void> tag) {
  if (!table.valid()) return NullTableHandle("keep");
  std::weak_ptr<TableKeeper> self = weak_from_this();
  if (self.expired()) {
    return absl::FailedPreconditionError(
        "keep: a TableKeeper must be owned by a std::shared_ptr (tables refer to it weakly)");
  }
  TableCore& core = *table.core();
  Pid old_heir;  // Released after the lock, with its data.
  std::shared_ptr<const std::any> old_data;
  std::shared_ptr<const void> old_tag;
  std::shared_ptr<TableKeeper> other;  // (A keeper's last reference never goes under the lock.)
  ExclusiveLock lock(core.meta_mu_);
  if (core.deleted()) return core.DeletedError("keep");
  if (core.KeptBy(this)) {
    if (core.keeper_tag_ == tag) return absl::OkStatus();
    return absl::FailedPreconditionError(
        absl::StrCat("keep ", core.ToString(), ": already kept under another tag"));
  }
  if (other = core.keeper_.lock(); other != nullptr) {
    // An abandoned keeper (a discarded manager instance releasing its tables) gives up a table a
    // live process owns to the keeper that owner now registers it with: otherwise the
    // registration failed, and the release that follows left the table with no keeper at all.
    // One it has (held or parked) stays: it goes with the abandoned keeper's user.
    if (!other->abandoned() || core.kept_ || !core.owner_.valid() || Exiting(core.owner_)) {
      return absl::FailedPreconditionError(
          absl::StrCat("keep ", core.ToString(), ": another keeper keeps it"));
    }
    old_tag = std::move(core.keeper_tag_);
  }
  core.keeper_ = std::move(self);
  core.keeper_raw_ = this;
  core.has_keeper_ = true;
  ++core.keeps_;
  core.keeper_tag_ = std::move(tag);
  // Managed again: a table that del_table left to its owner (marked to be deleted on purpose
  // whenever it goes) is a kept table like any other from here.
  core.discarded_.store(false, std::memory_order_release);
  old_heir = std::exchange(core.heir_, Pid());
  std::swap(old_data, core.heir_data_);
  core.kept_ = IsHolderSerial(core.owner_serial_.load(std::memory_order_relaxed));
  return absl::OkStatus();
}

std::shared_ptr<const void> TableKeeper::TagOf(const AnyTable& table) const {
  if (!table.valid()) return nullptr;
  TableCore& core = *table.core();
  ExclusiveLock lock(core.meta_mu_);
  if (!core.KeptBy(this)) return nullptr;
  return core.keeper_tag_;
}

TableKeeper::Look TableKeeper::LookAt(const AnyTable& table) const {
  Look look;
  if (!table.valid()) return look;
  TableCore& core = *table.core();
  ExclusiveLock lock(core.meta_mu_);
  look.alive = !core.deleted();
  if (!look.alive) return look;
  look.kept = core.KeptBy(this);
  look.held = look.kept && core.kept_;
  look.owner = core.owner_;
  look.owner_exiting = Exiting(core.owner_);
  return look;
}

bool TableKeeper::Holds(const AnyTable& table) const {
  if (!table.valid()) return false;
  TableCore& core = *table.core();
  ExclusiveLock lock(core.meta_mu_);
  return !core.deleted() && core.kept_ && core.KeptBy(this);
}

absl::Status TableKeeper::HandOver(const AnyTable& table, const Pid& to) {
  if (!table.valid()) return NullTableHandle("hand over");
  TableCore& core = *table.core();
  Pid previous;  // Released after the lock.
  ExclusiveLock lock(core.meta_mu_);
  if (core.deleted()) return core.DeletedError("hand over");
  if (!core.KeptBy(this)) {
    return absl::FailedPreconditionError(
        absl::StrCat("hand over ", core.ToString(), ": this keeper does not keep it"));
  }
  if (!core.kept_ && !Exiting(core.owner_)) {
    return absl::FailedPreconditionError(
        absl::StrCat("hand over ", core.ToString(), ": it is owned by ", core.owner_.ToString()));
  }
  // An exiting owner's table goes to its live heir first (ETS's rule, as OnOwnerExit applies it):
  // not to whoever asks while the exit runs.
  if (!core.kept_ && core.heir_.valid() && core.heir_ != core.owner_ && !Exiting(core.heir_)) {
    return absl::FailedPreconditionError(absl::StrCat("hand over ", core.ToString(),
                                                      ": its owner is exiting and its heir ",
                                                      core.heir_.ToString(), " inherits it"));
  }
  if (!to.valid()) {
    return absl::InvalidArgumentError(
        absl::StrCat("hand over ", core.ToString(), ": the receiver is the null pid"));
  }
  if (!ProcessAccess::AdoptResource(to, core.AsResource())) {
    return absl::FailedPreconditionError(absl::StrCat("hand over ", core.ToString(), " to ",
                                                      to.ToString(), ": process is not alive"));
  }
  // From the keeper, or from an exiting owner whose exit then finds it no longer its own.
  if (!core.owner_.valid()) UnparkLocked(&core);
  previous = core.ReplaceOwner(to);
  core.NoteKeptLocked(this);
  return absl::OkStatus();
}

absl::StatusOr<bool> TableKeeper::Release(const AnyTable& table) {
  if (!table.valid()) return NullTableHandle("release");
  TableCore& core = *table.core();
  std::shared_ptr<const void> tag;  // Released after the lock.
  bool had_it;
  {
    ExclusiveLock lock(core.meta_mu_);
    if (!core.KeptBy(this)) {
      return absl::FailedPreconditionError(
          absl::StrCat("release ", core.ToString(), ": this keeper does not keep it"));
    }
    core.keeper_.reset();
    core.keeper_raw_ = nullptr;
    core.has_keeper_ = false;
    tag = std::move(core.keeper_tag_);
    had_it = core.kept_ && !core.deleted();
    if (core.kept_ && !core.owner_.valid()) UnparkLocked(&core);
    core.kept_ = false;
  }
  // Nobody could ask for it any more. (Its holder may exit meanwhile: then it was deleted for
  // want of an heir, which is the same end.)
  if (had_it) {
    core.discarded_.store(true, std::memory_order_release);
    core.DeleteNow();
  }
  return had_it;
}

}  // namespace etsmgr
