#include "engine/parallel/gloo_store_adapter.h"

#include "gloo/common/error.h"

namespace dsv3 {

void GlooStoreAdapter::Fail(absl::Status status) {
  if (first_error_.ok()) first_error_ = status;
  throw gloo::IoException(std::string(status.message()));
}

void GlooStoreAdapter::set(const std::string& key, const std::vector<char>& data) {
  if (absl::Status st = store_.Set(Key(key), std::string(data.begin(), data.end())); !st.ok()) {
    Fail(st);
  }
}

std::vector<char> GlooStoreAdapter::get(const std::string& key) {
  auto value = store_.Get(Key(key), timeout_);
  if (!value.ok()) Fail(value.status());
  return std::vector<char>(value->begin(), value->end());
}

void GlooStoreAdapter::wait(const std::vector<std::string>& keys) {
  wait(keys, std::chrono::milliseconds(absl::ToInt64Milliseconds(timeout_)));
}

void GlooStoreAdapter::wait(const std::vector<std::string>& keys,
                            const std::chrono::milliseconds& timeout) {
  // One deadline for all the keys; each Get waits for what is left of it.
  const absl::Time deadline = absl::Now() + absl::FromChrono(timeout);
  for (const std::string& key : keys) {
    const absl::Duration left = std::max(deadline - absl::Now(), absl::ZeroDuration());
    auto value = store_.Get(Key(key), left);
    if (!value.ok()) Fail(value.status());
  }
}

}  // namespace dsv3
