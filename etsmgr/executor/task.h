// Task<T>: a lazy, move-only coroutine that produces a T (or void, or a reference).
//
//   Task<int> Answer() { co_return 42; }
//   Task<int> Twice() { int a = co_await Answer(); co_return 2 * a; }
//
// Semantics
// - Lazy: the body starts when the Task is first awaited, not when it is created.
// - Symmetric transfer: awaiting a Task jumps into it, and its completion jumps straight back to
//   the awaiter, so a million synchronous `co_await`s in a row use constant stack.
// - Exceptions escaping the body are stored and rethrown from `co_await` in the awaiter.
//
// Frame ownership
// - The Task object owns its coroutine frame and destroys it in its destructor, whether the body
//   ran to completion, never started, or is suspended. Destroying a suspended Task destroys the
//   body's locals (and, recursively, the Tasks it is awaiting), so a whole chain of frames is torn
//   down from its root; the executor uses this to kill a process at a suspension point.
// - While a Task is being awaited, the awaiter (another frame) holds the Task as a temporary, so
//   the child frame lives exactly as long as the parent's `co_await` expression.
// - A Task may be awaited at most once. Awaiting a moved-from Task is a programming error
//   (asserted).
//
// GCC12-WORKAROUND (every workaround for gcc 12 carries this tag; grep for it): a braced aggregate
// temporary with non-trivial members in the same full-expression as a co_await, e.g. `co_await
// F(Request{1, std::string("x")})`, has its members destroyed twice (reproduced with gcc 12.2 at
// -O0 and -O2). Build such arguments with a function or a named variable first: `Request r{...};
// co_await F(std::move(r));`.
//
// Thread safety: a Task is a plain value; it is resumed by whoever resumes its awaiter. Nothing
// here synchronises; the executor decides which thread runs a frame.
#ifndef ETSMGR_EXECUTOR_TASK_H_
#define ETSMGR_EXECUTOR_TASK_H_

#include <cassert>
#include <coroutine>
#include <exception>
#include <memory>
#include <type_traits>
#include <utility>
#include <variant>

#include "etsmgr/base/block_cache.h"

namespace etsmgr {

template <typename T = void>
class [[nodiscard]] Task;

namespace task_internal {

// Common part of every Task promise: the continuation and the final-suspend jump to it.
class PromiseBase {
 public:
  // Frames are allocated and freed once per call: they come from the per-thread caches of
  // etsmgr/base/block_cache.h (a chain of awaited calls then costs no malloc).
  static void* operator new(size_t size) { return block_cache::Allocate(size); }
  static void operator delete(void* p, size_t size) { block_cache::Free(p, size); }

  std::suspend_always initial_suspend() noexcept { return {}; }

  struct FinalAwaiter {
    bool await_ready() const noexcept { return false; }
    template <typename Promise>
    std::coroutine_handle<> await_suspend(std::coroutine_handle<Promise> self) noexcept {
      // Symmetric transfer back to whoever awaited us (or nowhere, for a detached root).
      std::coroutine_handle<> next = self.promise().continuation_;
      return next ? next : std::noop_coroutine();
    }
    void await_resume() const noexcept {}
  };
  FinalAwaiter final_suspend() noexcept { return {}; }

  void set_continuation(std::coroutine_handle<> continuation) noexcept {
    continuation_ = continuation;
  }

 private:
  std::coroutine_handle<> continuation_;
};

template <typename T>
class Promise final : public PromiseBase {
 public:
  Task<T> get_return_object() noexcept;

  template <typename U>
  requires std::is_convertible_v<U&&, T>
  void return_value(U&& value) noexcept(std::is_nothrow_constructible_v<T, U&&>) {
    result_.template emplace<1>(std::forward<U>(value));
  }
  void unhandled_exception() noexcept { result_.template emplace<2>(std::current_exception()); }

  T take_result() {
    // Moving the exception out leaves the frame without a reference to it, so the exception
    // object dies with its last catcher rather than with this frame (possibly on another thread).
    if (result_.index() == 2) std::rethrow_exception(std::exchange(std::get<2>(result_), nullptr));
    assert(result_.index() == 1 && "Task finished without a value");
    return std::move(std::get<1>(result_));
  }

 private:
  std::variant<std::monostate, T, std::exception_ptr> result_;
};

template <typename T>
class Promise<T&> final : public PromiseBase {
 public:
  Task<T&> get_return_object() noexcept;

  void return_value(T& value) noexcept { value_ = std::addressof(value); }
  void unhandled_exception() noexcept { exception_ = std::current_exception(); }

  T& take_result() {
    if (exception_) std::rethrow_exception(std::exchange(exception_, nullptr));
    assert(value_ != nullptr && "Task finished without a value");
    return *value_;
  }

 private:
  T* value_ = nullptr;
  std::exception_ptr exception_;
};

template <>
class Promise<void> final : public PromiseBase {
 public:
  Task<void> get_return_object() noexcept;

  void return_void() noexcept {}
  void unhandled_exception() noexcept { exception_ = std::current_exception(); }

  void take_result() {
    if (exception_) std::rethrow_exception(std::exchange(exception_, nullptr));
  }

 private:
  std::exception_ptr exception_;
};

}  // namespace task_internal

template <typename T>
class [[nodiscard]] Task {
 public:
  using promise_type = task_internal::Promise<T>;
  using Handle = std::coroutine_handle<promise_type>;

  Task() noexcept = default;
  explicit Task(Handle handle) noexcept : handle_(handle) {}
  Task(Task&& other) noexcept : handle_(std::exchange(other.handle_, {})) {}
  Task& operator=(Task&& other) noexcept {
    if (this != &other) {
      Reset();
      handle_ = std::exchange(other.handle_, {});
    }
    return *this;
  }
  Task(const Task&) = delete;
  Task& operator=(const Task&) = delete;
  ~Task() { Reset(); }

  // True when this Task owns a frame (it was not default-constructed or moved from).
  bool valid() const noexcept { return static_cast<bool>(handle_); }
  // True once the body has run to completion (returned or threw).
  bool done() const noexcept { return handle_ && handle_.done(); }

  auto operator co_await() && noexcept {
    struct Awaiter {
      Handle handle;
      bool await_ready() const noexcept { return false; }
      std::coroutine_handle<> await_suspend(std::coroutine_handle<> awaiter) noexcept {
        handle.promise().set_continuation(awaiter);
        return handle;  // Symmetric transfer into the (lazy) body.
      }
      decltype(auto) await_resume() { return handle.promise().take_result(); }
    };
    assert(handle_ && "awaiting an empty Task");
    return Awaiter{handle_};
  }

  // For executors that drive a Task without awaiting it from another coroutine: the frame stays
  // owned by this Task.
  Handle handle() const noexcept { return handle_; }

 private:
  void Reset() noexcept {
    if (handle_) std::exchange(handle_, {}).destroy();
  }

  Handle handle_;
};

namespace task_internal {

template <typename T>
Task<T> Promise<T>::get_return_object() noexcept {
  return Task<T>(std::coroutine_handle<Promise<T>>::from_promise(*this));
}
template <typename T>
Task<T&> Promise<T&>::get_return_object() noexcept {
  return Task<T&>(std::coroutine_handle<Promise<T&>>::from_promise(*this));
}
inline Task<void> Promise<void>::get_return_object() noexcept {
  return Task<void>(std::coroutine_handle<Promise<void>>::from_promise(*this));
}

}  // namespace task_internal
}  // namespace etsmgr

#endif  // ETSMGR_EXECUTOR_TASK_H_
