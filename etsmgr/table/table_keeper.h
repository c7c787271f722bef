// TableKeeper: keeps tables whose owner exits with no live heir, instead of letting them go.
//
//   auto keeper = std::make_shared<TableKeeper>();  // Held by whoever the tables belong to.
//   keeper->Keep(table, /*tag=*/nullptr).IgnoreError();
//   // ... the owner exits (crash, kill, normal): the table is not deleted ...
//   // In the process that should hold kept tables:
//   size_t adopted = keeper->BecomeHolder().value();
//   // Later, give one back to a process that asks for it:
//   keeper->HandOver(table, client).IgnoreError();
//
// ETS deletes a table whose owner exits with no live heir. A table a keeper keeps is never lost
// that way: when its owner exits and no live heir (TableOptions::heir, SetHeir) takes it, the
// keeper does -- its *holder* process becomes the owner if one is alive, otherwise the table is
// *parked*: no process owns it, its data stays intact (reads and writes that need the owner are
// refused, as for any non-owner), and the next holder adopts it (BecomeHolder). Holder and
// parking are interchangeable: a holder that exits parks what it held. So no process of the
// keeper's user (the manager's vault, say) can lose a kept table by dying.
//
// The keeper object is the capability: whoever holds it may keep, hand over and release tables,
// whoever owns them. A table has at most one keeper. Keeping clears the table's heir (the
// keeper is its heir from then on); the owner may still set one later, which then inherits
// first, as in ETS.
//
// Lifetime: a keeper must be owned by a std::shared_ptr (Keep answers FailedPrecondition
// otherwise). Tables refer to their keeper weakly; a keeper holds its parked tables. When the last
// reference to the keeper goes, its parked tables go too (deleted with their last handle), and
// tables it kept fall back to ETS's rule.
//
// Threads: every function may be called from any thread; BecomeHolder from the process that is
// to hold the tables. The hooks run on the thread that made the change, with no lock held.
#ifndef ETSMGR_TABLE_TABLE_KEEPER_H_
#define ETSMGR_TABLE_TABLE_KEEPER_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "etsmgr/process/pid.h"
#include "etsmgr/table/table_core.h"

namespace etsmgr {

class TableKeeper : public std::enable_shared_from_this<TableKeeper> {
 public:
  TableKeeper() = default;
  virtual ~TableKeeper();
  TableKeeper(const TableKeeper&) = delete;
  TableKeeper& operator=(const TableKeeper&) = delete;

  // --- The holder.
  // The calling process becomes the holder: tables kept from now on go to it, and it adopts every
  // parked table now (returns how many). FailedPrecondition outside a process.
  absl::StatusOr<size_t> BecomeHolder();
  Pid holder() const;  // The last holder (it may have exited since).
  // Whether `owner_serial` (a Pid's serial) is the holder's. Any thread, no lock.
  bool IsHolderSerial(uint64_t owner_serial) const {
    return owner_serial != 0 && owner_serial == holder_serial_.load(std::memory_order_acquire);
  }
  size_t parked_count() const;  // Tables no process owns right now.

  // --- Tables. Each takes the table's lock; none suspends.
  // Starts keeping `table` (idempotent), clearing its heir. `tag` is the caller's, returned by
  // TagOf (the manager keeps the name a table is managed under). NotFound for a deleted table,
  // FailedPrecondition when another keeper keeps it (unless that keeper is abandoned and a live
  // process owns the table: then this keeper takes it over), or it is already kept with another
  // tag.
  absl::Status Keep(const AnyTable& table, std::shared_ptr<const void> tag);
  // The tag `table` is kept with, or null when this keeper does not keep it.
  std::shared_ptr<const void> TagOf(const AnyTable& table) const;
  // True when the keeper has `table` right now: its holder owns it, or it is parked.
  bool Holds(const AnyTable& table) const;
  // One consistent look at a table (under its lock): alive, kept by this keeper, had by it
  // (`held`), its owner, and whether that owner is exiting (its exit procedure has begun: a
  // table it still owns is about to come to the keeper).
  struct Look {
    bool alive = false;
    bool kept = false;
    bool held = false;
    Pid owner;
    bool owner_exiting = false;
  };
  Look LookAt(const AnyTable& table) const;
  // Makes `to` (a live process) the owner of a table the keeper has, or whose owner is exiting
  // (it would come to the keeper next); still kept: if `to` exits, it comes back.
  // FailedPrecondition when the keeper does not keep it, or a live process other than its holder
  // owns it, or `to` is not alive; NotFound for a deleted table. `to` receives no TableTransfer:
  // the caller tells it.
  absl::Status HandOver(const AnyTable& table, const Pid& to);
  // Stops keeping `table`. One the keeper has is deleted (nobody could ask for it any more);
  // one a process owns stays with it, with no heir. Yields true when it deleted the table.
  // FailedPrecondition when this keeper does not keep it.
  absl::StatusOr<bool> Release(const AnyTable& table);
  // This keeper's user is letting its tables go (it releases them one by one next, as a discarded
  // manager instance does): from now on another keeper's Keep may take over a table of it that a
  // live process owns (that owner is registering it elsewhere; this keeper's Release then answers
  // FailedPrecondition and deletes nothing). Tables the keeper has stay its own. Irreversible.
  void Abandon() { abandoned_.store(true, std::memory_order_release); }
  bool abandoned() const { return abandoned_.load(std::memory_order_acquire); }

 protected:
  // The owner `from` of a kept table exited and the keeper took it: `holder` owns it now, or it
  // is parked (`holder` null).
  virtual void OnKept(const AnyTable& table, const Pid& from, const Pid& holder);
  // A kept table was deleted by something other than Release (its owner deleted it, or the
  // runtime shut down). Not called for tables that were never kept.
  virtual void OnLost(const AnyTable& table);

 private:
  friend class TableCore;
  // The table's owner `from` exited. Adopts the table into a live holder (returned) or parks it
  // (the null Pid).
  // None allocates or throws: an owner's exit must not fail half-way with the table taken off
  // the process and placed nowhere (parked tables are an intrusive list through TableCore).
  Pid PlaceLocked(TableCore* table, const Pid& from) noexcept
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(table->meta_mu_);
  void ParkLocked(TableCore* table) noexcept ABSL_EXCLUSIVE_LOCKS_REQUIRED(table->meta_mu_);
  void UnparkLocked(TableCore* table) noexcept ABSL_EXCLUSIVE_LOCKS_REQUIRED(table->meta_mu_);
  void LinkParked(TableCore* table) noexcept ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Takes `table` off the list and yields the reference that kept it (null: not parked).
  std::shared_ptr<TableCore> UnlinkParked(TableCore* table) noexcept
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Takes the newest parked table off the list under mu_ (null: none), for the caller to use or
  // drop outside it.
  std::shared_ptr<TableCore> PopParked() noexcept ABSL_LOCKS_EXCLUDED(mu_);

  mutable SpinLock mu_;  // Taken inside a table's lock.
  Pid holder_ ABSL_GUARDED_BY(mu_);
  // holder_'s serial, readable without mu_ (whether a table's owner is the holder).
  std::atomic<uint64_t> holder_serial_{0};
  std::atomic<bool> abandoned_{false};
  // Tables no process owns, newest first (TableCore::parked_prev_ / parked_next_ / parked_self_).
  TableCore* parked_head_ ABSL_GUARDED_BY(mu_) = nullptr;
  size_t parked_count_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace etsmgr

#endif  // ETSMGR_TABLE_TABLE_KEEPER_H_
