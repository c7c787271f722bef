// A Keyspace in a plain map, for tests and the fuzzer: the commands' semantics without tables.
#ifndef ETSREDIS_MAP_KEYSPACE_H_
#define ETSREDIS_MAP_KEYSPACE_H_

#include <map>
#include <mutex>
#include <optional>
#include <string>

#include "etsredis/commands.h"

namespace etsredis {

class MapKeyspace final : public Keyspace {
 public:
  absl::StatusOr<std::optional<std::string>> Get(const std::string& key) override {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = map_.find(key);
    if (it == map_.end()) return std::optional<std::string>();
    return std::optional<std::string>(it->second);
  }
  absl::Status Set(const std::string& key, std::string value) override {
    std::lock_guard<std::mutex> lock(mu_);
    map_[key] = std::move(value);
    return absl::OkStatus();
  }
  absl::StatusOr<bool> SetNew(const std::string& key, std::string value) override {
    std::lock_guard<std::mutex> lock(mu_);
    return map_.emplace(key, std::move(value)).second;
  }
  absl::StatusOr<bool> Modify(const std::string& key, const std::function<void(std::string&)>& fn,
                              std::optional<std::string> if_absent) override {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = map_.find(key);
    if (it == map_.end()) {
      if (!if_absent.has_value()) return false;
      it = map_.emplace(key, *std::move(if_absent)).first;
    }
    fn(it->second);
    return true;
  }
  absl::StatusOr<bool> Erase(const std::string& key) override {
    std::lock_guard<std::mutex> lock(mu_);
    return map_.erase(key) > 0;
  }
  absl::StatusOr<bool> Exists(const std::string& key) override {
    std::lock_guard<std::mutex> lock(mu_);
    return map_.count(key) > 0;
  }
  absl::StatusOr<size_t> Size() override {
    std::lock_guard<std::mutex> lock(mu_);
    return map_.size();
  }
  absl::Status Clear() override {
    std::lock_guard<std::mutex> lock(mu_);
    map_.clear();
    return absl::OkStatus();
  }

 private:
  std::mutex mu_;
  std::map<std::string, std::string> map_;
};

}  // namespace etsredis

#endif  // ETSREDIS_MAP_KEYSPACE_H_
