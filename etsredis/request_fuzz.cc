#include "etsredis/request_fuzz.h"

#include <hiredis/hiredis.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "etsredis/commands.h"
#include "etsredis/map_keyspace.h"
#include "etsredis/resp.h"

namespace etsredis {
namespace {

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "request fuzz: %s\n", what);
    std::abort();
  }
}

// How many whole RESP replies `out` holds (hiredis's own reader); aborts on a malformed one.
size_t CountReplies(const std::string& out) {
  redisReader* r = redisReaderCreate();
  Check(r != nullptr, "no reader");
  Check(redisReaderFeed(r, out.data(), out.size()) == REDIS_OK, "feed");
  size_t n = 0;
  while (true) {
    void* reply = nullptr;
    Check(redisReaderGetReply(r, &reply) == REDIS_OK, "a reply is not valid RESP");
    if (reply == nullptr) break;
    freeReplyObject(reply);
    ++n;
  }
  Check(r->pos == r->len, "a reply is cut short");
  redisReaderFree(r);
  return n;
}

}  // namespace

void FuzzRequests(const uint8_t* data, size_t size) {
  if (size == 0) return;
  // The first byte picks the piece size the bytes arrive in (1..256).
  const size_t piece = static_cast<size_t>(data[0]) + 1;
  std::string_view input(reinterpret_cast<const char*>(data) + 1, size - 1);
  ParserLimits limits;
  limits.max_bulk = 4096;
  limits.max_buffer = 16384;
  limits.max_inline = 1024;
  limits.max_args = 64;
  RequestParser parser(limits);
  MapKeyspace keyspace;
  ServerConfig config;
  ServerStats stats;
  CommandContext context;
  context.keyspace = &keyspace;
  context.config = &config;
  context.stats = &stats;
  std::string out;
  size_t replies = 0;
  bool done = false;
  for (size_t at = 0; at < input.size() && !done; at += piece) {
    parser.Feed(input.substr(at, piece));
    Check(parser.request_bytes() + parser.buffered() <= limits.max_buffer + piece,
          "a request's arguments and buffer outgrew their cap");
    while (!done) {
      RequestParser::Result r = parser.Next();
      if (r == RequestParser::Result::kNeedMore) break;
      if (r == RequestParser::Result::kError) {
        Check(!parser.error().empty(), "an error without a message");
        Check(parser.Next() == RequestParser::Result::kError, "an error that did not stay");
        AppendError(out, "ERR " + parser.error());
        ++replies;
        done = true;
        break;
      }
      Check(!parser.args().empty(), "an empty request");
      Check(parser.args().size() <= limits.max_args, "too many arguments accepted");
      for (const std::string& a : parser.args()) {
        Check(a.size() <= limits.max_bulk || a.size() <= limits.max_inline, "an oversized arg");
      }
      if (Execute(parser.args(), context, out) == AfterCommand::kClose) done = true;
      ++replies;
    }
  }
  Check(CountReplies(out) == replies, "not one reply per request");
}

}  // namespace etsredis
