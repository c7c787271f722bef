// A consumer of @etsmgr//etsmgr: starts the manager, and a process whose managed table survives
// its own crash. Prints "consumer ok" when the count came back.
#include <cstdio>
#include <future>
#include <memory>
#include <string>

#include "etsmgr/etsmgr.h"

namespace {

struct Bump {};
struct Count {
  long value;
};

etsmgr::Task<void> Client(etsmgr::Process& self, etsmgr::Pid main_probe) {
  auto t = co_await etsmgr::ManagedTable<std::string, int64_t>::Open(
      self, etsmgr::Etsmgr(), "hits", etsmgr::TableOptions(),
      [](etsmgr::Table<std::string, int64_t>& fresh) { return fresh.Insert("hits", 0); });
  if (!t.ok()) co_return;
  while (true) {
    etsmgr::Message m = co_await self.Receive();
    if (m.Is<Bump>()) {
      absl::StatusOr<int64_t> n = t->table().UpdateCounter("hits", 1);
      etsmgr::Send(main_probe, Count{n.ok() ? static_cast<long>(*n) : -1L});
    }
  }
}

}  // namespace

int main() {
  auto node = etsmgr::Node::Create({}).value();
  if (!etsmgr::StartManager(*node).ok()) return 1;
  auto result = std::make_shared<std::promise<long>>();
  node->Spawn([result](etsmgr::Process& self) -> etsmgr::Task<void> {
        etsmgr::Pid me = self.self();
        auto body = [me](etsmgr::Process& p) { return Client(p, me); };
        etsmgr::Pid first = self.Spawn(body).value();
        etsmgr::Send(first, Bump{});
        Count one = co_await self.Receive<Count>();
        etsmgr::SendExit(first, etsmgr::ExitReason::Kill());  // The client crashes...
        uint64_t ref = self.Monitor(first);
        co_await self.ReceiveIf([ref](const etsmgr::Envelope& e) { return e.Is<etsmgr::Down>(); });
        (void)ref;
        etsmgr::Pid second = self.Spawn(body).value();  // ...and its successor counts on.
        etsmgr::Send(second, Bump{});
        Count two = co_await self.Receive<Count>();
        result->set_value(one.value * 10 + two.value);
      })
      .value();
  long got = result->get_future().get();
  if (got != 12) {
    std::fprintf(stderr, "consumer: expected counts 1 then 2, got %ld\n", got);
    return 1;
  }
  std::printf("consumer ok\n");
  return 0;
}
