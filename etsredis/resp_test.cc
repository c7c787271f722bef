#include "etsredis/resp.h"

#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace etsredis {
namespace {

using Args = std::vector<std::string>;
using Result = RequestParser::Result;

// Every complete request in `input`, fed `step` bytes at a time; "ERR:<message>" for an error.
std::vector<Args> ParseAll(const std::string& input, size_t step = 0, ParserLimits limits = {}) {
  RequestParser p(limits);
  std::vector<Args> out;
  if (step == 0) step = input.size() == 0 ? 1 : input.size();
  for (size_t at = 0; at < input.size(); at += step) {
    p.Feed(std::string_view(input).substr(at, step));
    while (true) {
      Result r = p.Next();
      if (r == Result::kNeedMore) break;
      if (r == Result::kError) {
        out.push_back({"ERR:" + p.error()});
        return out;
      }
      out.push_back(p.args());
    }
  }
  return out;
}

TEST(RequestParserTest, ArraysOfBulkStringsWhateverTheSplit) {
  const std::string two =
      "*2\r\n$3\r\nGET\r\n$3\r\nk\r\n\r\n*3\r\n$3\r\nSET\r\n$1\r\na\r\n$0\r\n\r\n";
  for (size_t step : {0, 1, 2, 3, 5, 7}) {
    SCOPED_TRACE(step);
    std::vector<Args> got = ParseAll(two, step);
    ASSERT_EQ(got.size(), 2u);
    EXPECT_EQ(got[0], (Args{"GET", "k\r\n"}));
    EXPECT_EQ(got[1], (Args{"SET", "a", ""}));
  }
}

TEST(RequestParserTest, BinarySafeArguments) {
  std::string value("a\0b\r\n*", 6);
  std::string req = "*2\r\n$4\r\nECHO\r\n$6\r\n" + value + "\r\n";
  std::vector<Args> got = ParseAll(req, 1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0][1], value);
}

TEST(RequestParserTest, InlineCommandsWithQuotes) {
  std::vector<Args> got =
      ParseAll("PING\r\n\r\n  set  k   v \n ECHO \"a b\\n\\x41\" 'it\\'s'\r\n", 1);
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0], (Args{"PING"}));
  EXPECT_EQ(got[1], (Args{"set", "k", "v"}));
  EXPECT_EQ(got[2], (Args{"ECHO", "a b\nA", "it's"}));
  EXPECT_EQ(ParseAll("ECHO \"abc\r\n")[0][0], "ERR:Protocol error: unbalanced quotes in request");
  EXPECT_EQ(ParseAll("ECHO \"a\"b\r\n")[0][0], "ERR:Protocol error: unbalanced quotes in request");
}

TEST(RequestParserTest, EmptyRequestsAreSkipped) {
  std::vector<Args> got = ParseAll("*0\r\n*-1\r\n\r\n*1\r\n$4\r\nPING\r\n", 1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0], (Args{"PING"}));
}

TEST(RequestParserTest, ManyInlineRequestsKeepTheBufferSmall) {
  RequestParser p;
  for (int i = 0; i < 10000; ++i) {
    p.Feed("PING\r\n");
    ASSERT_EQ(p.Next(), Result::kRequest);
    ASSERT_EQ(p.Next(), Result::kNeedMore);
    ASSERT_EQ(p.buffered(), 0u);
  }
}

TEST(RequestParserTest, MalformedInputIsAProtocolError) {
  struct Case {
    std::string input;
    std::string error;
  };
  const std::vector<Case> cases = {
      {"*x\r\n", "Protocol error: invalid multibulk length"},
      {"*1x\r\n", "Protocol error: invalid multibulk length"},
      {"*99999999999999999999999\r\n", "Protocol error: invalid multibulk length"},
      {"*2000000\r\n", "Protocol error: invalid multibulk length"},
      {"*01\r\n$4\r\nPING\r\n", "Protocol error: invalid multibulk length"},
      {"*-0\r\n", "Protocol error: invalid multibulk length"},
      {"*1\r\n$04\r\nPING\r\n", "Protocol error: invalid bulk length"},
      {"*1\rX", "Protocol error: invalid multibulk length"},
      {"*1\r\n:5\r\n", "Protocol error: expected '$', got ':'"},
      {"*1\r\nX\r\n", "Protocol error: expected '$', got 'X'"},
      {"*1\r\n$1\rXa\r\n", "Protocol error: invalid bulk length"},
      {"*1\r\n+OK\r\n", "Protocol error: expected '$', got '+'"},
      {"*1\r\n-ERR\r\n", "Protocol error: expected '$', got '-'"},
      {"*1\r\n*1\r\n$1\r\na\r\n", "Protocol error: expected '$', got '*'"},
      {"*1\r\n$-1\r\n", "Protocol error: invalid bulk length"},
      {"*1\r\n$abc\r\n", "Protocol error: invalid bulk length"},
      {"*1\r\n$+1\r\na\r\n", "Protocol error: invalid bulk length"},
      {"*1\r\n$99999999999999999999\r\n", "Protocol error: invalid bulk length"},
      {"*1\r\n$536870913\r\n", "Protocol error: invalid bulk length"},
  };
  for (const Case& c : cases) {
    for (size_t step : {0, 1}) {
      SCOPED_TRACE(c.input + " step " + std::to_string(step));
      std::vector<Args> got = ParseAll(c.input, step);
      ASSERT_FALSE(got.empty());
      EXPECT_EQ(got.back()[0], "ERR:" + c.error);
    }
  }
}

TEST(RequestParserTest, AHugeBulkIsRefusedFromItsHeaderBeforeItsBytes) {
  ParserLimits limits;
  limits.max_bulk = 1000;
  RequestParser p(limits);
  p.Feed("*2\r\n$3\r\nSET\r\n$1001\r\n");
  EXPECT_EQ(p.Next(), Result::kError);
  EXPECT_EQ(p.error(), "Protocol error: invalid bulk length");
  // At the limit: accepted.
  std::vector<Args> ok = ParseAll("*1\r\n$1000\r\n" + std::string(1000, 'x') + "\r\n", 97, limits);
  ASSERT_EQ(ok.size(), 1u);
  EXPECT_EQ(ok[0][0].size(), 1000u);
}

TEST(RequestParserTest, ABulkThatCannotFitTheRequestBufferIsRefusedFromItsHeader) {
  ParserLimits limits;
  limits.max_buffer = 4096;
  RequestParser p(limits);
  p.Feed("*1\r\n$100000\r\n");
  EXPECT_EQ(p.Next(), Result::kError);
  EXPECT_EQ(p.error(), "Protocol error: request buffer limit of 4096 bytes exceeded");
  // Stays failed.
  p.Feed("*1\r\n$4\r\nPING\r\n");
  EXPECT_EQ(p.Next(), Result::kError);
  // What fits is read, in pieces.
  std::vector<Args> ok = ParseAll("*1\r\n$4000\r\n" + std::string(4000, 'x') + "\r\n", 500, limits);
  ASSERT_EQ(ok.size(), 1u);
  EXPECT_EQ(ok[0][0].size(), 4000u);
}

// hiredis drops the bytes of an argument it has read, even in the middle of a request: the
// arguments kept must count against the limit, or a request of many big arguments that never
// ends holds max_args times max_bulk bytes.
TEST(RequestParserTest, TheArgumentsReadSoFarCountAgainstTheRequestBuffer) {
  ParserLimits limits;
  limits.max_buffer = 4096;
  limits.max_bulk = 1000;
  RequestParser p(limits);
  p.Feed("*100\r\n");
  ASSERT_EQ(p.Next(), Result::kNeedMore);
  const std::string bulk = "$1000\r\n" + std::string(1000, 'x') + "\r\n";
  Result r = Result::kNeedMore;
  int fed = 0;
  while (fed < 100 && r == Result::kNeedMore) {
    p.Feed(bulk);
    ++fed;
    r = p.Next();
  }
  EXPECT_EQ(r, Result::kError);
  EXPECT_LE(fed, 5);
  EXPECT_EQ(p.error(), "Protocol error: request buffer limit of 4096 bytes exceeded");
  // The same arguments in requests of their own: read one by one, no limit reached.
  std::string many;
  for (int i = 0; i < 100; ++i) many += "*1\r\n" + bulk;
  EXPECT_EQ(ParseAll(many, 333, limits).size(), 100u);
}

// CONFIG GET proto-max-bulk-len's figure is a promise: a SET of a value that long is read.
TEST(RequestParserTest, TheLargestArgumentReportedFitsAnActualRequest) {
  ParserLimits limits;
  limits.max_buffer = 64 << 10;
  const size_t largest = RequestParser::LargestArgument(limits);
  EXPECT_GT(largest, (60u << 10));
  const std::string key(1000, 'k');
  const std::string request = absl::StrCat("*3\r\n$3\r\nSET\r\n$", key.size(), "\r\n", key, "\r\n$",
                                           largest, "\r\n", std::string(largest, 'v'), "\r\n");
  std::vector<Args> got = ParseAll(request, 4096, limits);
  ASSERT_EQ(got.size(), 1u) << got[0][0];
  EXPECT_EQ(got[0][2].size(), largest);
  limits.max_bulk = 100;
  EXPECT_EQ(RequestParser::LargestArgument(limits), 100u);
  limits.max_bulk = size_t{4} << 30;
  limits.max_buffer = size_t{8} << 30;  // clamped as the parser clamps it
  EXPECT_LT(RequestParser::LargestArgument(limits), ParserLimits::kMaxBuffer);
}

// An element that is a line (status, error, integer) or a nested array is refused at its type
// byte: waiting for its line end buffered up to max_buffer bytes that hiredis rescanned on every
// read (quadratic time for one client).
TEST(RequestParserTest, AnElementThatIsNotABulkIsRefusedAtItsTypeByte) {
  for (char type : {'+', '-', ':', '*'}) {
    SCOPED_TRACE(std::string(1, type));
    RequestParser p;
    p.Feed(std::string("*1\r\n") + type);
    EXPECT_EQ(p.Next(), Result::kError);
    EXPECT_EQ(p.error(), std::string("Protocol error: expected '$', got '") + type + "'");
  }
  RequestParser p;
  p.Feed("*2\r\n$3\r\nGET\r\n:12");
  EXPECT_EQ(p.Next(), Result::kError);
  EXPECT_EQ(p.error(), "Protocol error: expected '$', got ':'");
}

TEST(RequestParserTest, TooBigInlineRequest) {
  ParserLimits limits;
  limits.max_inline = 100;
  std::vector<Args> got = ParseAll(std::string(150, 'a'), 10, limits);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0][0], "ERR:Protocol error: too big inline request");
}

TEST(RequestParserTest, TooManyArguments) {
  ParserLimits limits;
  limits.max_args = 3;
  EXPECT_EQ(ParseAll("*4\r\n", 0, limits)[0][0], "ERR:Protocol error: invalid multibulk length");
  EXPECT_EQ(ParseAll("*3\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n", 0, limits)[0].size(), 3u);
}

// Valid requests of every size, cut at random points (as TCP delivers them): every request
// parses to exactly its arguments. (hiredis drops consumed bytes in the middle of a request, so
// nothing may rely on what came before the current element.)
TEST(RequestParserTest, RandomRequestsCutAtRandomPoints) {
  std::mt19937_64 rng(17);
  for (int trial = 0; trial < 300; ++trial) {
    std::vector<Args> sent;
    std::string wire;
    for (int r = 0; r < 40; ++r) {
      Args args;
      const int n = 1 + static_cast<int>(rng() % (rng() % 4 == 0 ? 200 : 5));
      for (int i = 0; i < n; ++i) {
        std::string a(rng() % (rng() % 8 == 0 ? 3000 : 24), '\0');
        for (char& c : a) c = static_cast<char>(rng());
        args.push_back(std::move(a));
      }
      wire += "*" + std::to_string(args.size()) + "\r\n";
      for (const std::string& a : args)
        wire += "$" + std::to_string(a.size()) + "\r\n" + a + "\r\n";
      sent.push_back(std::move(args));
    }
    RequestParser p;
    std::vector<Args> got;
    for (size_t at = 0; at < wire.size();) {
      size_t piece = 1 + rng() % (rng() % 2 == 0 ? 20000 : 64);
      p.Feed(std::string_view(wire).substr(at, piece));
      at += piece;
      Result r;
      while ((r = p.Next()) == Result::kRequest) got.push_back(p.args());
      ASSERT_EQ(r, Result::kNeedMore) << p.error() << " (trial " << trial << ")";
    }
    ASSERT_EQ(got, sent) << "trial " << trial;
  }
}

// Empty requests and inline ones are consumed without hiredis: the input buffer still shrinks.
TEST(RequestParserTest, EmptyRequestsDoNotGrowTheBuffer) {
  ParserLimits limits;
  limits.max_buffer = 4096;
  RequestParser p(limits);
  // Every piece ends in the start of the next request, so the parser is never empty.
  std::string chunk = "0\r\n";
  for (int i = 0; i < 999; ++i) chunk += "*0\r\n";
  chunk += "*";
  p.Feed("*");
  for (int round = 0; round < 200; ++round) {
    p.Feed(chunk);
    ASSERT_EQ(p.Next(), Result::kNeedMore);
    ASSERT_LT(p.held(), 2 * chunk.size() + 1024) << "round " << round;
  }
}

TEST(RespTest, Encoders) {
  std::string out;
  AppendSimple(out, "OK");
  AppendError(out, "ERR bad\r\nthing");
  AppendInteger(out, -42);
  AppendBulk(out, std::string("a\0b", 3));
  AppendNil(out);
  AppendArrayHeader(out, 2);
  EXPECT_EQ(out, std::string("+OK\r\n-ERR bad  thing\r\n:-42\r\n$3\r\na\0b\r\n$-1\r\n*2\r\n", 46));
}

TEST(RespTest, ParseInt64IsStrict) {
  int64_t v = 0;
  EXPECT_TRUE(ParseInt64("0", &v));
  EXPECT_TRUE(ParseInt64("-9223372036854775808", &v));
  EXPECT_EQ(v, INT64_MIN);
  EXPECT_TRUE(ParseInt64("9223372036854775807", &v));
  EXPECT_EQ(v, INT64_MAX);
  for (const char* bad : {"", "-", "+1", " 1", "1 ", "01", "-0", "9223372036854775808",
                          "-9223372036854775809", "1a", "99999999999999999999"}) {
    EXPECT_FALSE(ParseInt64(bad, &v)) << bad;
  }
}

}  // namespace
}  // namespace etsredis
