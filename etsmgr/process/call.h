// Call / reply between processes (gen_server:call's shape), with a deadline.
//
//   // client, in a process:
//   absl::StatusOr<Sum> r = co_await Call<Sum>(self, server, Add{1, 2}, absl::Seconds(5));
//   // server loop:
//   if (auto* req = m.As<CallRequest<Add>>()) ReplyTo(*req, Sum{req->request.a + req->request.b});
//
// The caller monitors the server for the duration of the call, so a server that is dead or dies
// before replying gives Unavailable at once (not at the deadline); no reply by the deadline gives
// DeadlineExceeded. A reply arriving after the deadline stays in the caller's mailbox (as in
// Erlang before aliases); callers that time out and go on can flush CallReply<T> messages.
#ifndef ETSMGR_PROCESS_CALL_H_
#define ETSMGR_PROCESS_CALL_H_

#include <cstdint>
#include <optional>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "etsmgr/process/process.h"

namespace etsmgr {

inline constexpr absl::Duration kDefaultCallTimeout = absl::Seconds(5);

template <typename Request>
struct CallRequest {
  Pid from;
  uint64_t ref;
  Request request;
};

template <typename Reply>
struct CallReply {
  uint64_t ref;
  Reply reply;
};

template <typename Reply, typename Request>
void ReplyTo(const CallRequest<Request>& request, Reply reply) {
  Send(request.from, CallReply<Reply>{request.ref, std::move(reply)});
}

template <typename Reply, typename Request>
Task<absl::StatusOr<Reply>> Call(Process& self, Pid server, Request request,
                                 absl::Duration timeout = kDefaultCallTimeout) {
  if (!server.valid()) co_return absl::UnavailableError("call: no server (null pid)");
  if (server == self.self()) {
    // No reply could ever come (OTP exits with calling_self).
    co_return absl::InvalidArgumentError(
        absl::StrCat("call to ", server.ToString(), ": a process calling itself"));
  }
  const uint64_t ref = self.Monitor(server);
  Send(server, CallRequest<Request>{self.self(), ref, std::move(request)});
  std::optional<Message> m = co_await self.ReceiveIfFor(
      [ref](const Envelope& e) {
        if (const auto* r = e.As<CallReply<Reply>>()) return r->ref == ref;
        if (const auto* d = e.As<Down>()) return d->ref == ref;
        return false;
      },
      timeout);
  self.Demonitor(ref, /*flush=*/true);
  if (!m) {
    co_return absl::DeadlineExceededError(absl::StrCat(
        "call to ", server.ToString(), ": no reply within ", absl::FormatDuration(timeout)));
  }
  if (const Down* d = m->As<Down>()) {
    co_return absl::UnavailableError(absl::StrCat("call to ", server.ToString(),
                                                  ": server exited (", d->reason.ToString(), ")"));
  }
  co_return std::move(m->As<CallReply<Reply>>()->reply);
}

}  // namespace etsmgr

#endif  // ETSMGR_PROCESS_CALL_H_
