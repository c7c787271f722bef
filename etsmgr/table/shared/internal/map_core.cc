#include "etsmgr/table/shared/internal/map_core.h"

#include <cxxabi.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <mutex>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "etsmgr/base/errno_status.h"

namespace etsmgr::shared_internal {
namespace {

#ifdef MADV_POPULATE_WRITE
constexpr int kPopulateWrite = MADV_POPULATE_WRITE;
#else
constexpr int kPopulateWrite = 23;  // Linux 5.14's value; older kernels answer EINVAL
#endif

constexpr size_t kMaxNameBytes = 200;

// A file descriptor closed on scope exit unless released.
class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  Fd(Fd&& other) noexcept : fd_(other.release()) {}
  Fd& operator=(Fd&& other) noexcept {
    if (this != &other) {
      if (fd_ >= 0) close(fd_);
      fd_ = other.release();
    }
    return *this;
  }
  int get() const { return fd_; }
  int release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }

 private:
  int fd_;
};

std::string Demangled(const char* mangled) {
  int status = 0;
  char* text = abi::__cxa_demangle(mangled, nullptr, nullptr, &status);
  std::string out = status == 0 && text != nullptr ? text : mangled;
  std::free(text);
  return out;
}

uint64_t TypeTag(const TypeDesc& t) {
  std::string s = absl::StrCat(t.mangled, "/", t.size, "/", t.align);
  return HashBytes(s.data(), s.size());
}

// The stored, printable name of a type: its demangled name, cut to fit with a NUL.
void PutTypeName(const TypeDesc& t, char (&out)[kTypeNameBytes]) {
  std::string name = Demangled(t.mangled);
  std::memset(out, 0, kTypeNameBytes);
  std::memcpy(out, name.data(), std::min<size_t>(name.size(), kTypeNameBytes - 1));
}

std::string StoredName(const char (&name)[kTypeNameBytes]) {
  return std::string(name, strnlen(name, kTypeNameBytes));
}

uint32_t WordsOf(uint32_t bytes) { return (bytes + 7) / 8; }

uint64_t ImmutableChecksum(const ImmutableHeader& h) {
  return HashBytes(&h, offsetof(ImmutableHeader, checksum));
}

// Sizes a new file (or the growth of one): allocated now, so that a full /dev/shm is an error
// here, never a SIGBUS when a page of a sparse file is first touched. Only a file system that
// cannot allocate ahead (EOPNOTSUPP, EINVAL) gets a plain ftruncate.
absl::Status AllocateFile(int fd, uint64_t from, uint64_t to, const std::string& name,
                          const std::string& path) {
  int rc;
  do {  // tmpfs answers EINTR when a signal is pending
    rc = posix_fallocate(fd, static_cast<off_t>(from), static_cast<off_t>(to - from));
  } while (rc == EINTR);
  if (rc == EOPNOTSUPP || rc == EINVAL) rc = ftruncate(fd, static_cast<off_t>(to)) == 0 ? 0 : errno;
  if (rc == ENOSPC || rc == EDQUOT || rc == EFBIG) {
    return absl::ResourceExhaustedError(absl::StrCat("shared map \"", name, "\": no space for ",
                                                     path, " to hold ", to,
                                                     " bytes: ", std::strerror(rc)));
  }
  if (rc != 0) {
    return ErrnoToStatus(rc, absl::StrCat("shared map \"", name, "\": size ", path, " to ", to));
  }
  return absl::OkStatus();
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Locks.

class MapCore::SegmentLock {
 public:
  explicit SegmentLock(const MapCore* core) : core_(core), status_(core->LockSegment()) {}
  ~SegmentLock() {
    if (status_.ok()) UnlockWord(&core_->Mut()->lock);
  }
  SegmentLock(const SegmentLock&) = delete;
  SegmentLock& operator=(const SegmentLock&) = delete;
  bool ok() const { return status_.ok(); }
  const absl::Status& status() const { return status_; }

 private:
  const MapCore* core_;
  absl::Status status_;
};

std::string MapCore::LockName(size_t s) const {
  return s == kSegment ? std::string("the segment lock") : absl::StrCat("shard ", s);
}

bool MapCore::Unfinished(size_t s) const {
  return s == kSegment ? Load(&Mut()->log.state) != kLogIdle
                       : LoadRelaxed(&Shard(s)->intent_state) != kIntentIdle;
}

// Waits for lock word s (a shard's or the segment's): spins, then yields, then sleeps (up to 1 ms
// at a time), judging the holder's liveness now and then. A dead holder's lock is taken over and
// what it guards repaired (as a robust mutex's EOWNERDEAD); a live one past lock_timeout is
// DeadlineExceeded.
absl::Status MapCore::LockSlow(size_t s, const char* what) const {
  uint64_t me = Token();
  if (me == 0) {
    absl::StatusOr<uint64_t> claimed = ClaimToken();
    if (!claimed.ok()) return claimed.status();
    me = *claimed;
  }
  uint64_t* const lock = LockWord(s);
  constexpr int kSpins = 64;
  constexpr int kYields = 64;
  const int64_t now = MonotonicNowNs();
  const int64_t timeout = absl::ToInt64Nanoseconds(lock_timeout_);  // saturates when infinite
  const int64_t deadline = timeout > std::numeric_limits<int64_t>::max() - now
                               ? std::numeric_limits<int64_t>::max()
                               : now + timeout;
  int64_t sleep_ns = 2'000;
  uint64_t held = 0;
  for (int round = 0;; round = std::min(round + 1, kSpins + kYields)) {
    held = Load(lock);
    if (held == 0) {
      if (TryLockWord(lock, me)) break;
      continue;
    }
    if (round < kSpins) {
      CpuRelax();
      continue;
    }
    switch (HolderState(held)) {
      case Holder::kDead: {
        absl::Status st;
        if (TakeOverDead(s, held, me, &st)) return st;
        continue;
      }
      case Holder::kCorrupt:
        return LockWordNamesNoHolder(s, held, what);
      case Holder::kAlive:
        break;
    }
    if (MonotonicNowNs() > deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("shared map \"", name_, "\": ", what, ": ", LockName(s),
                       " stayed locked for ", absl::FormatDuration(lock_timeout_), " by ",
                       HolderName(held), " (alive: a dead holder would have been repaired)"));
    }
    if (round < kSpins + kYields) {
      sched_yield();
    } else {
      timespec pause{0, static_cast<long>(sleep_ns)};
      nanosleep(&pause, nullptr);
      sleep_ns = std::min<int64_t>(sleep_ns * 2, 1'000'000);
    }
  }
  // Ours, normally: finish what a live writer left half-done (a shard's writer whose segment
  // lock timed out; a repair of the segment that failed and let go).
  if (Unfinished(s)) return RepairHeld(s);
  return absl::OkStatus();
}

bool MapCore::TakeOverDead(size_t s, uint64_t word, uint64_t me, absl::Status* status) const {
  uint64_t* const lock = LockWord(s);
  if (!__atomic_compare_exchange_n(lock, &word, me, false, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) {
    return false;
  }
  *status = Repair(s);
  // Unrepaired: the next locker takes it over and tries again (repairs are idempotent).
  if (!status->ok()) Store(lock, kLockOrphaned);
  return true;
}

absl::Status MapCore::RepairHeld(size_t s) const {
  absl::Status st = Repair(s);
  if (!st.ok()) UnlockWord(LockWord(s));
  return st;
}

// --- Holder tokens.

std::atomic<uint64_t> MapCore::fork_generation{0};
MapCore::Counter MapCore::read_retries;

namespace {
// The descriptions holding this process's holder-token file locks, so that a forked child drops
// its copies at once (a copy would keep a dead parent's token looking alive). Entries hold
// fd + 1; 0 is free. At most kMaxLiveFds handles per process (ResourceExhausted past them).
// A description is opened and listed, or unlisted and closed, under claim_mu, which fork holds
// (the prepare handler takes it): no child inherits a holder description its handler does not
// know of.
constexpr int kMaxLiveFds = 4096;
std::atomic<int> live_fds[kMaxLiveFds];
std::mutex claim_mu;

void DropInheritedHolderLocks() {  // the child's handler: async-signal-safe calls only
  for (std::atomic<int>& entry : live_fds) {
    const int v = entry.load(std::memory_order_relaxed);
    if (v > 0) close(v - 1);
    entry.store(0, std::memory_order_relaxed);
  }
  MapCore::fork_generation.fetch_add(1, std::memory_order_release);
  claim_mu.unlock();
}

// Registered while the program starts (single-threaded), before any handle exists: a
// registration racing a fork in another thread could run twice in the child, whose next fork
// would then take claim_mu twice.
const bool fork_handlers_installed = [] {
  return pthread_atfork([] { claim_mu.lock(); }, [] { claim_mu.unlock(); },
                        DropInheritedHolderLocks) == 0;
}();

// Under claim_mu.
int AddLiveFd(int fd) {
  for (int i = 0; i < kMaxLiveFds; ++i) {
    int free = 0;
    if (live_fds[i].compare_exchange_strong(free, fd + 1)) return i;
  }
  return -1;
}

// 64 random bits: getrandom, or (where it fails: seccomp, an old kernel) a generator whose every
// draw is mixed with this process's pid and the clock (a forked child inherits its state, and
// siblings must not draw the same sequence).
uint64_t RandomWord() {
  if (TokenDrawHook hook = g_token_draw_hook.load(std::memory_order_relaxed)) [[unlikely]] {
    return hook();
  }
  uint64_t v = 0;
  if (getrandom(&v, sizeof(v), GRND_NONBLOCK) == static_cast<ssize_t>(sizeof(v))) return v;
  static thread_local std::mt19937_64 fallback(static_cast<uint64_t>(MonotonicNowNs()));
  const uint64_t mix = (static_cast<uint64_t>(getpid()) << 40) ^
                       static_cast<uint64_t>(MonotonicNowNs()) * 0x9e3779b97f4a7c15ULL;
  return fallback() ^ mix ^ (mix >> 29);
}

bool FileLock(int fd, int cmd, short type, uint64_t offset, struct flock* fl) {
  std::memset(fl, 0, sizeof(*fl));
  fl->l_type = type;
  fl->l_whence = SEEK_SET;
  fl->l_start = static_cast<off_t>(offset);
  fl->l_len = 1;
  return fcntl(fd, cmd, fl) == 0;
}
}  // namespace

bool MapCore::IsOurFile(int fd) const {
  struct stat st;
  return fd >= 0 && fstat(fd, &st) == 0 && st.st_dev == file_dev_ && st.st_ino == file_ino_;
}

absl::StatusOr<uint64_t> MapCore::ClaimToken() const {
  if (!fork_handlers_installed) {
    return absl::ResourceExhaustedError(
        absl::StrCat("shared map \"", name_,
                     "\": pthread_atfork failed at start-up (no memory): a forked child "
                     "could not tell its holder tokens from its parent's"));
  }
  std::lock_guard<std::mutex> lock(claim_mu);
  const uint64_t generation = fork_generation.load(std::memory_order_acquire);
  if (token_fork_generation_.load(std::memory_order_relaxed) == generation) {
    return token_.load(std::memory_order_relaxed);
  }
  // A new description of the segment (not fd_'s, which a forked child shares with its parent).
  if (!IsOurFile(fd_)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "shared map \"", name_, "\": the handle's file descriptor ", fd_,
        " was closed or now names another file (closed by someone else than the handle)"));
  }
  Fd fd(open(absl::StrCat("/proc/self/fd/", fd_).c_str(), O_RDWR | O_CLOEXEC));
  if (fd.get() < 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "shared map \"", name_, "\": cannot reopen ", path_, " through /proc/self/fd/", fd_,
        " for a holder token (is /proc mounted? did the process lose the rights to open it?): ",
        std::strerror(errno)));
  }
  if (!IsOurFile(fd.get())) {
    return absl::FailedPreconditionError(
        absl::StrCat("shared map \"", name_, "\": /proc/self/fd/", fd_, " reopened another file"));
  }
  const int entry = AddLiveFd(fd.get());
  if (entry < 0) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "shared map \"", name_, "\": this process has ", kMaxLiveFds, " handles open"));
  }
  for (int draw = 0; draw < 64; ++draw) {
    const uint64_t token = kTokenTag | (RandomWord() & kTokenBits);
    struct flock fl;
    if (!FileLock(fd.get(), F_OFD_SETLK, F_WRLCK, TokenByte(token), &fl)) {
      if (errno == EAGAIN || errno == EACCES) continue;  // a live handle's token: draw again
      const int error = errno;
      live_fds[entry].store(0);
      return ErrnoToStatus(error, absl::StrCat("shared map \"", name_, "\": lock a holder token"));
    }
    // A dead holder's token still in a lock word: drawing it again would make that holder look
    // alive (this handle), and its shard would never be repaired. Draw again.
    if (InSomeLockWord(token)) {
      (void)FileLock(fd.get(), F_OFD_SETLK, F_UNLCK, TokenByte(token), &fl);
      continue;
    }
    live_fd_.store(fd.release(), std::memory_order_release);
    live_entry_ = entry;
    live_generation_ = generation;
    token_.store(token, std::memory_order_relaxed);
    token_fork_generation_.store(generation, std::memory_order_release);
    return token;
  }
  live_fds[entry].store(0);
  return absl::ResourceExhaustedError(
      absl::StrCat("shared map \"", name_,
                   "\": 64 random holder tokens in a row were taken (by live handles, or by a "
                   "lock another program holds on the whole file)"));
}

bool MapCore::InSomeLockWord(uint64_t token) const {
  if (Load(&Mut()->lock) == token) return true;
  for (size_t s = 0; s < shard_count_; ++s) {
    if (Load(&Shard(s)->lock) == token) return true;
  }
  return false;
}

void MapCore::ReleaseToken() {
  // In a forked child the fork handler already closed the parent's description (and may have
  // reused its entry): only a description this generation opened is ours to close.
  std::lock_guard<std::mutex> lock(claim_mu);
  if (live_entry_ >= 0 && live_generation_ == fork_generation.load(std::memory_order_acquire)) {
    const int fd = live_fd_.load(std::memory_order_relaxed);
    int expected = fd + 1;
    if (live_fds[live_entry_].compare_exchange_strong(expected, 0)) close(fd);
  }
  live_entry_ = -1;
  live_fd_.store(-1, std::memory_order_relaxed);
}

MapCore::Holder MapCore::HolderState(uint64_t token) const {
  if (token == kLockOrphaned) return Holder::kDead;
  if (!WellFormedLockWord(token) || token == 0) return Holder::kCorrupt;
  if (token == token_.load(std::memory_order_relaxed)) return Holder::kAlive;  // this handle
  // Asked through this handle's own description, once it is known to still be the segment's
  // (a descriptor closed by someone else and its number reused must not make a live holder look
  // dead). Cannot tell: alive (a wait that times out, never a takeover).
  struct flock fl;
  const int fd = live_fd_.load(std::memory_order_acquire);
  if (!IsOurFile(fd) || !FileLock(fd, F_OFD_GETLK, F_WRLCK, TokenByte(token), &fl)) {
    return Holder::kAlive;
  }
  return fl.l_type == F_UNLCK ? Holder::kDead : Holder::kAlive;
}

std::string MapCore::HolderName(uint64_t token) const {
  if (token == kLockOrphaned) return "nobody (a failed repair)";
  return absl::StrCat("holder token ", absl::Hex(token));
}

absl::Status MapCore::LockSegment() const {
  const uint64_t me = Token();
  if (me == 0 || !TryLockWord(&Mut()->lock, me)) [[unlikely]] {
    return LockSlow(kSegment, "lock the segment");
  }
  if (Unfinished(kSegment)) [[unlikely]]
    return RepairHeld(kSegment);
  return absl::OkStatus();
}

absl::Status MapCore::Corrupt(const std::string& what) const {
  return absl::DataLossError(absl::StrCat("shared map \"", name_, "\" (", path_, "): ", what));
}

absl::Status MapCore::CorruptShard(size_t s, const std::string& what) const {
  return Corrupt(absl::StrCat("shard ", s, ": ", what));
}

absl::Status MapCore::LockWordNamesNoHolder(size_t s, uint64_t word, const char* what) const {
  const std::string problem = absl::StrCat(what != nullptr ? what : "", what != nullptr ? ": " : "",
                                           "its lock word (", absl::Hex(word), ") names no holder");
  return s == kSegment ? Corrupt(absl::StrCat("the segment lock: ", problem))
                       : CorruptShard(s, problem);
}

// ---------------------------------------------------------------------------------------------
// Repair. Each runs with the lock it repairs held (taken over from a dead holder, or found with an
// unfinished change) and is idempotent: a repairer killed half-way leaves its own token in the
// lock word, dead in turn, and the next locker starts over.

absl::Status MapCore::RepairSegment() const {
  MutableHeader* m = Mut();
  SegmentLog& log = m->log;
  const uint64_t state = Load(&log.state);
  if (state == kLogIdle) return absl::OkStatus();
  if (state != kLogActive) return Corrupt(absl::StrCat("the segment log's state is ", state));
  const uint64_t count = Load(&log.count);
  if (count > kLogEntries) return Corrupt(absl::StrCat("the segment log has ", count, " entries"));
  // The logged writes may lie past what this handle has mapped (another process grew the segment
  // before it was killed): judge and undo them against the whole segment, mapped first.
  if (!EnsureMapped(Load(&m->file_size))) return Corrupt("cannot map the whole segment to repair");
  const uint64_t limit = mapped_.load(std::memory_order_acquire);
  for (uint64_t i = count; i-- > 0;) {
    const uint64_t offset = Load(&log.offset[i]);
    if (offset % 8 != 0 || offset < kMutableOffset || limit < 8 || offset > limit - 8 ||
        (offset >= kMutableOffset + offsetof(MutableHeader, log) &&
         offset < kMutableOffset + offsetof(MutableHeader, log) + sizeof(SegmentLog))) {
      return Corrupt(absl::StrCat("the segment log names offset ", offset));
    }
  }
  for (uint64_t i = count; i-- > 0;) Store(At<uint64_t>(Load(&log.offset[i])), Load(&log.old[i]));
  Store(&log.state, kLogIdle);
  __atomic_fetch_add(&m->log_rollbacks, 1, __ATOMIC_RELAXED);
  return absl::OkStatus();
}

absl::Status MapCore::RepairShard(size_t s) const {
  CrashPoint(Crash::kRepairStarted);
  ShardHeader* sh = Shard(s);
  {
    // First the segment lock: a killed allocator transaction of this shard is undone before its
    // intent record is read (the transaction writes the record's region fields).
    SegmentLock seg(this);
    if (!seg.ok()) return seg.status();
    const uint64_t state = Load(&sh->intent_state);
    if (state == kIntentSlot) {
      RegionView r;
      const uint64_t word = LoadRelaxed(&sh->region);
      const uint64_t index = Load(&sh->intent_slot);
      if (word == 0 || !View(word, &r) || index > r.mask) {
        return CorruptShard(s, "the intent record names a slot outside the shard's region");
      }
      if (!(LoadRelaxed(&sh->seq) & 1)) Store(&sh->seq, LoadRelaxed(&sh->seq) + 1);
      uint64_t* slot = r.slots + index * slot_words_;
      const uint64_t* image = Image(sh);
      const uint64_t ctrl = Load(image);
      if (ctrl > kTombstone) {
        for (uint32_t i = 0; i < slot_words_; ++i) Store(slot + i, Load(image + i));
      } else {
        Store(slot, ctrl);
      }
      Store(&r.header->count, Load(&sh->intent_count));
      Store(&r.header->tombstones, Load(&sh->intent_tombstones));
      CrashPoint(Crash::kRepairRestored);
      Store(&sh->seq, LoadRelaxed(&sh->seq) + 1);
      Store(&sh->intent_state, kIntentIdle);
      __atomic_fetch_add(&Mut()->slot_rollbacks, 1, __ATOMIC_RELAXED);
    } else if (state == kIntentResize) {
      const bool published = LoadRelaxed(&sh->region) == Load(&sh->intent_new_region) &&
                             Load(&sh->intent_new_region) != Load(&sh->intent_old_region);
      if (absl::Status st = FinishResizeLocked(s); !st.ok()) return st;
      __atomic_fetch_add(published ? &Mut()->resize_completions : &Mut()->resize_rollbacks, 1,
                         __ATOMIC_RELAXED);
    } else if (state != kIntentIdle) {
      return CorruptShard(s, absl::StrCat("unknown intent record state ", state));
    }
  }
  // A Clear() killed after its commit: finish it on this shard (it held every shard's lock, so
  // the shards it had not reached are all owner-dead and come through here).
  const uint64_t epoch = Load(&Mut()->clear_epoch);
  const uint64_t cleared = Load(&sh->cleared_epoch);
  if (cleared > epoch) return CorruptShard(s, "its clear epoch is ahead of the segment's");
  if (cleared < epoch) {
    if (absl::Status st = ClearShardLocked(s, epoch); !st.ok()) return st;
    __atomic_fetch_add(&Mut()->clears_completed, 1, __ATOMIC_RELAXED);
  }
  if (LoadRelaxed(&sh->seq) & 1) Store(&sh->seq, LoadRelaxed(&sh->seq) + 1);
  return absl::OkStatus();
}

// After a resize published or not: frees whichever of the old and new regions is not the
// shard's, and clears the intent, in one logged transaction.
absl::Status MapCore::FinishResizeLocked(size_t s) const {
  ShardHeader* sh = Shard(s);
  const uint64_t current = LoadRelaxed(&sh->region);
  const uint64_t old_word = Load(&sh->intent_old_region);
  const uint64_t new_word = Load(&sh->intent_new_region);
  uint64_t unused;
  if (current == new_word) {
    unused = old_word;
  } else if (current == old_word) {
    unused = new_word;
  } else {
    return CorruptShard(s, "the resize intent names neither the shard's region nor its successor");
  }
  if (unused == 0 || unused == current) {
    Store(&sh->intent_state, kIntentIdle);
    return absl::OkStatus();
  }
  RegionView r;
  if (!View(unused, &r)) return CorruptShard(s, "the resize intent names a region out of bounds");
  const uint32_t log2cap = RegionLog2(unused);
  if (Load(&r.header->magic) != (kRegionMagic | log2cap) || Load(&r.header->owner) != s + 1) {
    return CorruptShard(s, "the region to free is not this shard's");
  }
  MutableHeader* m = Mut();
  RunLogged({{&r.header->next, Load(&m->free_head[log2cap])},
             {&r.header->owner, 0},
             {&m->free_head[log2cap], RegionOffset(unused)},
             {&sh->intent_state, kIntentIdle}},
            /*freeing=*/true);
  if (current == old_word) __atomic_fetch_add(&m->regions_reclaimed, 1, __ATOMIC_RELAXED);
  return absl::OkStatus();
}

void MapCore::RunLogged(std::initializer_list<LoggedWrite> writes, bool freeing) const {
  SegmentLog& log = Mut()->log;
  uint64_t i = 0;
  for (const LoggedWrite& w : writes) {
    Store(&log.offset[i], static_cast<uint64_t>(reinterpret_cast<char*>(w.word) - base_));
    Store(&log.old[i], LoadRelaxed(w.word));
    ++i;
  }
  Store(&log.count, i);
  Store(&log.state, kLogActive);
  CrashPoint(freeing ? Crash::kFreeLogged : Crash::kAllocLogged);
  for (const LoggedWrite& w : writes) Store(w.word, w.value);
  CrashPoint(freeing ? Crash::kFreeApplied : Crash::kAllocApplied);
  Store(&log.state, kLogIdle);
}

// ---------------------------------------------------------------------------------------------
// The allocator and resizing.

absl::Status MapCore::GrowFile(uint64_t end) const {
  MutableHeader* m = Mut();
  const uint64_t size = Load(&m->file_size);
  if (end <= size) return absl::OkStatus();
  // Whole pages (a segment made before max_bytes had to be a multiple of them may end mid-page).
  const uint64_t limit = max_bytes_ / kPageBytes * kPageBytes;
  if (end > limit) {
    return absl::ResourceExhaustedError(
        absl::StrCat("shared map \"", name_, "\": the segment would need ", end,
                     " bytes, more than its max_bytes (", max_bytes_, ")"));
  }
  const uint64_t target = std::min(limit, RoundUp(std::max(end, size + size / 2), kHugePageBytes));
  struct stat st;
  if (fstat(fd_, &st) != 0) return ErrnoToStatus(errno, "shared map: fstat");
  if (static_cast<uint64_t>(st.st_size) < target) {
    if (absl::Status st = AllocateFile(fd_, size, target, name_, path_); !st.ok()) return st;
  }
  CrashPoint(Crash::kGrowTruncated);
  Store(&m->file_size, target);
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> MapCore::AllocRegion(size_t s, uint32_t log2cap) const {
  MutableHeader* m = Mut();
  ShardHeader* sh = Shard(s);
  const uint64_t head = Load(&m->free_head[log2cap]);
  if (head != 0) {
    RegionView r;
    if (!View(RegionWord(head, log2cap), &r) || head % 64 != 0 ||
        Load(&r.header->magic) != (kRegionMagic | log2cap) || Load(&r.header->owner) != 0) {
      return Corrupt(absl::StrCat("free list ", log2cap, " starts with a bad region at ", head));
    }
    const uint64_t word = RegionWord(head, log2cap);
    RunLogged({{&m->free_head[log2cap], Load(&r.header->next)},
               {&r.header->owner, s + 1},
               {&sh->intent_new_region, word}},
              /*freeing=*/false);
    return word;
  }
  const uint64_t offset = Load(&m->alloc_end);
  const uint64_t end = offset + RegionBytes(log2cap, slot_words_);
  if (absl::Status st = GrowFile(end); !st.ok()) return st;
  if (!EnsureMapped(end)) return Corrupt("cannot map the grown segment");
  RegionHeader* header = At<RegionHeader>(offset);  // beyond alloc_end: nobody else looks here
  Store(&header->magic, kRegionMagic | log2cap);
  Store(&header->owner, s + 1);
  Store(&header->next, 0);
  const uint64_t word = RegionWord(offset, log2cap);
  RunLogged({{&m->alloc_end, end}, {&sh->intent_new_region, word}}, /*freeing=*/false);
  return word;
}

absl::Status MapCore::Rebuild(size_t s, uint64_t live_after) const {
  ShardHeader* sh = Shard(s);
  uint32_t log2cap = kMinLog2Capacity;
  while (log2cap <= kMaxLog2Capacity && (uint64_t{1} << log2cap) / 2 < live_after) ++log2cap;
  if (log2cap > kMaxLog2Capacity || RegionBytes(log2cap, slot_words_) > max_bytes_) {
    return absl::ResourceExhaustedError(absl::StrCat("shared map \"", name_, "\": shard ", s,
                                                     " cannot hold ", live_after, " entries"));
  }
  const uint64_t old_word = LoadRelaxed(&sh->region);
  Store(&sh->intent_old_region, old_word);
  Store(&sh->intent_new_region, 0);
  Store(&sh->intent_state, kIntentResize);
  CrashPoint(Crash::kResizeIntent);
  absl::StatusOr<uint64_t> fresh;
  {
    SegmentLock seg(this);
    if (!seg.ok()) {
      Store(&sh->intent_state, kIntentIdle);
      return seg.status();
    }
    fresh = AllocRegion(s, log2cap);
    if (!fresh.ok()) {
      Store(&sh->intent_state, kIntentIdle);
      return fresh.status();
    }
  }
  CrashPoint(Crash::kRegionAllocated);
  RegionView to;
  if (!View(*fresh, &to)) return CorruptShard(s, "the new region is out of bounds");
  PrefaultRegion(to);
  for (uint64_t i = 0; i <= to.mask; ++i) StoreRelaxed(to.slots + i * slot_words_, kEmpty);
  uint64_t count = 0;
  if (old_word != 0) {
    RegionView from;
    if (!View(old_word, &from)) return CorruptShard(s, "the region word is out of bounds");
    for (uint64_t i = 0; i <= from.mask; ++i) {
      const uint64_t* src = from.slots + i * slot_words_;
      const uint64_t ctrl = LoadRelaxed(src);
      if (ctrl <= kTombstone) continue;
      uint64_t j = ctrl & to.mask;
      for (uint64_t n = 0; LoadRelaxed(to.slots + j * slot_words_) != kEmpty; ++n) {
        if (n > to.mask) return CorruptShard(s, "more entries than its region's count");
        j = (j + 1) & to.mask;
      }
      uint64_t* dst = to.slots + j * slot_words_;
      for (uint32_t w = 1; w < slot_words_; ++w) StoreRelaxed(dst + w, LoadRelaxed(src + w));
      StoreRelaxed(dst, ctrl);
      ++count;
    }
  }
  Store(&to.header->count, count);
  Store(&to.header->tombstones, 0);
  CrashPoint(Crash::kRegionFilled);
  Store(&sh->seq, LoadRelaxed(&sh->seq) + 1);
  Store(&sh->region, *fresh);
  Store(&sh->seq, LoadRelaxed(&sh->seq) + 1);
  CrashPoint(Crash::kRegionPublished);
  SegmentLock seg(this);
  if (!seg.ok()) return seg.status();  // the intent stays: the next repair frees the old region
  return FinishResizeLocked(s);
}

// Empties one shard (lock held; its seq may already be odd, as Clear() leaves it): publishes "no
// region", frees the old one, records the epoch.
absl::Status MapCore::ClearShardLocked(size_t s, uint64_t epoch) const {
  ShardHeader* sh = Shard(s);
  const uint64_t old_word = LoadRelaxed(&sh->region);
  if (old_word != 0) {
    Store(&sh->intent_old_region, old_word);
    Store(&sh->intent_new_region, 0);
    Store(&sh->intent_state, kIntentResize);
    if (!(LoadRelaxed(&sh->seq) & 1)) Store(&sh->seq, LoadRelaxed(&sh->seq) + 1);
    Store(&sh->region, 0);
    SegmentLock seg(this);
    if (!seg.ok()) return seg.status();
    if (absl::Status st = FinishResizeLocked(s); !st.ok()) return st;
  }
  Store(&sh->cleared_epoch, epoch);
  if (LoadRelaxed(&sh->seq) & 1) Store(&sh->seq, LoadRelaxed(&sh->seq) + 1);
  CrashPoint(Crash::kClearShardDone);
  return absl::OkStatus();
}

absl::Status MapCore::Clear() {
  // Every shard locked (in index order, as Check), every one marked odd, then one store commits
  // the clear: a kill after it is finished by the repair of each shard still locked.
  std::vector<std::unique_ptr<ShardLock>> locks;
  locks.reserve(shard_count_);
  for (size_t s = 0; s < shard_count_; ++s) {
    locks.push_back(std::make_unique<ShardLock>(this, s, "clear"));
    if (!locks.back()->ok()) return locks.back()->status();
  }
  MutableHeader* m = Mut();
  const uint64_t epoch = Load(&m->clear_epoch) + 1;
  for (size_t s = 0; s < shard_count_; ++s) {
    ShardHeader* sh = Shard(s);
    if (!(LoadRelaxed(&sh->seq) & 1)) Store(&sh->seq, LoadRelaxed(&sh->seq) + 1);
  }
  CrashPoint(Crash::kClearOdd);
  Store(&m->clear_epoch, epoch);
  CrashPoint(Crash::kClearCommitted);
  absl::Status result;
  for (size_t s = 0; s < shard_count_; ++s) {
    absl::Status st = ClearShardLocked(s, epoch);
    if (!st.ok() && result.ok()) result = st;
    locks[s].reset();
  }
  return result;
}

// ---------------------------------------------------------------------------------------------
// Reads over the whole map.

absl::StatusOr<uint64_t> MapCore::Size() const {
  uint64_t total = 0;
  for (size_t s = 0; s < shard_count_; ++s) {
    ShardHeader* sh = Shard(s);
    bool done = false;
    for (int tries = 0; tries < kReadTries && !done; ++tries) {
      const uint64_t seq = Load(&sh->seq);
      if (seq & 1) {
        CpuRelax();
        continue;
      }
      const uint64_t word = Load(&sh->region);
      uint64_t count = 0;
      RegionView r;
      if (word != 0) {
        if (!View(word, &r)) continue;
        count = Load(&r.header->count);
        if (count > r.mask) continue;  // torn or corrupt: the locked path decides
      }
      if (LoadRelaxed(&sh->seq) == seq) {
        total += count;
        done = true;
      }
    }
    if (!done) {
      ShardLock lock(this, s, "size");
      if (!lock.ok()) return lock.status();
      const uint64_t word = LoadRelaxed(&sh->region);
      RegionView r;
      if (word != 0) {
        if (!View(word, &r)) return CorruptShard(s, "the region word is out of bounds");
        const uint64_t count = LoadRelaxed(&r.header->count);
        if (count > r.mask) return CorruptShard(s, "its region counts more entries than slots");
        total += count;
      }
    }
  }
  return total;
}

absl::Status MapCore::ForEach(const std::function<void(const uint64_t*, const uint64_t*)>& fn,
                              const char* what) const {
  std::vector<uint64_t> chunk;
  const uint32_t entry_words = key_words_ + value_words_;
  for (size_t s = 0; s < shard_count_; ++s) {
    chunk.clear();
    {
      ShardLock lock(this, s, what);
      if (!lock.ok()) return lock.status();
      const uint64_t word = LoadRelaxed(&Shard(s)->region);
      if (word == 0) continue;
      RegionView r;
      if (!View(word, &r)) return CorruptShard(s, "the region word is out of bounds");
      const uint64_t count = LoadRelaxed(&r.header->count);
      if (count > r.mask) return CorruptShard(s, "its region counts more entries than slots");
      chunk.reserve(count * entry_words);
      for (uint64_t i = 0; i <= r.mask; ++i) {
        const uint64_t* slot = r.slots + i * slot_words_;
        if (LoadRelaxed(slot) <= kTombstone) continue;
        for (uint32_t w = 1; w < slot_words_; ++w) chunk.push_back(LoadRelaxed(slot + w));
      }
    }
    for (size_t i = 0; i < chunk.size(); i += entry_words) {
      fn(&chunk[i], &chunk[i + key_words_]);
    }
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------
// Check(): every lock taken (repairing what killed writers left), then every word validated.

absl::Status MapCore::Check() const {
  std::vector<std::unique_ptr<ShardLock>> locks;
  locks.reserve(shard_count_);
  for (size_t s = 0; s < shard_count_; ++s) {
    locks.push_back(std::make_unique<ShardLock>(this, s, "check"));
    if (!locks.back()->ok()) return locks.back()->status();
  }
  SegmentLock seg(this);
  if (!seg.ok()) return seg.status();
  return CheckLocked();
}

absl::Status MapCore::CheckLocked() const {
  const ImmutableHeader* h = Fixed();
  if (ImmutableChecksum(*h) != h->checksum) {
    return Corrupt("the header's checksum no longer matches its immutable fields");
  }
  MutableHeader* m = Mut();
  if (const uint64_t mark = Load(&m->init_pending); mark != 0 && mark != kInitPendingMark) {
    return Corrupt(absl::StrCat("the initialised mark holds ", mark));
  }
  const uint64_t file_size = Load(&m->file_size);
  const uint64_t alloc_end = Load(&m->alloc_end);
  if (file_size > max_bytes_ || alloc_end > file_size || alloc_end < data_offset_ ||
      alloc_end % 64 != 0) {
    return Corrupt(absl::StrCat("allocator bounds: alloc_end ", alloc_end, ", file_size ",
                                file_size, ", max_bytes ", max_bytes_));
  }
  if (Load(&m->log.state) != kLogIdle) return Corrupt("the segment log is still active");
  if (!EnsureMapped(alloc_end)) return Corrupt("cannot map the whole segment");

  struct Region {
    uint64_t offset;
    uint32_t log2cap;
    uint64_t owner;
    bool seen;
  };
  std::vector<Region> regions;
  for (uint64_t offset = data_offset_; offset < alloc_end;) {
    if (offset + kRegionHeaderBytes > alloc_end) {
      return Corrupt(absl::StrCat("a region header at ", offset, " crosses alloc_end"));
    }
    const RegionHeader* r = At<RegionHeader>(offset);
    const uint64_t magic = Load(&r->magic);
    const uint32_t log2cap = static_cast<uint32_t>(magic & 0xffffffff);
    if ((magic & ~uint64_t{0xffffffff}) != kRegionMagic || log2cap < kMinLog2Capacity ||
        log2cap > kMaxLog2Capacity) {
      return Corrupt(absl::StrCat("no region header at ", offset));
    }
    const uint64_t bytes = RegionBytes(log2cap, slot_words_);
    if (offset + bytes > alloc_end) {
      return Corrupt(absl::StrCat("the region at ", offset, " crosses alloc_end"));
    }
    const uint64_t owner = Load(&r->owner);
    if (owner > shard_count_) {
      return Corrupt(absl::StrCat("the region at ", offset, " names owner ", owner));
    }
    regions.push_back({offset, log2cap, owner, false});
    offset += bytes;
  }
  auto find = [&](uint64_t offset) -> Region* {
    auto it = std::lower_bound(regions.begin(), regions.end(), offset,
                               [](const Region& r, uint64_t o) { return r.offset < o; });
    return it != regions.end() && it->offset == offset ? &*it : nullptr;
  };
  for (uint32_t log2cap = 0; log2cap < kFreeLists; ++log2cap) {
    uint64_t p = Load(&m->free_head[log2cap]);
    for (size_t steps = 0; p != 0; ++steps) {
      Region* r = find(p);
      if (r == nullptr || steps > regions.size()) {
        return Corrupt(absl::StrCat("free list ", log2cap, " leads to ", p,
                                    r == nullptr ? ", no region" : ", a cycle"));
      }
      if (r->log2cap != log2cap || r->owner != 0 || r->seen) {
        return Corrupt(absl::StrCat("free list ", log2cap, " holds the region at ", p, " (2^",
                                    r->log2cap, " slots, owner ", r->owner,
                                    r->seen ? ", listed twice)" : ")"));
      }
      r->seen = true;
      p = Load(&At<RegionHeader>(p)->next);
    }
  }
  std::vector<uint64_t> shard_region(shard_count_, 0);
  for (size_t s = 0; s < shard_count_; ++s) {
    const uint64_t word = LoadRelaxed(&Shard(s)->region);
    if (word == 0) continue;
    Region* r = find(RegionOffset(word));
    if (r == nullptr || r->log2cap != RegionLog2(word) || r->owner != s + 1) {
      return CorruptShard(s, absl::StrCat("its region word ", word, " names no region of its own"));
    }
    shard_region[s] = r->offset;
  }
  for (const Region& r : regions) {
    if (r.owner == 0 && !r.seen) {
      return Corrupt(absl::StrCat("the free region at ", r.offset, " is on no free list"));
    }
    if (r.owner != 0 && shard_region[r.owner - 1] != r.offset) {
      return Corrupt(absl::StrCat("the region at ", r.offset, " belongs to shard ", r.owner - 1,
                                  ", which does not use it (leaked)"));
    }
  }
  for (size_t s = 0; s < shard_count_; ++s) {
    if (absl::Status st = CheckShard(s); !st.ok()) return st;
  }
  return absl::OkStatus();
}

absl::Status MapCore::CheckShard(size_t s) const {
  ShardHeader* sh = Shard(s);
  if (LoadRelaxed(&sh->seq) & 1) return CorruptShard(s, "its sequence is odd while unlocked");
  if (Load(&sh->intent_state) != kIntentIdle) return CorruptShard(s, "its intent is not idle");
  if (Load(&sh->cleared_epoch) != Load(&Mut()->clear_epoch)) {
    return CorruptShard(s, "it missed a Clear()");
  }
  const uint64_t word = LoadRelaxed(&sh->region);
  if (word == 0) return absl::OkStatus();
  RegionView r;
  if (!View(word, &r)) return CorruptShard(s, "the region word is out of bounds");
  uint64_t full = 0;
  uint64_t tombstones = 0;
  for (uint64_t i = 0; i <= r.mask; ++i) {
    const uint64_t* slot = r.slots + i * slot_words_;
    const uint64_t ctrl = LoadRelaxed(slot);
    if (ctrl == kEmpty) continue;
    if (ctrl == kTombstone) {
      ++tombstones;
      continue;
    }
    ++full;
    const uint64_t* key = slot + 1;
    if (CtrlOf(HashWords(key, key_words_)) != ctrl) {
      return CorruptShard(s,
                          absl::StrCat("slot ", i, ": the key does not hash to its control word"));
    }
    if (ShardOf(ctrl) != s)
      return CorruptShard(s, absl::StrCat("slot ", i, ": another shard's key"));
    // Reachable from its home slot, and the first copy of its key on the way.
    for (uint64_t j = ctrl & r.mask; j != i; j = (j + 1) & r.mask) {
      const uint64_t* other = r.slots + j * slot_words_;
      const uint64_t c = LoadRelaxed(other);
      if (c == kEmpty) {
        return CorruptShard(
            s, absl::StrCat("slot ", i, ": unreachable (empty slot ", j, " on its probe path)"));
      }
      if (c == ctrl && std::memcmp(other + 1, key, 8ull * key_words_) == 0) {
        return CorruptShard(s, absl::StrCat("slots ", j, " and ", i, " hold the same key"));
      }
    }
    if (layout_.key.valid != nullptr && !layout_.key.valid(key)) {
      return CorruptShard(
          s, absl::StrCat("slot ", i, ": the key is not a valid ", Demangled(layout_.key.mangled)));
    }
    if (layout_.value.valid != nullptr && !layout_.value.valid(key + key_words_)) {
      return CorruptShard(s, absl::StrCat("slot ", i, ": the value is not a valid ",
                                          Demangled(layout_.value.mangled)));
    }
  }
  if (full != Load(&r.header->count) || tombstones != Load(&r.header->tombstones)) {
    return CorruptShard(s, absl::StrCat("its region counts ", Load(&r.header->count),
                                        " entries and ", Load(&r.header->tombstones),
                                        " tombstones; its slots hold ", full, " and ", tombstones));
  }
  if (full + tombstones > MaxLoad(r.log2cap)) {
    return CorruptShard(s, "its region is fuller than the load limit");
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------
// Segments: names, files, mapping.

absl::Status MapCore::ValidateName(std::string_view name_view) {
  const std::string name(name_view);
  if (name.empty() || name.size() > kMaxNameBytes) {
    return absl::InvalidArgumentError(absl::StrCat("shared map name \"", name, "\": ", name.size(),
                                                   " bytes; names have 1 to ", kMaxNameBytes));
  }
  if (name[0] == '.') {
    return absl::InvalidArgumentError(
        absl::StrCat("shared map name \"", name, "\": must not start with '.'"));
  }
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) {
      return absl::InvalidArgumentError(absl::StrCat(
          "shared map name \"", name, "\": only letters, digits, '.', '_' and '-' are allowed (",
          absl::StrFormat("byte 0x%02x", static_cast<unsigned char>(c)), " is not)"));
    }
  }
  return absl::OkStatus();
}

namespace {

std::string DirectoryOf(const SharedMapOptions& options) {
  return options.directory.empty() ? std::string("/dev/shm") : options.directory;
}

absl::StatusOr<int> OpenDirectory(const std::string& dir) {
  int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ErrnoToStatus(errno, absl::StrCat("shared map: open directory ", dir));
  return fd;
}

absl::Status ValidateOptions(const SharedMapOptions& options) {
  if (options.shards == 0 || options.shards > kMaxShards ||
      (options.shards & (options.shards - 1)) != 0) {
    return absl::InvalidArgumentError(absl::StrCat("shared map options: shards = ", options.shards,
                                                   "; a power of two, 1 to ", kMaxShards));
  }
  if (options.max_bytes < kMinMaxBytes || options.max_bytes > kMaxMaxBytes ||
      (options.mode != SharedMapOptions::Mode::kOpen && options.max_bytes % kPageBytes != 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("shared map options: max_bytes = ", options.max_bytes,
                     "; 1 MiB to 1 TiB, a multiple of 4096"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status MapCore::Remove(std::string_view name, const SharedMapOptions& options) {
  if (absl::Status st = ValidateName(name); !st.ok()) return st;
  absl::StatusOr<int> dir = OpenDirectory(DirectoryOf(options));
  if (!dir.ok()) return dir.status();
  Fd dirfd(*dir);
  std::string n(name);
  if (unlinkat(dirfd.get(), n.c_str(), 0) != 0) {
    return ErrnoToStatus(errno, absl::StrCat("shared map \"", n, "\": remove"));
  }
  return absl::OkStatus();
}

namespace {

// A new, nameless file in the directory for a segment being made (O_TMPFILE: a creator killed
// before linking it leaves nothing behind), and how to give it `name` (linkat through
// /proc/self/fd). Where the file system or the kernel has no O_TMPFILE, or /proc is not mounted,
// the file is made under a hidden temporary name instead; a creator killed then leaves that file.
class NewSegmentFile {
 public:
  static absl::StatusOr<NewSegmentFile> Make(int dirfd, const std::string& name) {
    NewSegmentFile f(dirfd);
    const int fd = openat(dirfd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd >= 0 && access("/proc/self/fd", X_OK) == 0) {
      f.fd_ = Fd(fd);
      return f;
    }
    if (fd >= 0) close(fd);
    // The temporary name must not repeat another program's, nor one a killed creator left
    // behind: a pid alone repeats (a restarted program in a container often has the same pid,
    // and programs in other pid namespaces share /dev/shm), so the name carries 64 random bits
    // too, and a name taken after all is skipped.
    static const uint64_t token = [] {
      std::random_device rd;
      return (uint64_t{rd()} << 32) ^ rd();
    }();
    static std::atomic<uint64_t> counter{0};
    for (int attempt = 0;; ++attempt) {
      f.temp_ = absl::StrCat(".", name, ".", getpid(), "-", absl::Hex(token, absl::kZeroPad16), "-",
                             counter.fetch_add(1, std::memory_order_relaxed), ".tmp");
      const int raw =
          openat(dirfd, f.temp_.c_str(), O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
      if (raw >= 0) {
        f.fd_ = Fd(raw);
        return f;
      }
      if (errno != EEXIST || attempt >= 100) {
        const int error = errno;
        const std::string temp = std::exchange(f.temp_, std::string());  // not ours to unlink
        return ErrnoToStatus(error, absl::StrCat("shared map \"", name, "\": create ", temp));
      }
    }
  }
  NewSegmentFile(NewSegmentFile&& other) noexcept
      : dirfd_(other.dirfd_),
        temp_(std::exchange(other.temp_, std::string())),
        fd_(std::move(other.fd_)) {}
  NewSegmentFile& operator=(NewSegmentFile&&) = delete;
  ~NewSegmentFile() {
    if (!temp_.empty()) unlinkat(dirfd_, temp_.c_str(), 0);
  }
  int fd() const { return fd_.get(); }
  // Links the file as `name`: true; false when the name exists (another creator's).
  absl::StatusOr<bool> Link(const std::string& name) {
    const int rc = temp_.empty()
                       ? linkat(AT_FDCWD, absl::StrCat("/proc/self/fd/", fd_.get()).c_str(), dirfd_,
                                name.c_str(), AT_SYMLINK_FOLLOW)
                       : linkat(dirfd_, temp_.c_str(), dirfd_, name.c_str(), 0);
    if (rc == 0) return true;
    if (errno == EEXIST) return false;
    return ErrnoToStatus(errno, absl::StrCat("shared map \"", name, "\": link"));
  }
  int release() { return fd_.release(); }

 private:
  explicit NewSegmentFile(int dirfd) : dirfd_(dirfd) {}
  int dirfd_;
  std::string temp_;  // empty: an O_TMPFILE file
  Fd fd_;
};

// Makes a complete segment in a file with no name and links it in place: another process sees no
// segment or a whole one, never a half-written header. The descriptor of the segment it linked,
// or -1 (and no error) when the name was taken meanwhile.
absl::StatusOr<int> CreateSegment(int dirfd, const std::string& name,
                                  const SharedMapOptions& options, const LayoutDesc& layout) {
  absl::StatusOr<NewSegmentFile> file = NewSegmentFile::Make(dirfd, name);
  if (!file.ok()) return file.status();
  const uint32_t key_words = WordsOf(layout.key.size);
  const uint32_t value_words = WordsOf(layout.value.size);
  const uint32_t slot_words = 1 + key_words + value_words;
  const uint64_t stride = ShardStride(slot_words);
  const uint64_t data_offset = RoundUp(kShardsOffset + options.shards * stride, 64);
  const uint64_t file_size = RoundUp(data_offset, kGrowQuantum);
  if (file_size > options.max_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("shared map \"", name, "\": max_bytes ",
                                                   options.max_bytes, " is below the ", file_size,
                                                   " bytes its shard headers need"));
  }
  if (absl::Status st = AllocateFile(file->fd(), 0, file_size, name, "the new segment"); !st.ok())
    return st;
  void* mem = mmap(nullptr, data_offset, PROT_READ | PROT_WRITE, MAP_SHARED, file->fd(), 0);
  if (mem == MAP_FAILED)
    return ErrnoToStatus(errno, absl::StrCat("shared map \"", name, "\": map"));
  char* base = static_cast<char*>(mem);
  auto* h = reinterpret_cast<ImmutableHeader*>(base);
  std::memset(h, 0, sizeof(*h));
  h->magic = kMagic;
  h->version = kFormatVersion;
  h->kind = static_cast<uint32_t>(layout.kind);
  h->shard_count = options.shards;
  h->shard_stride = static_cast<uint32_t>(stride);
  h->key_size = layout.key.size;
  h->key_align = layout.key.align;
  h->value_size = layout.value.size;
  h->value_align = layout.value.align;
  h->key_words = key_words;
  h->value_words = value_words;
  h->key_tag = TypeTag(layout.key);
  h->value_tag = TypeTag(layout.value);
  PutTypeName(layout.key, h->key_name);
  PutTypeName(layout.value, h->value_name);
  h->data_offset = data_offset;
  h->max_bytes = options.max_bytes;
  timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  h->created_unix_ns = static_cast<uint64_t>(now.tv_sec) * 1'000'000'000 + now.tv_nsec;
  h->checksum = ImmutableChecksum(*h);
  auto* m = reinterpret_cast<MutableHeader*>(base + kMutableOffset);
  // The segment's and the shards' lock words start at zero (free).
  m->file_size = file_size;
  m->alloc_end = data_offset;
  m->init_pending = options.create_uninitialised ? kInitPendingMark : 0;
  munmap(mem, data_offset);
  CrashPoint(Crash::kSegmentMade);
  absl::StatusOr<bool> linked = file->Link(name);
  if (!linked.ok()) return linked.status();
  return *linked ? file->release() : -1;
}

}  // namespace

absl::StatusOr<std::shared_ptr<MapCore>> MapCore::Open(std::string_view name_view,
                                                       const SharedMapOptions& options,
                                                       const LayoutDesc& layout) {
  if (absl::Status st = ValidateName(name_view); !st.ok()) return st;
  if (absl::Status st = ValidateOptions(options); !st.ok()) return st;
  const std::string name(name_view);
  const std::string dir = DirectoryOf(options);
  absl::StatusOr<int> dir_fd = OpenDirectory(dir);
  if (!dir_fd.ok()) return dir_fd.status();
  Fd dirfd(*dir_fd);
  std::shared_ptr<MapCore> core(new MapCore());
  core->name_ = name;
  core->path_ = absl::StrCat(dir, "/", name);
  core->file_backed_ = !options.directory.empty();
  core->lock_timeout_ = options.lock_timeout;
  for (int attempt = 0; attempt < 8; ++attempt) {
    int fd = openat(dirfd.get(), name.c_str(), O_RDWR | O_NOFOLLOW | O_CLOEXEC);
    if (fd >= 0) {
      Fd owned(fd);
      if (options.mode == SharedMapOptions::Mode::kCreate) {
        return absl::AlreadyExistsError(
            absl::StrCat("shared map \"", name, "\": ", core->path_, " exists"));
      }
      if (absl::Status st = core->Attach(owned.release(), /*created=*/false, layout); !st.ok()) {
        return st;
      }
      return core;
    }
    const int error = errno;
    if (error == EISDIR) {
      return absl::FailedPreconditionError(absl::StrCat("shared map \"", name, "\": ", core->path_,
                                                        " is a directory, not a regular file"));
    }
    if (error == ELOOP) {
      return absl::FailedPreconditionError(absl::StrCat("shared map \"", name, "\": ", core->path_,
                                                        " is a symbolic link (not followed)"));
    }
    if (error != ENOENT) {
      return ErrnoToStatus(error, absl::StrCat("shared map \"", name, "\": open ", core->path_));
    }
    if (options.mode == SharedMapOptions::Mode::kOpen) {
      return absl::NotFoundError(
          absl::StrCat("shared map \"", name, "\": no segment ", core->path_));
    }
    absl::StatusOr<int> made = CreateSegment(dirfd.get(), name, options, layout);
    if (!made.ok()) return made.status();
    if (*made >= 0) {
      // The file this call made, attached through its own descriptor (not re-opened by name,
      // which another program may have removed and made again meanwhile).
      if (absl::Status st = core->Attach(*made, /*created=*/true, layout); !st.ok()) return st;
      return core;
    }
    if (options.mode == SharedMapOptions::Mode::kCreate) {
      return absl::AlreadyExistsError(
          absl::StrCat("shared map \"", name, "\": ", core->path_, " exists"));
    }
  }
  return absl::UnavailableError(
      absl::StrCat("shared map \"", name, "\": ", core->path_, " keeps appearing and vanishing"));
}

absl::Status MapCore::Attach(int fd, bool created, const LayoutDesc& layout) {
  fd_ = fd;
  created_ = created;
  layout_ = layout;
  struct stat st;
  if (fstat(fd_, &st) != 0) return ErrnoToStatus(errno, absl::StrCat("shared map: fstat ", path_));
  if (!S_ISREG(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat("shared map \"", name_, "\": ", path_, " is not a regular file"));
  }
  if (st.st_uid != geteuid()) {
    return absl::FailedPreconditionError(absl::StrCat("shared map \"", name_, "\": ", path_,
                                                      " is owned by uid ", st.st_uid,
                                                      ", not by this process's uid ", geteuid()));
  }
  if ((st.st_mode & 022) != 0) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "shared map \"%s\": %s has mode 0%o: other users may write it (segments are 0600)", name_,
        path_, st.st_mode & 07777));
  }
  if (static_cast<uint64_t>(st.st_size) < kHeaderBytes) {
    return Corrupt(
        absl::StrCat("truncated: ", st.st_size, " bytes, the header alone needs ", kHeaderBytes));
  }
  alignas(64) char page[kHeaderBytes];
  if (pread(fd_, page, kHeaderBytes, 0) != static_cast<ssize_t>(kHeaderBytes)) {
    return Corrupt("the header cannot be read");
  }
  ImmutableHeader h;
  std::memcpy(&h, page, sizeof(h));
  if (h.magic != kMagic) {
    return Corrupt(absl::StrFormat("not a shared-map segment (magic 0x%016x)", h.magic));
  }
  if (h.version != kFormatVersion) {
    return absl::FailedPreconditionError(
        absl::StrCat("shared map \"", name_, "\" (", path_, "): format version ", h.version,
                     "; this build reads version ", kFormatVersion));
  }
  if (ImmutableChecksum(h) != h.checksum) return Corrupt("the header's checksum does not match");
  // The checksum held: the fields below are as their creator wrote them, unless a writer of
  // another build forged them. They are validated all the same (no open trusts a file).
  const uint32_t slot_words = 1 + h.key_words + h.value_words;
  if (h.shard_count == 0 || h.shard_count > kMaxShards ||
      (h.shard_count & (h.shard_count - 1)) != 0 || h.key_size == 0 ||
      h.key_size > kMaxStorableBytes || h.value_size == 0 || h.value_size > kMaxStorableBytes ||
      h.key_words != WordsOf(h.key_size) || h.value_words != WordsOf(h.value_size) ||
      h.shard_stride != ShardStride(slot_words) ||
      h.data_offset != RoundUp(kShardsOffset + uint64_t{h.shard_count} * h.shard_stride, 64) ||
      h.max_bytes < kMinMaxBytes || h.max_bytes > kMaxMaxBytes ||
      h.key_name[kTypeNameBytes - 1] != 0 || h.value_name[kTypeNameBytes - 1] != 0) {
    return Corrupt("the header's layout fields are inconsistent");
  }
  if (h.kind != static_cast<uint32_t>(layout.kind)) {
    return absl::InvalidArgumentError(
        absl::StrCat("shared map \"", name_, "\" (", path_, "): holds a table of kind ", h.kind,
                     ", opened as kind ", static_cast<uint32_t>(layout.kind)));
  }
  const std::string want_key = Demangled(layout.key.mangled);
  const std::string want_value = Demangled(layout.value.mangled);
  if (h.key_tag != TypeTag(layout.key) || h.key_size != layout.key.size ||
      h.key_align != layout.key.align || h.value_tag != TypeTag(layout.value) ||
      h.value_size != layout.value.size || h.value_align != layout.value.align) {
    return absl::InvalidArgumentError(
        absl::StrCat("shared map \"", name_, "\" (", path_, "): holds <", StoredName(h.key_name),
                     " (", h.key_size, " bytes), ", StoredName(h.value_name), " (", h.value_size,
                     " bytes)>, opened as <", want_key, " (", layout.key.size, " bytes), ",
                     want_value, " (", layout.value.size, " bytes)>"));
  }
  MutableHeader m;
  std::memcpy(static_cast<void*>(&m), page + kMutableOffset, sizeof(m));
  if (fstat(fd_, &st) != 0) return ErrnoToStatus(errno, absl::StrCat("shared map: fstat ", path_));
  file_dev_ = st.st_dev;
  file_ino_ = st.st_ino;
  if (m.file_size % kPageBytes != 0 || m.file_size < h.data_offset || m.file_size > h.max_bytes ||
      m.alloc_end < h.data_offset || m.alloc_end > m.file_size || m.alloc_end % 64 != 0) {
    return Corrupt(absl::StrCat("the allocator's bounds are inconsistent (file_size ", m.file_size,
                                ", alloc_end ", m.alloc_end, ", max_bytes ", h.max_bytes, ")"));
  }
  if (static_cast<uint64_t>(st.st_size) < m.file_size) {
    return Corrupt(
        absl::StrCat("truncated: the file has ", st.st_size, " bytes, the segment ", m.file_size));
  }
  shard_count_ = h.shard_count;
  shard_bits_ = static_cast<uint32_t>(__builtin_ctz(h.shard_count));
  shard_stride_ = h.shard_stride;
  key_words_ = h.key_words;
  value_words_ = h.value_words;
  slot_words_ = slot_words;
  data_offset_ = h.data_offset;
  max_bytes_ = h.max_bytes;

  // Reserved 2 MiB-aligned (huge pages, see kHugePageBytes): a larger reservation, trimmed.
  const uint64_t keep = RoundUp(max_bytes_, kHugePageBytes);
  void* reserved = mmap(nullptr, keep + kHugePageBytes, PROT_NONE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (reserved == MAP_FAILED) {
    return absl::ResourceExhaustedError(absl::StrCat("shared map \"", name_, "\": cannot reserve ",
                                                     max_bytes_, " bytes of address space"));
  }
  char* const start = static_cast<char*>(reserved);
  base_ = start + (RoundUp(reinterpret_cast<uintptr_t>(start), kHugePageBytes) -
                   reinterpret_cast<uintptr_t>(start));
  if (base_ > start) munmap(start, static_cast<size_t>(base_ - start));
  munmap(base_ + keep, static_cast<size_t>(start + kHugePageBytes - base_));
  reserved_ = keep;
  if (!MapFile(0, m.file_size)) {
    return ErrnoToStatus(errno, absl::StrCat("shared map \"", name_, "\": map ", path_));
  }
  mapped_.store(m.file_size, std::memory_order_release);

  if (const uint64_t word = Load(&Mut()->lock); !WellFormedLockWord(word)) {
    return LockWordNamesNoHolder(kSegment, word);
  }
  for (size_t s = 0; s < shard_count_; ++s) {
    if (const uint64_t word = Load(&Shard(s)->lock); !WellFormedLockWord(word)) {
      return LockWordNamesNoHolder(s, word);
    }
  }
  if (absl::StatusOr<uint64_t> token = ClaimToken(); !token.ok()) return token.status();
  if (absl::Status st = Reclaim(); !st.ok()) return st;
  __atomic_fetch_add(&Mut()->opens, 1, __ATOMIC_RELAXED);
  return absl::OkStatus();
}

// Repairs whatever killed processes left locked (a live holder is left alone; a dead one's shard
// is taken over and repaired, as is a free shard with an unfinished change). This is where the
// space a killed resize held returns to the free lists.
absl::Status MapCore::Reclaim() {
  const uint64_t me = token_.load(std::memory_order_relaxed);
  // The segment first (a shard's repair takes the segment lock).
  std::vector<size_t> words = {kSegment};
  for (size_t s = 0; s < shard_count_; ++s) words.push_back(s);
  for (size_t s : words) {
    uint64_t* const lock = LockWord(s);
    const uint64_t held = Load(lock);
    if (held == 0) {
      if (!Unfinished(s) || !TryLockWord(lock, me)) continue;
      if (absl::Status st = RepairHeld(s); !st.ok()) return st;
      UnlockWord(lock);
      continue;
    }
    switch (HolderState(held)) {
      case Holder::kAlive:
        continue;
      case Holder::kCorrupt:
        return LockWordNamesNoHolder(s, held);
      case Holder::kDead: {
        absl::Status st;
        if (!TakeOverDead(s, held, me, &st)) continue;  // another opener took it over
        if (!st.ok()) return st;
        UnlockWord(lock);
        continue;
      }
    }
  }
  return absl::OkStatus();
}

MapCore::~MapCore() {
  ReleaseToken();
  if (base_ != nullptr) munmap(base_, reserved_);
  if (fd_ >= 0) close(fd_);
}

bool MapCore::MapFile(uint64_t from, uint64_t to) const {
  if (mmap(base_ + from, to - from, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd_,
           static_cast<off_t>(from)) == MAP_FAILED) {
    return false;
  }
  // Huge pages where the file system gives them on request (tmpfs huge=advise); elsewhere the
  // kernel ignores or refuses it, and 4 KiB pages serve.
  (void)madvise(base_ + from, to - from, MADV_HUGEPAGE);
  return true;
}

void MapCore::PrefaultRegion(const RegionView& r) const {
  // The pages the rebuild is about to write, faulted in by one call instead of one trap each (a
  // sixth of an insert-heavy run's time went to page faults). A hint: where the kernel lacks
  // MADV_POPULATE_WRITE (before 5.14) the writes fault the pages in as before.
  const uintptr_t start = reinterpret_cast<uintptr_t>(r.header) / kPageBytes * kPageBytes;
  const uintptr_t end =
      RoundUp(reinterpret_cast<uintptr_t>(r.slots + (r.mask + 1) * slot_words_), kPageBytes);
  (void)madvise(reinterpret_cast<void*>(start), end - start, kPopulateWrite);
}

bool MapCore::EnsureMapped(uint64_t end) const {
  if (end <= mapped_.load(std::memory_order_acquire)) return true;
  std::lock_guard<std::mutex> lock(map_mu_);
  const uint64_t mapped = mapped_.load(std::memory_order_relaxed);
  if (end <= mapped) return true;
  const uint64_t size = Load(&Mut()->file_size);
  if (end > size || size > reserved_ || size % kPageBytes != 0) return false;
  struct stat st;
  if (fstat(fd_, &st) != 0 || static_cast<uint64_t>(st.st_size) < size) return false;
  if (!MapFile(mapped, size)) return false;
  mapped_.store(size, std::memory_order_release);
  return true;
}

absl::Status MapCore::Sync() const {
  if (!file_backed_) return absl::OkStatus();
  if (msync(base_, mapped_.load(std::memory_order_acquire), MS_SYNC) != 0) {
    return ErrnoToStatus(errno, absl::StrCat("shared map \"", name_, "\": msync"));
  }
  if (fsync(fd_) != 0)
    return ErrnoToStatus(errno, absl::StrCat("shared map \"", name_, "\": fsync"));
  // And the directory: the segment's name (linked when it was made) survives a power loss too.
  const std::string dir = path_.substr(0, path_.rfind('/'));
  absl::StatusOr<int> dirfd = OpenDirectory(dir);
  if (!dirfd.ok()) return dirfd.status();
  Fd owned(*dirfd);
  if (fsync(owned.get()) != 0) {
    return ErrnoToStatus(errno, absl::StrCat("shared map \"", name_, "\": fsync ", dir));
  }
  return absl::OkStatus();
}

SharedMapInfo MapCore::Info() const {
  const MutableHeader* m = Mut();
  SharedMapInfo info;
  info.name = name_;
  info.path = path_;
  info.file_backed = file_backed_;
  info.created = created_;
  info.shards = shard_count_;
  info.file_bytes = Load(&m->file_size);
  info.allocated_bytes = Load(&m->alloc_end);
  info.max_bytes = max_bytes_;
  info.opens = Load(&m->opens);
  info.slot_rollbacks = Load(&m->slot_rollbacks);
  info.resize_rollbacks = Load(&m->resize_rollbacks);
  info.resize_completions = Load(&m->resize_completions);
  info.clears_completed = Load(&m->clears_completed);
  info.log_rollbacks = Load(&m->log_rollbacks);
  info.regions_reclaimed = Load(&m->regions_reclaimed);
  return info;
}

}  // namespace etsmgr::shared_internal
