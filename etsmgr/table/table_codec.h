// How keys and values are written to a table file (SaveTable / LoadTable, table_file.h).
//
// Built in: every arithmetic type (fixed width, little-endian), std::string, and std::pair and
// std::vector of serializable types. A user type becomes serializable by specializing
// TableCodec, the customization point:
//
//   struct Point { int32_t x, y; };
//   template <>
//   struct etsmgr::TableCodec<Point> {
//     // Names the encoding: LoadTable refuses a file whose tags differ from the table's types'.
//     // Change it when the encoding changes.
//     static std::string Tag() { return "myapp.Point/1"; }
//     static void Encode(const Point& p, TableEncoder& out) { out.Put(p.x); out.Put(p.y); }
//     // False when the input is malformed or cut short (LoadTable then answers DataLoss).
//     static bool Decode(TableDecoder& in, Point* p) { return in.Get(&p->x) && in.Get(&p->y); }
//   };
//
// Contract: Decode(Encode(x)) == x; Decode never reads past the input (TableDecoder checks every
// read) and must fail, never crash or allocate without bound, on malformed input, because files
// may be corrupt. Every object (key and value together) must encode to at least one byte.
// Encode runs under a shard's read lock while a table is saved: it must not use the table.
#ifndef ETSMGR_TABLE_TABLE_CODEC_H_
#define ETSMGR_TABLE_TABLE_CODEC_H_

#include <algorithm>
#include <bit>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace etsmgr {

static_assert(std::endian::native == std::endian::little,
              "table files are little-endian; the built-in codecs copy bytes as they are");

// Appends encoded bytes to a string.
class TableEncoder {
 public:
  explicit TableEncoder(std::string* out) : out_(out) {}
  void PutBytes(const void* data, size_t n) { out_->append(static_cast<const char*>(data), n); }
  // A length or count: 1 to 10 bytes (LEB128).
  void PutVarint(uint64_t v) {
    char buf[10];
    size_t n = 0;
    while (v >= 0x80) {
      buf[n++] = static_cast<char>(v | 0x80);
      v >>= 7;
    }
    buf[n++] = static_cast<char>(v);
    out_->append(buf, n);
  }
  template <typename T>
  void Put(const T& v);

 private:
  std::string* out_;
};

// Reads encoded bytes from a buffer; every read checks what is left and fails (false) past it.
class TableDecoder {
 public:
  explicit TableDecoder(std::string_view in) : p_(in.data()), end_(in.data() + in.size()) {}
  size_t remaining() const { return static_cast<size_t>(end_ - p_); }
  bool GetBytes(void* out, size_t n) {
    if (remaining() < n) return false;
    std::memcpy(out, p_, n);
    p_ += n;
    return true;
  }
  // The next n bytes, without copying (valid while the input is).
  bool GetView(size_t n, std::string_view* out) {
    if (remaining() < n) return false;
    *out = std::string_view(p_, n);
    p_ += n;
    return true;
  }
  bool GetVarint(uint64_t* v) {
    uint64_t result = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (p_ == end_) return false;
      const uint8_t byte = static_cast<uint8_t>(*p_++);
      result |= uint64_t{byte & 0x7fu} << shift;
      if ((byte & 0x80) == 0) {
        *v = result;
        return true;
      }
    }
    return false;  // More than 10 bytes: malformed.
  }
  template <typename T>
  bool Get(T* v);

 private:
  const char* p_;
  const char* end_;
};

// The customization point (see the top of this file). Unspecialized: not serializable.
template <typename T>
struct TableCodec;

template <typename T>
concept TableSerializable = requires(const T& v, T* out, TableEncoder& enc, TableDecoder& dec) {
  { TableCodec<T>::Tag() } -> std::convertible_to<std::string>;
  TableCodec<T>::Encode(v, enc);
  { TableCodec<T>::Decode(dec, out) } -> std::same_as<bool>;
};

template <typename T>
void TableEncoder::Put(const T& v) {
  TableCodec<T>::Encode(v, *this);
}
template <typename T>
bool TableDecoder::Get(T* v) {
  return TableCodec<T>::Decode(*this, v);
}

// Integers and floating point: their bytes, fixed width. Tags say kind and width ("i64", "u8",
// "f64", "bool"), so int64_t and long long share one.
template <typename T>
requires std::is_arithmetic_v<T>
struct TableCodec<T> {
  static std::string Tag() {
    if constexpr (std::is_same_v<T, bool>) {
      return "bool";
    } else if constexpr (std::is_floating_point_v<T>) {
      return "f" + std::to_string(sizeof(T) * 8);
    } else {
      return (std::is_signed_v<T> ? "i" : "u") + std::to_string(sizeof(T) * 8);
    }
  }
  static void Encode(const T& v, TableEncoder& out) {
    if constexpr (std::is_same_v<T, bool>) {
      const uint8_t byte = v ? 1 : 0;
      out.PutBytes(&byte, 1);
    } else {
      out.PutBytes(&v, sizeof(T));
    }
  }
  static bool Decode(TableDecoder& in, T* v) {
    if constexpr (std::is_same_v<T, bool>) {
      uint8_t byte;
      if (!in.GetBytes(&byte, 1) || byte > 1) return false;
      *v = byte == 1;
      return true;
    } else {
      return in.GetBytes(v, sizeof(T));
    }
  }
};

// Strings: a varint length, then the bytes.
template <>
struct TableCodec<std::string> {
  static std::string Tag() { return "string"; }
  static void Encode(const std::string& s, TableEncoder& out) {
    out.PutVarint(s.size());
    out.PutBytes(s.data(), s.size());
  }
  static bool Decode(TableDecoder& in, std::string* s) {
    uint64_t n;
    std::string_view bytes;
    if (!in.GetVarint(&n) || n > in.remaining() || !in.GetView(n, &bytes)) return false;
    s->assign(bytes);
    return true;
  }
};

template <TableSerializable A, TableSerializable B>
struct TableCodec<std::pair<A, B>> {
  static std::string Tag() {
    return "pair<" + std::string(TableCodec<A>::Tag()) + "," + std::string(TableCodec<B>::Tag()) +
           ">";
  }
  static void Encode(const std::pair<A, B>& p, TableEncoder& out) {
    out.Put(p.first);
    out.Put(p.second);
  }
  static bool Decode(TableDecoder& in, std::pair<A, B>* p) {
    return in.Get(&p->first) && in.Get(&p->second);
  }
};

// Vectors: a varint count, then the elements. The count is checked against the bytes left (each
// element takes at least one), so a corrupt count cannot reserve without bound.
template <TableSerializable T>
struct TableCodec<std::vector<T>> {
  static std::string Tag() { return "vector<" + std::string(TableCodec<T>::Tag()) + ">"; }
  static void Encode(const std::vector<T>& v, TableEncoder& out) {
    out.PutVarint(v.size());
    for (const T& e : v) out.Put(e);
  }
  static bool Decode(TableDecoder& in, std::vector<T>* v) {
    uint64_t n;
    if (!in.GetVarint(&n) || n > in.remaining()) return false;
    v->clear();
    // Reserved up to a few thousand: each element takes at least one byte of the input, but may
    // take far more memory than that once decoded (a string, a nested vector), so a count that
    // is a lie must not reserve much; the rest grows as elements really decode.
    v->reserve(static_cast<size_t>(std::min<uint64_t>(n, 4096)));
    for (uint64_t i = 0; i < n; ++i) {
      T e{};
      if (!in.Get(&e)) return false;
      v->push_back(std::move(e));
    }
    return true;
  }
};

}  // namespace etsmgr

#endif  // ETSMGR_TABLE_TABLE_CODEC_H_
