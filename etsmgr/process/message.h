// Messages: typed values on a type-erased, heap-allocated envelope.
//
//   Send(pid, Ping{42});                       // any copyable or movable type
//   Message m = co_await self.Receive();       // the oldest message, whatever its type
//   if (const Ping* p = m.As<Ping>()) ...
//   std::optional<Ping> p = co_await self.ReceiveFor<Ping>(absl::Seconds(1));
//
// System messages delivered by the runtime: ExitSignal (a linked process exited and this one
// traps exits) and Down (a monitored process exited). The tables layer adds TableTransfer.
//
// Thread safety: an Envelope belongs to exactly one mailbox or Message at a time.
#ifndef ETSMGR_PROCESS_MESSAGE_H_
#define ETSMGR_PROCESS_MESSAGE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <typeinfo>
#include <utility>

#include "etsmgr/process/exit_reason.h"
#include "etsmgr/process/pid.h"

namespace etsmgr {

namespace process_internal {
class ProcessControl;
}  // namespace process_internal

// A per-type tag without RTTI lookups: the address of a static.
template <typename T>
const void* MessageTypeTag() {
  static const char tag = 0;
  return &tag;
}

class Envelope {
 public:
  virtual ~Envelope() = default;

  // Envelopes are allocated and freed once per message: they come from the per-thread caches of
  // etsmgr/base/block_cache.h, which take malloc off the messaging hot path.
  static void* operator new(size_t size);
  static void operator delete(void* p, size_t size);
  const void* type() const { return type_; }
  virtual const char* type_name() const = 0;

  // Kind of entry in a mailbox's incoming queue: a user/system message, or a signal the runtime
  // acts on before the process sees anything (exit signals, wake-ups).
  enum class Kind : uint8_t { kMessage, kExitSignal };
  Kind kind() const { return kind_; }

  // Typed access, also for selective-receive predicates.
  template <typename T>
  bool Is() const;
  template <typename T>
  const T* As() const;

 protected:
  Envelope(const void* type, Kind kind) : type_(type), kind_(kind) {}

 private:
  friend class Mailbox;
  friend class process_internal::ProcessControl;
  const void* type_;
  Kind kind_;
  Envelope* next_ = nullptr;  // Incoming stack, then the owner's FIFO.
  Envelope* prev_ = nullptr;  // Owner's FIFO only.
};

template <typename T>
class TypedEnvelope final : public Envelope {
 public:
  template <typename... Args>
  explicit TypedEnvelope(Args&&... args)
      : Envelope(MessageTypeTag<T>(), Kind::kMessage), value(std::forward<Args>(args)...) {}
  const char* type_name() const override { return typeid(T).name(); }
  T value;
};

template <typename T>
bool Envelope::Is() const {
  return type_ == MessageTypeTag<T>();
}
template <typename T>
const T* Envelope::As() const {
  return Is<T>() ? &static_cast<const TypedEnvelope<T>*>(this)->value : nullptr;
}

// An owned, received message.
class Message {
 public:
  Message() = default;
  explicit Message(std::unique_ptr<Envelope> envelope) : envelope_(std::move(envelope)) {}

  bool empty() const { return envelope_ == nullptr; }
  template <typename T>
  bool Is() const {
    return envelope_ != nullptr && envelope_->type() == MessageTypeTag<T>();
  }
  template <typename T>
  T* As() {
    return Is<T>() ? &static_cast<TypedEnvelope<T>*>(envelope_.get())->value : nullptr;
  }
  template <typename T>
  const T* As() const {
    return Is<T>() ? &static_cast<const TypedEnvelope<T>*>(envelope_.get())->value : nullptr;
  }
  const char* type_name() const { return envelope_ ? envelope_->type_name() : "none"; }

 private:
  std::unique_ptr<Envelope> envelope_;
};

// A linked process exited (delivered as a message only to processes that trap exits).
struct ExitSignal {
  Pid from;
  ExitReason reason;
};

// A monitored process exited (or did not exist: reason noproc).
struct Down {
  uint64_t ref;
  Pid pid;
  ExitReason reason;
};

}  // namespace etsmgr

#endif  // ETSMGR_PROCESS_MESSAGE_H_
