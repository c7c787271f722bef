// RESP2, the Redis protocol: reading requests and writing replies.
//
// RequestParser reads what clients send -- arrays of bulk strings
// ("*2\r\n$3\r\nGET\r\n$1\r\nk\r\n") through hiredis's reader (redisReader, with reply functions of
// our own that collect the arguments), and inline commands ("PING\r\n", what telnet and
// redis-benchmark's PING_INLINE send), which Redis accepts too. It enforces the limits a server
// needs against bad or hostile input, with Redis's own wording:
//   - a bulk string longer than `max_bulk` (Redis's proto-max-bulk-len, 512 MB):
//     "Protocol error: invalid bulk length" -- checked from its header, before its bytes arrive;
//   - more than `max_args` arguments (1M, as Redis): "Protocol error: invalid multibulk length";
//   - an element that is not a bulk string: "Protocol error: expected '$', got 'X'";
//   - an inline request longer than `max_inline` (64 KB): "Protocol error: too big inline request";
//   - more than `max_buffer` bytes held for one incomplete request (64 MB by default, lower
//     than max_bulk on purpose: memory per connection stays bounded), counting the arguments
//     already read (each with its string object) and what is buffered, or a bulk whose header
//     announces more than fits: "Protocol error: request buffer limit of N bytes exceeded".
//     A single argument can therefore be at most about max_buffer bytes (64 MB; LargestArgument,
//     which CONFIG GET proto-max-bulk-len reports), and a request of n arguments holds their
//     bytes plus about 32 bytes each (1M arguments of 32 bytes: 64 MB).
// After an error the parser stays failed: reply the error and close the connection, as Redis does.
// An empty request ("*0\r\n", "*-1\r\n", a blank inline line) is skipped without a reply.
//
// Thread-compatible: one parser per connection.
#ifndef ETSREDIS_RESP_H_
#define ETSREDIS_RESP_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

struct redisReader;

namespace etsredis {

struct ParserLimits {
  size_t max_bulk = size_t{512} << 20;
  size_t max_buffer = size_t{64} << 20;  // At most 1 GiB (hiredis's buffer offsets are ints).
  static constexpr size_t kMaxBuffer = size_t{1} << 30;
  size_t max_inline = size_t{64} << 10;
  size_t max_args = size_t{1} << 20;
};

class RequestParser {
 public:
  explicit RequestParser(ParserLimits limits = {});
  ~RequestParser();
  RequestParser(const RequestParser&) = delete;
  RequestParser& operator=(const RequestParser&) = delete;

  // Appends bytes received from the client.
  void Feed(std::string_view bytes);

  enum class Result { kRequest, kNeedMore, kError };
  // The next complete request (its arguments in args()), kNeedMore, or kError (error() holds the
  // message to reply, without "-ERR ").
  Result Next();

  const std::vector<std::string>& args() const { return args_; }
  const std::string& error() const { return error_; }
  // Bytes received and not yet consumed by a complete request.
  size_t buffered() const;
  // Bytes the parser holds for input (consumed ones not yet dropped included).
  size_t held() const;
  // Bytes the arguments already read of the request being read hold (each with its string
  // object): with buffered(), what counts against max_buffer.
  size_t request_bytes() const { return request_bytes_; }
  // The longest argument a request can carry under `limits` when its other arguments take at most
  // 1 KiB (a command and a key): what CONFIG GET proto-max-bulk-len reports.
  static size_t LargestArgument(const ParserLimits& limits);

 private:
  friend struct ParserCallbacks;
  Result Fail(std::string message);
  Result NextInline();
  // Checks the header of the element hiredis is waiting for (a bulk length it will wait on).
  bool CheckPendingHeader();
  std::string BufferLimitMessage() const;

  ParserLimits limits_;
  redisReader* reader_ = nullptr;
  std::vector<std::string> args_;
  // Bytes of the request being read that args_ holds (each argument and its string object).
  size_t request_bytes_ = 0;
  std::string error_;
  bool empty_request_ = false;
};

// Reply encoders: append one RESP2 value to `out`.
void AppendSimple(std::string& out, std::string_view s);  // "+s\r\n"
void AppendError(std::string& out, std::string_view s);   // "-s\r\n"; "ERR " is the caller's
void AppendInteger(std::string& out, int64_t n);          // ":n\r\n"
void AppendBulk(std::string& out, std::string_view s);    // "$len\r\ns\r\n"
void AppendNil(std::string& out);                         // "$-1\r\n"
void AppendArrayHeader(std::string& out, size_t n);       // "*n\r\n"

// Redis's strict integer syntax (string2ll): optional '-', no '+', no leading zeros or spaces,
// within int64.
bool ParseInt64(std::string_view s, int64_t* out);

}  // namespace etsredis

#endif  // ETSREDIS_RESP_H_
