#include "etsmgr/table/shared/shared_claim.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "etsmgr/base/errno_status.h"
#include "etsmgr/base/mutex.h"
#include "etsmgr/table/shared/internal/map_core.h"

namespace etsmgr {

namespace {
// The lock files (device, inode) this program holds: how a refused Acquire knows the holder is
// this program. The pid written into the file cannot say so: a program in another pid namespace
// (a container, a sandboxed test) may have the same pid as this one.
struct HeldClaims {
  Mutex mu;
  absl::flat_hash_set<std::pair<uint64_t, uint64_t>> files ABSL_GUARDED_BY(mu);
};
HeldClaims& Held() {
  static HeldClaims* held = new HeldClaims;
  return *held;
}
bool HeldHere(std::pair<uint64_t, uint64_t> file) {
  HeldClaims& h = Held();
  ExclusiveLock lock(h.mu);
  return h.files.contains(file);
}
}  // namespace

SharedClaim::SharedClaim(SharedClaim&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)),
      file_(other.file_),
      registered_(std::exchange(other.registered_, false)),
      path_(std::move(other.path_)) {}

SharedClaim& SharedClaim::operator=(SharedClaim&& other) noexcept {
  if (this != &other) {
    Release();
    fd_ = std::exchange(other.fd_, -1);
    file_ = other.file_;
    registered_ = std::exchange(other.registered_, false);
    path_ = std::move(other.path_);
  }
  return *this;
}

void SharedClaim::Release() {
  if (fd_ < 0) return;
  if (registered_) {
    HeldClaims& h = Held();
    ExclusiveLock lock(h.mu);
    h.files.erase(file_);
    registered_ = false;
  }
  close(std::exchange(fd_, -1));
}

void SharedClaim::Remove() {
  if (fd_ >= 0) unlink(path_.c_str());
  Release();
}

namespace {
// The claim is an open-file-description lock on the lock file's first byte: the kernel drops it
// when the last descriptor of the description closes (the program dies, however it dies). A probe
// asks with F_OFD_GETLK, which takes nothing: a probe never makes a claim fail (a probe that took
// the lock for a moment, as flock() must, made a concurrent Acquire answer AlreadyExists).
bool ClaimLock(int fd, int cmd, short type, struct flock* fl) {
  *fl = {};
  fl->l_type = type;
  fl->l_whence = SEEK_SET;
  fl->l_start = 0;
  fl->l_len = 1;
  return fcntl(fd, cmd, fl) == 0;
}

std::string LockPath(std::string_view name, const SharedMapOptions& options) {
  const std::string dir = options.directory.empty() ? std::string("/dev/shm") : options.directory;
  return absl::StrCat(dir, "/.", std::string(name), ".owner");
}
}  // namespace

absl::Status SharedClaim::RemoveFile(std::string_view name, const SharedMapOptions& options) {
  if (absl::Status st = shared_internal::MapCore::ValidateName(name); !st.ok()) return st;
  const std::string path = LockPath(name, options);
  if (unlink(path.c_str()) != 0) {
    return ErrnoToStatus(errno,
                         absl::StrCat("shared table \"", std::string(name), "\": remove ", path));
  }
  return absl::OkStatus();
}

absl::StatusOr<bool> SharedClaim::HeldByAnyone(std::string_view name,
                                               const SharedMapOptions& options) {
  if (absl::Status st = shared_internal::MapCore::ValidateName(name); !st.ok()) return st;
  const std::string path = LockPath(name, options);
  const int fd = open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return false;
    return ErrnoToStatus(errno, absl::StrCat("shared table \"", std::string(name), "\": ", path));
  }
  struct flock fl;
  const bool asked = ClaimLock(fd, F_OFD_GETLK, F_WRLCK, &fl);
  const int error = errno;
  close(fd);
  if (!asked) {
    return ErrnoToStatus(error, absl::StrCat("shared table \"", std::string(name), "\": ", path));
  }
  return fl.l_type != F_UNLCK;
}

absl::StatusOr<SharedClaim> SharedClaim::Acquire(std::string_view name_view,
                                                 const SharedMapOptions& options) {
  if (absl::Status st = shared_internal::MapCore::ValidateName(name_view); !st.ok()) return st;
  const std::string name(name_view);
  SharedClaim claim;
  claim.path_ = LockPath(name, options);
  const std::string what = absl::StrCat("shared table \"", name, "\": claim ", claim.path_);
  // Another program may unlink the file (Remove) between our open and our lock: then we locked an
  // orphan, and must try again on the file now at the path.
  for (int attempt = 0; attempt < 8; ++attempt) {
    claim.Release();
    claim.fd_ = open(claim.path_.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (claim.fd_ < 0) {
      if (errno == ELOOP) {
        return absl::FailedPreconditionError(
            absl::StrCat(what, ": a symbolic link (not followed)"));
      }
      return ErrnoToStatus(errno, what);
    }
    struct stat st;
    if (fstat(claim.fd_, &st) != 0) return ErrnoToStatus(errno, what);
    if (!S_ISREG(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 0077) != 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          what, ": not a regular file of this user with mode 0600 (refusing to use it)"));
    }
    struct flock fl;
    if (!ClaimLock(claim.fd_, F_OFD_SETLK, F_WRLCK, &fl)) {
      const int error = errno;
      if (error != EAGAIN && error != EACCES) return ErrnoToStatus(error, what);
      char buf[32] = {};
      const ssize_t n = pread(claim.fd_, buf, sizeof(buf) - 1, 0);
      const long holder = n > 0 ? std::strtol(buf, nullptr, 10) : 0;
      return absl::AlreadyExistsError(absl::StrCat(
          "shared table \"", name, "\": held by another live program",
          holder > 0 ? absl::StrCat(" (pid ", holder, ", per ", claim.path_, ")") : std::string(),
          HeldHere({st.st_dev, st.st_ino}) ? " -- this program, through another table" : ""));
    }
    struct stat now;
    if (stat(claim.path_.c_str(), &now) != 0 || now.st_ino != st.st_ino ||
        now.st_dev != st.st_dev) {
      continue;  // Unlinked or replaced meanwhile.
    }
    const std::string pid = absl::StrCat(getpid(), "\n");
    if (ftruncate(claim.fd_, 0) != 0 ||
        pwrite(claim.fd_, pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size())) {
      return ErrnoToStatus(errno, what);
    }
    claim.file_ = {st.st_dev, st.st_ino};
    {
      HeldClaims& h = Held();
      ExclusiveLock lock(h.mu);
      h.files.insert(claim.file_);
    }
    claim.registered_ = true;
    return claim;
  }
  return absl::UnavailableError(absl::StrCat(what, ": the lock file keeps being replaced"));
}

}  // namespace etsmgr
