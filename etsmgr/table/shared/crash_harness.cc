#include "etsmgr/table/shared/crash_harness.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <map>
#include <optional>
#include <random>
#include <vector>

#include "absl/strings/str_cat.h"
#include "etsmgr/table/shared/shared_map.h"
#include "etsmgr/table/shared/test_names.h"

namespace etsmgr::shared_testing {
namespace {

using Map = SharedMap<int64_t, int64_t>;
using Model = std::map<int64_t, int64_t>;

constexpr int kSharedCounters = 16;

uint64_t SplitMix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

struct Op {
  enum Kind { kInsert, kInsertNew, kUpdate, kErase, kTake, kClear, kShared } kind;
  int64_t key;
  int64_t value;  // insert value, or counter increment
};

Op OpAt(const KillRunOptions& o, int writer, uint64_t index) {
  const uint64_t r = SplitMix(SplitMix(o.seed * 0x100000001b3ULL + writer) ^ index);
  const uint64_t r2 = SplitMix(r);
  const int64_t key = writer + int64_t{o.writers} * static_cast<int64_t>(r2 % o.key_space);
  const int64_t value = static_cast<int64_t>((r >> 24) % 1'000'000);
  const uint64_t p = r % 1'000'000;
  if (o.writers == 1 && p < static_cast<uint64_t>(o.clear_per_million)) return {Op::kClear, 0, 0};
  switch ((r >> 20) % 100) {
    case 0 ... 29:
      return {Op::kInsert, key, value};
    case 30 ... 39:
      return {Op::kInsertNew, key, value};
    case 40 ... 64:
      return {Op::kUpdate, key, 1 + value % 7};
    case 65 ... 84:
      return {Op::kErase, key, 0};
    case 85 ... 89:
      return {Op::kTake, key, 0};
    default:
      if (o.writers > 1)
        return {Op::kShared, -1 - static_cast<int64_t>(r2 % kSharedCounters), 1 + value % 5};
      return {Op::kUpdate, key, 1 + value % 7};
  }
}

absl::Status Apply(Map& map, const Op& op) {
  switch (op.kind) {
    case Op::kInsert:
      return map.Insert(op.key, op.value);
    case Op::kInsertNew:
      return map.InsertNew(op.key, op.value).status();
    case Op::kUpdate:
    case Op::kShared:
      return map.UpdateCounter(op.key, op.value, {.default_value = 0}).status();
    case Op::kErase:
      return map.Erase(op.key).status();
    case Op::kTake:
      return map.Take(op.key).status();
    case Op::kClear:
      return map.Clear();
  }
  return absl::InternalError("unknown op");
}

// The model's view of a writer's own keys (shared counters are kept apart).
void ApplyToModel(const Op& op, Model* model, Model* shared) {
  switch (op.kind) {
    case Op::kInsert:
      (*model)[op.key] = op.value;
      break;
    case Op::kInsertNew:
      model->try_emplace(op.key, op.value);
      break;
    case Op::kUpdate:
      (*model)[op.key] += op.value;
      break;
    case Op::kErase:
    case Op::kTake:
      model->erase(op.key);
      break;
    case Op::kClear:
      model->clear();
      break;
    case Op::kShared:
      (*shared)[op.key] += op.value;
      break;
  }
}

SharedMapOptions MapOptions(const KillRunOptions& o) {
  SharedMapOptions options;
  options.directory = o.directory;
  options.shards = o.shards;
  options.max_bytes = uint64_t{1} << 30;
  options.lock_timeout = absl::Seconds(20);
  return options;
}

// The writer process: never returns.
[[noreturn]] void WriterMain(const KillRunOptions& o, const std::string& name, int writer,
                             uint64_t start, int ack_fd) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  SharedMapOptions options = MapOptions(o);
  options.mode = SharedMapOptions::Mode::kOpen;
  absl::StatusOr<Map> map = Map::Open(name, options);
  if (!map.ok()) _exit(3);
  for (uint64_t i = start; i < start + 10'000'000; ++i) {
    if (!Apply(*map, OpAt(o, writer, i)).ok()) _exit(4);
    const char* p = reinterpret_cast<const char*>(&i);
    size_t left = sizeof(i);
    while (left > 0) {
      ssize_t n = write(ack_fd, p, left);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) _exit(5);
      p += n;
      left -= static_cast<size_t>(n);
    }
  }
  _exit(0);
}

struct Writer {
  pid_t pid = -1;
  int fd = -1;
  uint64_t start = 0;            // first op index of this round
  std::optional<uint64_t> last;  // last acknowledged op index
  uint64_t acks = 0;
  uint64_t target = 0;  // kill after this many acks
  int delay_us = 0;
  bool killed = false;
  bool eof = false;
  std::string partial;  // bytes of an incomplete ack
};

void BusyWaitMicros(int us) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(us);
  while (std::chrono::steady_clock::now() < until) {
  }
}

// Reads what is available from w.fd; false at EOF.
bool ReadAcks(Writer& w) {
  char buf[4096];
  ssize_t n = read(w.fd, buf, sizeof(buf));
  if (n < 0 && (errno == EINTR || errno == EAGAIN)) return true;
  if (n <= 0) return false;
  w.partial.append(buf, static_cast<size_t>(n));
  size_t whole = w.partial.size() / 8 * 8;
  for (size_t i = 0; i < whole; i += 8) {
    uint64_t index;
    std::memcpy(&index, w.partial.data() + i, 8);
    w.last = index;
    ++w.acks;
  }
  w.partial.erase(0, whole);
  return true;
}

std::string Describe(const Model& m, size_t limit = 6) {
  std::string out = absl::StrCat(m.size(), " keys {");
  size_t n = 0;
  for (const auto& [k, v] : m) {
    if (n++ == limit) {
      out += " ...";
      break;
    }
    absl::StrAppend(&out, " ", k, ":", v);
  }
  return out + " }";
}

// Keys whose values differ between two models.
int64_t Differences(const Model& a, const Model& b) {
  int64_t d = 0;
  for (const auto& [k, v] : a) {
    auto it = b.find(k);
    d += it == b.end() || it->second != v;
  }
  for (const auto& [k, v] : b) d += !a.contains(k);
  return d;
}

}  // namespace

KillRunResult RunKills(const KillRunOptions& o) {
  KillRunResult result;
  const std::string name = UniqueSegmentName("etsmgr-kills");
  SharedMapOptions options = MapOptions(o);
  (void)Map::Remove(name, options);
  options.mode = SharedMapOptions::Mode::kCreate;
  // A handle opened when the segment was new, kept for the whole run: each round it repairs what
  // the killed writers left first (Check), with a mapping older than what they grew, as a
  // long-running program sharing the segment would.
  std::optional<Map> veteran;
  {
    absl::StatusOr<Map> made = Map::Open(name, options);
    if (!made.ok()) {
      result.harness_failures = 1;
      result.first_failure = absl::StrCat("create: ", made.status().ToString());
      return result;
    }
    veteran.emplace(*std::move(made));
  }
  options.mode = SharedMapOptions::Mode::kOpen;
  auto fail = [&](int* counter, const std::string& what) {
    ++*counter;
    if (result.first_failure.empty()) result.first_failure = what;
  };

  std::mt19937_64 rng(o.seed);
  std::vector<Model> models(o.writers);
  Model shared;
  std::vector<uint64_t> next_start(o.writers, 0);
  for (int round = 0; result.kills < o.kills && result.ok(); ++round) {
    std::vector<Writer> writers(o.writers);
    for (int w = 0; w < o.writers; ++w) {
      Writer& wr = writers[w];
      wr.start = next_start[w];
      wr.target = rng() % (o.max_acks + 1);
      wr.delay_us = static_cast<int>(rng() % (o.max_delay_us + 1));
      int fds[2];
      if (pipe2(fds, O_CLOEXEC) != 0) {
        fail(&result.harness_failures, "pipe failed");
        return result;
      }
      pid_t pid = fork();
      if (pid == 0) {
        close(fds[0]);
        WriterMain(o, name, w, wr.start, fds[1]);
      }
      close(fds[1]);
      wr.pid = pid;
      wr.fd = fds[0];
    }
    // Kill each writer once it has acknowledged its target number of writes.
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    for (;;) {
      bool all = true;
      for (int w = 0; w < o.writers; ++w) {
        Writer& wr = writers[w];
        if (!wr.killed && wr.acks >= wr.target) {
          BusyWaitMicros(wr.delay_us);
          kill(wr.pid, SIGKILL);
          wr.killed = true;
          ++result.kills;
        }
        all = all && wr.killed;
      }
      if (all) break;
      std::vector<pollfd> polls;
      for (Writer& wr : writers) {
        if (!wr.killed && !wr.eof) polls.push_back({wr.fd, POLLIN, 0});
      }
      if (polls.empty() || std::chrono::steady_clock::now() > deadline) {
        fail(&result.harness_failures,
             absl::StrCat("round ", round, ": a writer exited or stalled before its kill"));
        for (Writer& wr : writers) {
          if (!wr.killed) kill(wr.pid, SIGKILL);
          wr.killed = true;
        }
        break;
      }
      if (poll(polls.data(), polls.size(), 1000) <= 0) continue;
      for (Writer& wr : writers) {
        if (!wr.killed && !wr.eof) {
          for (const pollfd& p : polls) {
            if (p.fd == wr.fd && p.revents != 0 && !ReadAcks(wr)) wr.eof = true;
          }
        }
      }
    }
    for (Writer& wr : writers) {
      int status = 0;
      waitpid(wr.pid, &status, 0);
      while (!wr.eof && ReadAcks(wr)) {
      }
      close(wr.fd);
      if (!(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)) {
        fail(&result.harness_failures,
             absl::StrCat("round ", round, ": writer exited with status ", status,
                          " (3: open failed, 4: a write failed) after ", wr.acks, " writes"));
      }
    }
    if (!result.ok()) break;

    // Verify: every acknowledged write, and at most the one in flight per writer. The repairs
    // first, by the long-lived handle; then a fresh open checks again.
    if (absl::Status repaired = veteran->Check(); !repaired.ok()) {
      fail(&result.check_failures,
           absl::StrCat("round ", round, ": the long-lived handle: ", repaired.ToString()));
      break;
    }
    absl::StatusOr<Map> map = Map::Open(name, options);
    absl::Status check = map.ok() ? map->Check() : map.status();
    if (!check.ok()) {
      fail(&result.check_failures, absl::StrCat("round ", round, ": ", check.ToString()));
      break;
    }
    absl::StatusOr<std::vector<std::pair<int64_t, int64_t>>> list = map->ToList();
    if (!list.ok()) {
      fail(&result.check_failures, absl::StrCat("round ", round, ": ", list.status().ToString()));
      break;
    }
    std::vector<Model> actual(o.writers);
    Model actual_shared;
    for (const auto& [k, v] : *list) {
      if (k < 0) {
        actual_shared[k] = v;
      } else {
        actual[k % o.writers][k] = v;
      }
    }
    // Acknowledged writes first (all writers), then what the in-flight ones may add.
    std::vector<uint64_t> first_unacked(o.writers);
    for (int w = 0; w < o.writers; ++w) {
      const Writer& wr = writers[w];
      first_unacked[w] = wr.last ? *wr.last + 1 : wr.start;
      for (uint64_t i = wr.start; i < first_unacked[w]; ++i) {
        ApplyToModel(OpAt(o, w, i), &models[w], &shared);
        ++result.writes_checked;
      }
    }
    if (o.lose_a_write_for_test && round == 0) {
      // Pretend the segment lost an acknowledged write: writer 0's smallest key that the model
      // has and the in-flight write does not touch.
      const int64_t in_flight = OpAt(o, 0, first_unacked[0]).key;
      for (const auto& [k, v] : models[0]) {
        if (k != in_flight && actual[0].erase(k) > 0) break;
      }
    }
    Model shared_upper = shared;
    for (int w = 0; w < o.writers; ++w) {
      const Op maybe = OpAt(o, w, first_unacked[w]);
      Model done = models[w];
      ApplyToModel(maybe, &done, &shared_upper);
      if (actual[w] == models[w] || actual[w] == done) {
        models[w] = actual[w];
      } else {
        const int64_t lost =
            std::min(Differences(actual[w], models[w]), Differences(actual[w], done));
        result.lost_writes += std::max<int64_t>(lost, 1);
        if (result.first_failure.empty()) {
          result.first_failure = absl::StrCat(
              "round ", round, ", writer ", w, ": acknowledged up to op ", first_unacked[w],
              " (exclusive), in flight op kind ", maybe.kind, " key ", maybe.key, "; expected ",
              Describe(models[w]), " or ", Describe(done), ", found ", Describe(actual[w]));
        }
      }
      next_start[w] = first_unacked[w] + 1;
    }
    // Shared counters: between the acknowledged sum and that plus what was in flight.
    for (const auto& [k, v] : actual_shared) shared.try_emplace(k, 0);
    for (auto& [k, lower] : shared) {
      const int64_t v = actual_shared.contains(k) ? actual_shared[k] : 0;
      const int64_t upper = shared_upper.contains(k) ? shared_upper[k] : lower;
      if (v < lower || v > upper) {
        ++result.lost_writes;
        if (result.first_failure.empty()) {
          result.first_failure = absl::StrCat("round ", round, ": shared counter ", k, " is ", v,
                                              ", acknowledged ", lower, ", at most ", upper);
        }
      }
      lower = v;
    }
    result.info = map->Info().value_or(SharedMapInfo());
    if (o.progress) {
      o.progress(absl::StrCat("kills ", result.kills, "/", o.kills, ", writes checked ",
                              result.writes_checked, ", entries ", list->size()));
    }
  }
  (void)Map::Remove(name, options);
  return result;
}

}  // namespace etsmgr::shared_testing
