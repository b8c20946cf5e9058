// GlooStoreAdapter: gloo::rendezvous::Store over our TcpStore, with a key prefix. gloo reports
// store failures by exception; the adapter also keeps the first failure as a status, so that
// GlooCommunicator can return our message (key, store address, timeout) instead of gloo's.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "engine/parallel/tcp_store.h"
#include "gloo/rendezvous/store.h"

namespace dsv3 {

class GlooStoreAdapter final : public gloo::rendezvous::Store {
 public:
  // `timeout` bounds get() and the wait() overload without one.
  GlooStoreAdapter(TcpStore& store, std::string prefix, absl::Duration timeout)
      : store_(store), prefix_(std::move(prefix)), timeout_(timeout) {}

  void set(const std::string& key, const std::vector<char>& data) override;
  std::vector<char> get(const std::string& key) override;
  void wait(const std::vector<std::string>& keys) override;
  void wait(const std::vector<std::string>& keys,
            const std::chrono::milliseconds& timeout) override;

  const absl::Status& first_error() const { return first_error_; }

 private:
  std::string Key(const std::string& key) const { return prefix_ + "/" + key; }
  // Records `status` and throws it as a gloo::IoException.
  [[noreturn]] void Fail(absl::Status status);

  TcpStore& store_;
  const std::string prefix_;
  const absl::Duration timeout_;
  absl::Status first_error_;
};

}  // namespace dsv3
