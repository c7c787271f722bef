#include "etsredis/resp.h"

#include <hiredis/read.h>

// sds.h (hiredis's strings, for the reader's buffer) has no C++ guard of its own.
extern "C" {
#include <hiredis/sds.h>
}

#include <algorithm>
#include <cstring>
#include <limits>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace etsredis {
namespace {

// Longest header line worth reading: a sign, 19 digits and "\r".
constexpr size_t kMaxHeaderLine = 32;

// A non-negative decimal of digits only, within int64 (what a length header may hold), with no
// leading zero (Redis's string2ll refuses "01").
bool ParseLength(std::string_view digits, int64_t* out) {
  if (digits.empty() || digits.size() > 19) return false;
  if (digits[0] == '0' && digits.size() > 1) return false;
  int64_t v = 0;
  for (char c : digits) {
    if (c < '0' || c > '9') return false;
    if (v > (std::numeric_limits<int64_t>::max() - (c - '0')) / 10) return false;
    v = v * 10 + (c - '0');
  }
  *out = v;
  return true;
}

// Any non-null pointer: the objects live in the parser, hiredis only checks for null (out of
// memory, which is how a callback refuses what it was given).
void* Token(const redisReadTask* task) { return task->privdata; }

}  // namespace

// hiredis's reply functions: they collect the request's arguments and refuse anything that is
// not a bulk string inside the request's array (the array itself was checked before parsing).
struct ParserCallbacks {
  static RequestParser* Of(const redisReadTask* task) {
    return static_cast<RequestParser*>(task->privdata);
  }
  static void* Refuse(const redisReadTask* task, std::string message) {
    RequestParser* p = Of(task);
    if (p->error_.empty()) p->error_ = std::move(message);
    return nullptr;
  }
  static void* CreateString(const redisReadTask* task, char* str, size_t len) {
    RequestParser* p = Of(task);
    if (task->parent == nullptr) return Refuse(task, "Protocol error: expected '*'");
    if (task->type != REDIS_REPLY_STRING) {
      return Refuse(task, absl::StrCat("Protocol error: expected '$', got '",
                                       task->type == REDIS_REPLY_STATUS ? "+" : "-", "'"));
    }
    // hiredis checked the header's syntax (string2ll); the length is checked against the limit
    // before the data is awaited (CheckPendingHeader), and here for a bulk that came whole.
    // (hiredis drops consumed bytes even in the middle of a request: the header may no longer
    // be in its buffer.)
    if (len > p->limits_.max_bulk) return Refuse(task, "Protocol error: invalid bulk length");
    // The arguments kept count against the request's buffer limit (hiredis drops their bytes
    // from its buffer as it goes, so buffered() alone would let them pile up).
    p->request_bytes_ += len + sizeof(std::string);
    if (p->request_bytes_ > p->limits_.max_buffer) return Refuse(task, p->BufferLimitMessage());
    p->args_.emplace_back(str, len);
    return Token(task);
  }
  static void* CreateArray(const redisReadTask* task, int elements) {
    RequestParser* p = Of(task);
    if (task->parent != nullptr) return Refuse(task, "Protocol error: expected '$', got '*'");
    // The header was checked by Next() before hiredis saw it.
    p->args_.clear();
    p->request_bytes_ = 0;
    p->args_.reserve(std::min<size_t>(static_cast<size_t>(std::max(elements, 0)), 64));
    return Token(task);
  }
  static void* CreateInteger(const redisReadTask* task, long long) {
    return Refuse(task, "Protocol error: expected '$', got ':'");
  }
  static void* CreateNil(const redisReadTask* task) {
    return Refuse(task, "Protocol error: invalid bulk length");
  }
  static void FreeObject(void*) {}
};

namespace {
redisReplyObjectFunctions kFunctions = {
    &ParserCallbacks::CreateString, &ParserCallbacks::CreateArray, &ParserCallbacks::CreateInteger,
    &ParserCallbacks::CreateNil, &ParserCallbacks::FreeObject};
}  // namespace

size_t RequestParser::LargestArgument(const ParserLimits& limits) {
  const size_t buffer = std::min(limits.max_buffer, ParserLimits::kMaxBuffer);
  const size_t others = 1024 + 2 * sizeof(std::string);  // a command and a key, held already
  const size_t room =
      buffer > others + sizeof(std::string) ? buffer - others - sizeof(std::string) : 0;
  return std::min(limits.max_bulk, room);
}

RequestParser::RequestParser(ParserLimits limits) : limits_(limits) {
  limits_.max_buffer = std::min(limits_.max_buffer, ParserLimits::kMaxBuffer);
  reader_ = redisReaderCreateWithFunctions(&kFunctions);
  if (reader_ != nullptr) reader_->privdata = this;
}

RequestParser::~RequestParser() {
  if (reader_ != nullptr) redisReaderFree(reader_);
}

size_t RequestParser::buffered() const {
  return reader_ == nullptr ? 0 : reader_->len - reader_->pos;
}

size_t RequestParser::held() const { return reader_ == nullptr ? 0 : reader_->len; }

void RequestParser::Feed(std::string_view bytes) {
  if (reader_ == nullptr || !error_.empty() || bytes.empty()) return;
  if (redisReaderFeed(reader_, bytes.data(), bytes.size()) != REDIS_OK) {
    error_ = "out of memory reading the request";
  }
}

RequestParser::Result RequestParser::Fail(std::string message) {
  if (error_.empty()) error_ = std::move(message);
  return Result::kError;
}

RequestParser::Result RequestParser::Next() {
  if (reader_ == nullptr) return Fail("out of memory reading the request");
  if (!error_.empty()) return Result::kError;
  while (true) {
    if (reader_->ridx == -1) {
      request_bytes_ = 0;
      // Between requests: hiredis holds no part of one. Consumed bytes are dropped here too
      // (empty requests and inline ones advance the position without hiredis), so the buffer
      // holds only what is still to be parsed.
      if (reader_->pos >= 1024 && reader_->pos < reader_->len) {
        sdsrange(reader_->buf, static_cast<int>(reader_->pos), -1);
        reader_->pos = 0;
        reader_->len = sdslen(reader_->buf);
      }
      if (reader_->pos == reader_->len) {
        if (reader_->len > 0) {
          sdsclear(reader_->buf);
          reader_->pos = reader_->len = 0;
        }
        return Result::kNeedMore;
      }
      const char* p = reader_->buf + reader_->pos;
      const size_t n = reader_->len - reader_->pos;
      if (p[0] != '*') {
        Result r = NextInline();
        if (r == Result::kRequest && args_.empty()) continue;  // A blank line.
        return r;
      }
      // The array's header, checked here (hiredis would read any count).
      const char* cr = static_cast<const char*>(std::memchr(p, '\r', std::min(n, kMaxHeaderLine)));
      if (cr == nullptr) {
        if (n >= kMaxHeaderLine) return Fail("Protocol error: invalid multibulk length");
        return Result::kNeedMore;
      }
      // Only a whole line goes to hiredis (it would wait for ever on "\r" then anything).
      if (static_cast<size_t>(cr - p) + 1 >= n) return Result::kNeedMore;
      if (cr[1] != '\n') return Fail("Protocol error: invalid multibulk length");
      std::string_view digits(p + 1, cr - p - 1);
      int64_t count = 0;
      bool negative = !digits.empty() && digits[0] == '-';
      if (!ParseLength(negative ? digits.substr(1) : digits, &count) ||
          (negative && count == 0) ||  // "-0", as Redis
          (!negative && static_cast<uint64_t>(count) > limits_.max_args)) {
        return Fail("Protocol error: invalid multibulk length");
      }
      if (negative || count == 0) {
        // An empty request: skipped, as Redis does ("*0", "*-1").
        reader_->pos += (cr - p) + 2;
        continue;
      }
    }
    void* reply = nullptr;
    if (redisReaderGetReply(reader_, &reply) != REDIS_OK) {
      if (!error_.empty()) return Result::kError;
      // hiredis's words for what Redis words otherwise (hiredis empties its buffer on errors).
      std::string_view why = reader_->errstr;
      if (why.find("reply type byte") != std::string_view::npos) {
        // 'Protocol error, got "X" as reply type byte': an element of no RESP type.
        size_t open = why.find('"');
        size_t close = open == std::string_view::npos ? open : why.find('"', open + 1);
        std::string_view got = close == std::string_view::npos
                                   ? std::string_view("?")
                                   : why.substr(open + 1, close - open - 1);
        return Fail(absl::StrCat("Protocol error: expected '$', got '", std::string(got), "'"));
      }
      if (why.find("integer value") != std::string_view::npos) {
        return Fail("Protocol error: expected '$', got ':'");
      }
      if (why.find("ulk string length") != std::string_view::npos) {
        return Fail("Protocol error: invalid bulk length");
      }
      if (why.find("ulti-bulk length") != std::string_view::npos) {
        return Fail("Protocol error: invalid multibulk length");
      }
      return Fail(absl::StrCat("Protocol error: ", std::string(why)));
    }
    if (!error_.empty()) return Result::kError;
    if (reply != nullptr) return Result::kRequest;
    // Incomplete: refuse now what could only end in a limit (a huge bulk's header, or too much
    // buffered), rather than buffering it.
    if (!CheckPendingHeader()) return Result::kError;
    if (request_bytes_ + buffered() > limits_.max_buffer) return Fail(BufferLimitMessage());
    return Result::kNeedMore;
  }
}

std::string RequestParser::BufferLimitMessage() const {
  return absl::StrCat("Protocol error: request buffer limit of ", limits_.max_buffer,
                      " bytes exceeded");
}

bool RequestParser::CheckPendingHeader() {
  if (reader_->ridx < 1) return true;  // (the request's own header was checked by Next())
  const redisReadTask& cur = reader_->rstack[reader_->ridx];
  if (cur.type < 0) return true;  // its type byte not read yet
  if (cur.type != REDIS_REPLY_STRING) {
    // An element that is a line (a status, an error, an integer) or a nested array: refused at
    // its type byte, as Redis does. Waiting for its line would buffer up to max_buffer bytes and
    // have hiredis rescan them on every read.
    const char got = cur.type == REDIS_REPLY_STATUS    ? '+'
                     : cur.type == REDIS_REPLY_ERROR   ? '-'
                     : cur.type == REDIS_REPLY_INTEGER ? ':'
                     : cur.type == REDIS_REPLY_ARRAY   ? '*'
                                                       : '?';
    Fail(absl::StrCat("Protocol error: expected '$', got '", std::string(1, got), "'"));
    return false;
  }
  // hiredis took the '$' and waits at the length.
  const char* p = reader_->buf + reader_->pos;
  const size_t n = reader_->len - reader_->pos;
  const char* cr = static_cast<const char*>(std::memchr(p, '\r', std::min(n, kMaxHeaderLine)));
  if (cr == nullptr) {
    if (n < kMaxHeaderLine) return true;
    Fail("Protocol error: invalid bulk length");
    return false;
  }
  int64_t len = 0;
  if ((static_cast<size_t>(cr - p) + 1 < n && cr[1] != '\n') ||
      !ParseLength(std::string_view(p, cr - p), &len) ||
      static_cast<uint64_t>(len) > limits_.max_bulk) {
    Fail("Protocol error: invalid bulk length");
    return false;
  }
  // A bulk that cannot fit the request buffer is refused from its header, not after max_buffer
  // bytes of it arrived.
  if (request_bytes_ + static_cast<uint64_t>(len) + sizeof(std::string) > limits_.max_buffer) {
    Fail(BufferLimitMessage());
    return false;
  }
  return true;
}

RequestParser::Result RequestParser::NextInline() {
  const char* p = reader_->buf + reader_->pos;
  const size_t n = reader_->len - reader_->pos;
  const char* nl = static_cast<const char*>(std::memchr(p, '\n', std::min(n, limits_.max_inline)));
  if (nl == nullptr) {
    if (n >= limits_.max_inline) return Fail("Protocol error: too big inline request");
    return Result::kNeedMore;
  }
  std::string_view line(p, nl - p);
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  args_.clear();
  // Arguments split on blanks, with Redis's quoting: "..." (with \n \r \t \\ \" \xHH escapes)
  // and '...' (with \').
  size_t i = 0;
  while (true) {
    while (i < line.size() && absl::ascii_isspace(static_cast<unsigned char>(line[i]))) ++i;
    if (i == line.size()) break;
    std::string arg;
    if (line[i] == '"' || line[i] == '\'') {
      const char quote = line[i++];
      bool closed = false;
      while (i < line.size()) {
        char c = line[i];
        if (quote == '"' && c == '\\' && i + 1 < line.size()) {
          char e = line[i + 1];
          auto hex = [](char h) -> int {
            if (h >= '0' && h <= '9') return h - '0';
            h = absl::ascii_tolower(static_cast<unsigned char>(h));
            return h >= 'a' && h <= 'f' ? h - 'a' + 10 : -1;
          };
          if (e == 'x' && i + 3 < line.size() && hex(line[i + 2]) >= 0 && hex(line[i + 3]) >= 0) {
            arg.push_back(static_cast<char>(hex(line[i + 2]) * 16 + hex(line[i + 3])));
            i += 4;
            continue;
          }
          arg.push_back(e == 'n'   ? '\n'
                        : e == 'r' ? '\r'
                        : e == 't' ? '\t'
                        : e == 'b' ? '\b'
                        : e == 'a' ? '\a'
                                   : e);
          i += 2;
          continue;
        }
        if (quote == '\'' && c == '\\' && i + 1 < line.size() && line[i + 1] == '\'') {
          arg.push_back('\'');
          i += 2;
          continue;
        }
        if (c == quote) {
          closed = true;
          ++i;
          break;
        }
        arg.push_back(c);
        ++i;
      }
      // A closing quote must be followed by a blank or the end.
      if (!closed ||
          (i < line.size() && !absl::ascii_isspace(static_cast<unsigned char>(line[i])))) {
        return Fail("Protocol error: unbalanced quotes in request");
      }
    } else {
      while (i < line.size() && !absl::ascii_isspace(static_cast<unsigned char>(line[i]))) {
        arg.push_back(line[i++]);
      }
    }
    args_.push_back(std::move(arg));
  }
  reader_->pos += (nl - p) + 1;
  // Drop what was consumed once it is worth it (hiredis does the same for its own requests).
  if (reader_->pos >= 1024) {
    sdsrange(reader_->buf, static_cast<int>(reader_->pos), -1);
    reader_->pos = 0;
    reader_->len = sdslen(reader_->buf);
  }
  return Result::kRequest;
}

namespace {
// A status or error line cannot hold a line break (Redis replaces them by spaces too).
void AppendLine(std::string& out, char type, std::string_view s) {
  out.push_back(type);
  const size_t at = out.size();
  out.append(s.data(), s.size());
  for (size_t i = at; i < out.size(); ++i) {
    if (out[i] == '\r' || out[i] == '\n') out[i] = ' ';
  }
  out.append("\r\n");
}
}  // namespace

void AppendSimple(std::string& out, std::string_view s) { AppendLine(out, '+', s); }
void AppendError(std::string& out, std::string_view s) { AppendLine(out, '-', s); }
void AppendInteger(std::string& out, int64_t n) { absl::StrAppend(&out, ":", n, "\r\n"); }
void AppendBulk(std::string& out, std::string_view s) {
  absl::StrAppend(&out, "$", s.size(), "\r\n");
  out.append(s.data(), s.size());
  out.append("\r\n");
}
void AppendNil(std::string& out) { out.append("$-1\r\n"); }
void AppendArrayHeader(std::string& out, size_t n) { absl::StrAppend(&out, "*", n, "\r\n"); }

bool ParseInt64(std::string_view s, int64_t* out) {
  if (s.empty() || s.size() > 20) return false;
  bool negative = s[0] == '-';
  std::string_view digits = negative ? s.substr(1) : s;
  if (digits.empty() || (digits[0] == '0' && (digits.size() > 1 || negative))) return false;
  uint64_t v = 0;
  for (char c : digits) {
    if (c < '0' || c > '9') return false;
    if (v > (std::numeric_limits<uint64_t>::max() - (c - '0')) / 10) return false;
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  if (negative) {
    if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) + 1) return false;
    *out = static_cast<int64_t>(0 - v);
  } else {
    if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return false;
    *out = static_cast<int64_t>(v);
  }
  return true;
}

}  // namespace etsredis
