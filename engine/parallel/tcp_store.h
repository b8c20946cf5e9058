// TcpStore: the rendezvous key-value store. Rank 0 serves it on MASTER_ADDR:MASTER_PORT; the
// other ranks connect to it. Ranks exchange what they need to find each other through it (gloo's
// pair addresses, NCCL's unique id) and nothing else: after rendezvous all traffic goes through
// the communicator.
//
// Every wait is bounded: connecting retries (rank 0 may start after the workers) until the
// connect timeout, and Get waits for a key until its timeout. Errors name the key, the store's
// address and the timeout, which is what an operator needs to find the rank that did not come.
#pragma once

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace dsv3 {

struct TcpStoreOptions {
  std::string host;  // MASTER_ADDR; the server listens on every interface
  int port = 0;      // MASTER_PORT; 0 on the server: any free port (read it back with port())
  bool is_server = false;
  absl::Duration connect_timeout = absl::Seconds(60);  // clients: how long to retry connecting
};

class TcpStore {
 public:
  // The server starts listening before it returns, so a port chosen here can be handed to
  // workers. A client returns once connected, or Unavailable after connect_timeout.
  static absl::StatusOr<std::unique_ptr<TcpStore>> Create(const TcpStoreOptions& options);
  ~TcpStore();
  TcpStore(const TcpStore&) = delete;
  TcpStore& operator=(const TcpStore&) = delete;

  // Sets (or replaces) `key`. Unavailable when the server is gone.
  absl::Status Set(const std::string& key, const std::string& value);
  // The value of `key`, waiting until some rank sets it. DeadlineExceeded after `timeout`,
  // naming the key, the store and the timeout; Unavailable when the server is gone.
  absl::StatusOr<std::string> Get(const std::string& key, absl::Duration timeout);

  // Every pending and later Get of this process fails with `reason` at once (a worker this
  // process spawned died during rendezvous: waiting for it is pointless). A client also shuts
  // its connection down, so its Sets fail with `reason` too.
  void Abort(const absl::Status& reason);

  int port() const { return port_; }
  // "MASTER_ADDR:MASTER_PORT = host:port", for error messages.
  std::string Describe() const;

 private:
  class Server;
  class Client;
  TcpStore(std::string host, int port);

  std::string host_;
  int port_;
  std::unique_ptr<Server> server_;  // rank 0
  std::unique_ptr<Client> client_;  // other ranks
};

}  // namespace dsv3
