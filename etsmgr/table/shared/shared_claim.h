// SharedClaim: which live program holds a shared table. A program claims a segment name by taking
// an exclusive open-file-description lock (fcntl F_OFD_SETLK) on the first byte of a lock file
// beside the segment (<directory>/.<name>.owner, mode 0600);
// the kernel releases the lock when the program dies however it dies (SIGKILL, segfault, OOM
// killer), so a claim can never outlive its program and needs no pid check.
//
//   absl::StatusOr<SharedClaim> claim = SharedClaim::Acquire("counters", options);
//   // AlreadyExists while another live program holds "counters"; the message names its pid.
//   ...
//   claim->Release();  // or let it go out of scope; Remove() also unlinks the lock file
//
// One claim per name per program: a second Acquire in the same program answers AlreadyExists too
// (OFD locks belong to the open file, and each Acquire opens its own). The pid written into the
// lock file is only for messages; liveness is the lock alone, and "this program" in a refusal is
// known from the program's own set of held claims, not from the pid (which another pid namespace
// may repeat). A fork() child shares its parent's
// claims (it inherits the open file): claim in the program that uses the table, after forking.
//
// Thread safety: a SharedClaim is a move-only value; Acquire may be called from any thread.
#ifndef ETSMGR_TABLE_SHARED_SHARED_CLAIM_H_
#define ETSMGR_TABLE_SHARED_SHARED_CLAIM_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "etsmgr/table/shared/shared_options.h"

namespace etsmgr {

class SharedClaim {
 public:
  SharedClaim() = default;
  SharedClaim(SharedClaim&& other) noexcept;
  SharedClaim& operator=(SharedClaim&& other) noexcept;
  SharedClaim(const SharedClaim&) = delete;
  SharedClaim& operator=(const SharedClaim&) = delete;
  ~SharedClaim() { Release(); }

  // Claims `name` in options.directory (empty: /dev/shm). InvalidArgument for a bad name,
  // AlreadyExists when a live program (this one included) holds it, FailedPrecondition when the
  // lock file is not a regular file of ours (a symlink is not followed), errno errors otherwise.
  static absl::StatusOr<SharedClaim> Acquire(std::string_view name,
                                             const SharedMapOptions& options);

  // Unlinks the lock file of `name` whoever holds it (for cleaning up after a segment was
  // removed by SharedMap::Remove). NotFound when there is none.
  static absl::Status RemoveFile(std::string_view name, const SharedMapOptions& options);

  // Whether a live program (this one included) holds `name` now, without creating anything:
  // false when there is no lock file. The probe asks (F_OFD_GETLK) and takes nothing, so an
  // Acquire racing it is not disturbed.
  static absl::StatusOr<bool> HeldByAnyone(std::string_view name, const SharedMapOptions& options);

  bool held() const { return fd_ >= 0; }
  const std::string& path() const { return path_; }
  // Gives the claim up (idempotent).
  void Release();
  // Unlinks the lock file, then gives the claim up (for a table deleted on purpose).
  void Remove();

 private:
  int fd_ = -1;
  // The lock file's (device, inode), in this program's set of held claims while registered_.
  std::pair<uint64_t, uint64_t> file_{0, 0};
  bool registered_ = false;
  std::string path_;
};

}  // namespace etsmgr

#endif  // ETSMGR_TABLE_SHARED_SHARED_CLAIM_H_
