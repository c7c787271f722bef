// SharedString<N>: a byte string of at most N bytes stored inline, usable as a SharedMap key or
// value (a std::string owns heap memory, which another process cannot follow).
//
//   using Name = etsmgr::SharedString<32>;
//   absl::StatusOr<Name> n = Name::Make(user_input);  // InvalidArgument beyond 32 bytes
//   Name lit("counter");                              // a literal: its length checked at compile
//   time std::string_view v = n->view();
//
// Layout: a 4-byte length, then the bytes, zero-filled to a multiple of 4 (no padding, and the
// unused tail is always zero), so two equal strings have equal bytes: SharedMap hashes and
// compares keys by their bytes. N is at most kMaxSharedStringBytes (4092: a SharedMap key or
// value is at most 4096 bytes). A value is a plain copyable object; no thread-safety beyond that.
#ifndef ETSMGR_TABLE_SHARED_SHARED_STRING_H_
#define ETSMGR_TABLE_SHARED_SHARED_STRING_H_

#include <algorithm>
#include <compare>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <ostream>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace etsmgr {

inline constexpr size_t kMaxSharedStringBytes = 4092;

template <size_t N>
class SharedString {
  static_assert(N >= 1 && N <= kMaxSharedStringBytes,
                "SharedString<N>: N must be 1..4092 (a shared key or value is at most 4096 bytes)");

 public:
  static constexpr size_t kCapacity = N;

  SharedString() = default;
  // A string literal that fits (checked at compile time).
  template <size_t M>
  SharedString(const char (&literal)[M]) requires(M - 1 <= N) {  // NOLINT: implicit by design
    Set(std::string_view(literal, M - 1));
  }
  // InvalidArgument when `s` is longer than N bytes.
  static absl::StatusOr<SharedString> Make(std::string_view s) {
    if (s.size() > N) {
      return absl::InvalidArgumentError(
          absl::StrCat("SharedString<", N, ">: ", s.size(), " bytes do not fit"));
    }
    SharedString out;
    out.Set(s);
    return out;
  }
  // False (and unchanged) when `s` does not fit.
  bool Assign(std::string_view s) {
    if (s.size() > N) return false;
    Set(s);
    return true;
  }

  // Never reads past the buffer, even for a length no SharedString wrote (a corrupted segment).
  std::string_view view() const { return std::string_view(data_, std::min<size_t>(size_, N)); }
  std::string str() const { return std::string(view()); }
  size_t size() const { return view().size(); }
  bool empty() const { return size_ == 0; }

  // What Check() verifies of a stored string: its length fits and its tail is zero.
  bool SharedValid() const {
    if (size_ > N) return false;
    for (size_t i = size_; i < kStorage; ++i) {
      if (data_[i] != 0) return false;
    }
    return true;
  }

  friend bool operator==(const SharedString& a, const SharedString& b) {
    return a.view() == b.view();
  }
  friend std::strong_ordering operator<=>(const SharedString& a, const SharedString& b) {
    int c = a.view().compare(b.view());
    return c < 0 ? std::strong_ordering::less
                 : (c > 0 ? std::strong_ordering::greater : std::strong_ordering::equal);
  }
  template <typename H>
  friend H AbslHashValue(H h, const SharedString& s) {
    return H::combine(std::move(h), s.view());
  }
  friend std::ostream& operator<<(std::ostream& os, const SharedString& s) {
    return os << s.view();
  }

 private:
  static constexpr size_t kStorage = (N + 3) / 4 * 4;
  void Set(std::string_view s) {
    size_ = static_cast<uint32_t>(s.size());
    std::memcpy(data_, s.data(), s.size());
    std::memset(data_ + s.size(), 0, kStorage - s.size());
  }

  uint32_t size_ = 0;
  char data_[kStorage] = {};
};

}  // namespace etsmgr

#endif  // ETSMGR_TABLE_SHARED_SHARED_STRING_H_
