#include "engine/parallel/tcp_store.h"

#include <sys/socket.h>

#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "engine/parallel/socket_io.h"
#include "engine/util/status_macros.h"

namespace dsv3 {
namespace {

using parallel_internal::Fd;
using parallel_internal::ReadFull;
using parallel_internal::WriteFull;

// Wire format (host byte order: every rank runs the same binary on the same architecture).
// Request:  u8 op, u32 key size, key, then
//   kSet:   u32 value size, value            response: u8 0
//   kGet:   i64 timeout in milliseconds      response: u8 found, u32 value size, value
enum Op : uint8_t { kSet = 1, kGet = 2 };
constexpr uint32_t kMaxFieldBytes = 64u << 20;

absl::Status WriteString(int fd, const std::string& s, absl::Time deadline) {
  const uint32_t size = static_cast<uint32_t>(s.size());
  DSV3_RETURN_IF_ERROR(WriteFull(fd, &size, sizeof(size), deadline));
  return WriteFull(fd, s.data(), s.size(), deadline);
}

absl::StatusOr<std::string> ReadString(int fd, absl::Time deadline) {
  uint32_t size = 0;
  DSV3_RETURN_IF_ERROR(ReadFull(fd, &size, sizeof(size), deadline));
  if (size > kMaxFieldBytes) {
    return absl::DataLossError(absl::StrCat("store message field of ", size, " bytes"));
  }
  std::string s(size, '\0');
  DSV3_RETURN_IF_ERROR(ReadFull(fd, s.data(), size, deadline));
  return s;
}

std::string TimeoutError(const std::string& key, const std::string& where, absl::Duration timeout) {
  return absl::StrCat("rendezvous key '", key, "' was not set within ",
                      absl::FormatDuration(timeout), " (store at ", where,
                      "); a rank has not started or cannot reach the store");
}

}  // namespace

// Rank 0's side: the table, and one thread per connected rank serving its requests.
class TcpStore::Server {
 public:
  explicit Server(Fd listener) : listener_(std::move(listener)) {
    accept_thread_ = std::thread([this] { AcceptLoop(); });
  }

  ~Server() {
    {
      absl::MutexLock lock(&mu_);
      stopping_ = true;
      for (int fd : connections_) shutdown(fd, SHUT_RDWR);
    }
    shutdown(listener_.get(), SHUT_RDWR);
    accept_thread_.join();
    for (std::thread& t : connection_threads_) t.join();
  }

  void Set(const std::string& key, const std::string& value) {
    absl::MutexLock lock(&mu_);
    table_[key] = value;
  }

  void Abort(const absl::Status& reason) {
    absl::MutexLock lock(&mu_);
    if (aborted_.ok()) aborted_ = reason;
  }

  // False when the key did not appear in time (or the server stops); the abort reason once
  // Abort was called.
  absl::StatusOr<bool> Get(const std::string& key, absl::Duration timeout, std::string* value) {
    absl::MutexLock lock(&mu_);
    auto present = [&]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
      return stopping_ || !aborted_.ok() || table_.contains(key);
    };
    mu_.AwaitWithTimeout(absl::Condition(&present), timeout);
    if (!aborted_.ok()) return aborted_;
    auto it = table_.find(key);
    if (it == table_.end()) return false;
    *value = it->second;
    return true;
  }

 private:
  void AcceptLoop() {
    while (true) {
      Fd conn(accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
      absl::MutexLock lock(&mu_);
      if (stopping_) return;
      if (!conn.valid()) continue;  // a transient accept error; keep serving
      connections_.push_back(conn.get());
      connection_threads_.emplace_back([this, fd = conn.Release()] { Serve(Fd(fd)); });
    }
  }

  // Serves one rank until it disconnects, sends garbage, or the server stops.
  void Serve(Fd conn) {
    const int fd = conn.get();
    while (HandleOne(fd).ok()) {
    }
    absl::MutexLock lock(&mu_);
    std::erase(connections_, fd);
  }

  absl::Status HandleOne(int fd) {
    const absl::Time forever = absl::InfiniteFuture();
    uint8_t op = 0;
    DSV3_RETURN_IF_ERROR(ReadFull(fd, &op, 1, forever));
    // A request, once started, arrives at once; a rank that stalls mid-message is cut off.
    const absl::Time deadline = absl::Now() + absl::Seconds(30);
    DSV3_ASSIGN_OR_RETURN(std::string key, ReadString(fd, deadline));
    if (op == kSet) {
      DSV3_ASSIGN_OR_RETURN(std::string value, ReadString(fd, deadline));
      Set(key, value);
      const uint8_t ok = 0;
      return WriteFull(fd, &ok, 1, deadline);
    }
    if (op != kGet) return absl::DataLossError("unknown store op");
    int64_t timeout_ms = 0;
    DSV3_RETURN_IF_ERROR(ReadFull(fd, &timeout_ms, sizeof(timeout_ms), deadline));
    std::string value;
    auto got = Get(key, absl::Milliseconds(timeout_ms), &value);
    const uint8_t found = got.ok() && *got ? 1 : 0;
    const absl::Time reply_deadline = absl::Now() + absl::Seconds(30);
    DSV3_RETURN_IF_ERROR(WriteFull(fd, &found, 1, reply_deadline));
    return found ? WriteString(fd, value, reply_deadline) : absl::OkStatus();
  }

  Fd listener_;
  std::thread accept_thread_;
  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status aborted_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, std::string> table_ ABSL_GUARDED_BY(mu_);
  std::vector<int> connections_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread> connection_threads_ ABSL_GUARDED_BY(mu_);
};

// The other ranks' side: one connection, one request at a time.
class TcpStore::Client {
 public:
  explicit Client(Fd conn) : fd_(conn.get()), conn_(std::move(conn)) {}

  // Fails the request under way (its read or write sees the connection shut down) and every
  // later one. Shut down, not closed: the descriptor stays this object's until it dies.
  void Abort(const absl::Status& reason) {
    absl::MutexLock lock(&abort_mu_);
    if (!aborted_.ok()) return;
    aborted_ = reason;
    shutdown(fd_, SHUT_RDWR);
  }

  absl::Status aborted() {
    absl::MutexLock lock(&abort_mu_);
    return aborted_;
  }

  absl::Status Set(const std::string& key, const std::string& value) {
    absl::MutexLock lock(&mu_);
    const absl::Time deadline = absl::Now() + absl::Seconds(30);
    const uint8_t op = kSet;
    DSV3_RETURN_IF_ERROR(WriteFull(conn_.get(), &op, 1, deadline));
    DSV3_RETURN_IF_ERROR(WriteString(conn_.get(), key, deadline));
    DSV3_RETURN_IF_ERROR(WriteString(conn_.get(), value, deadline));
    uint8_t ok = 1;
    return ReadFull(conn_.get(), &ok, 1, deadline);
  }

  // found == false: the server answered that the key did not appear in time.
  absl::Status Get(const std::string& key, absl::Duration timeout, bool* found,
                   std::string* value) {
    absl::MutexLock lock(&mu_);
    // The server answers after `timeout`; the margin covers the round trip.
    const absl::Time deadline = absl::Now() + timeout + absl::Seconds(10);
    const uint8_t op = kGet;
    const int64_t timeout_ms = absl::ToInt64Milliseconds(timeout);
    DSV3_RETURN_IF_ERROR(WriteFull(conn_.get(), &op, 1, deadline));
    DSV3_RETURN_IF_ERROR(WriteString(conn_.get(), key, deadline));
    DSV3_RETURN_IF_ERROR(WriteFull(conn_.get(), &timeout_ms, sizeof(timeout_ms), deadline));
    uint8_t present = 0;
    DSV3_RETURN_IF_ERROR(ReadFull(conn_.get(), &present, 1, deadline));
    *found = present != 0;
    if (!*found) return absl::OkStatus();
    DSV3_ASSIGN_OR_RETURN(*value, ReadString(conn_.get(), deadline));
    return absl::OkStatus();
  }

 private:
  const int fd_;  // conn_'s descriptor, for Abort, which must not wait for mu_
  absl::Mutex mu_;
  Fd conn_ ABSL_GUARDED_BY(mu_);
  absl::Mutex abort_mu_;
  absl::Status aborted_ ABSL_GUARDED_BY(abort_mu_);
};

absl::StatusOr<std::unique_ptr<TcpStore>> TcpStore::Create(const TcpStoreOptions& options) {
  if (options.is_server) {
    // Every interface: MASTER_ADDR is how the others reach rank 0, which may be a name that
    // resolves to an address rank 0 cannot bind (a Kubernetes service).
    DSV3_ASSIGN_OR_RETURN(Fd listener, parallel_internal::Listen("", options.port));
    DSV3_ASSIGN_OR_RETURN(const int port, parallel_internal::BoundPort(listener.get()));
    std::unique_ptr<TcpStore> store(new TcpStore(options.host, port));
    store->server_ = std::make_unique<Server>(std::move(listener));
    return store;
  }
  std::unique_ptr<TcpStore> store(new TcpStore(options.host, options.port));
  const absl::Time deadline = absl::Now() + options.connect_timeout;
  absl::Status last;
  while (true) {
    auto conn = parallel_internal::ConnectOnce(options.host, options.port, deadline);
    if (conn.ok()) {
      store->client_ = std::make_unique<Client>(*std::move(conn));
      return store;
    }
    last = conn.status();
    // Refused or unresolvable: rank 0 (or its DNS name) may not be up yet; retry until the end.
    if (absl::Now() + absl::Milliseconds(100) >= deadline) break;
    absl::SleepFor(absl::Milliseconds(100));
  }
  return absl::UnavailableError(
      absl::StrCat("cannot reach the rendezvous store at ", store->Describe(), " within ",
                   absl::FormatDuration(options.connect_timeout), " (last error: ",
                   last.message(), "); is rank 0 running and MASTER_ADDR reachable?"));
}

TcpStore::TcpStore(std::string host, int port) : host_(std::move(host)), port_(port) {}

TcpStore::~TcpStore() = default;

void TcpStore::Abort(const absl::Status& reason) {
  if (server_) server_->Abort(reason);
  if (client_) client_->Abort(reason);
}

std::string TcpStore::Describe() const {
  return absl::StrCat("MASTER_ADDR:MASTER_PORT = ", host_, ":", port_);
}

absl::Status TcpStore::Set(const std::string& key, const std::string& value) {
  if (server_) {
    server_->Set(key, value);
    return absl::OkStatus();
  }
  absl::Status st = client_->Set(key, value);
  if (absl::Status aborted = client_->aborted(); !st.ok() && !aborted.ok()) return aborted;
  if (!st.ok()) {
    return absl::UnavailableError(absl::StrCat("setting rendezvous key '", key, "' at ",
                                               Describe(), ": ", st.message()));
  }
  return st;
}

absl::StatusOr<std::string> TcpStore::Get(const std::string& key, absl::Duration timeout) {
  std::string value;
  bool found = false;
  if (server_) {
    DSV3_ASSIGN_OR_RETURN(found, server_->Get(key, timeout, &value));
  } else if (absl::Status st = client_->Get(key, timeout, &found, &value); !st.ok()) {
    if (absl::Status aborted = client_->aborted(); !aborted.ok()) return aborted;
    return absl::UnavailableError(absl::StrCat("reading rendezvous key '", key, "' at ",
                                               Describe(), ": ", st.message()));
  }
  if (!found) return absl::DeadlineExceededError(TimeoutError(key, Describe(), timeout));
  return value;
}

}  // namespace dsv3
