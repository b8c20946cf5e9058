// Blocking TCP helpers with deadlines, shared by the rendezvous store and the launcher's
// address discovery. Every call that waits takes a deadline, so no caller can hang forever.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace dsv3::parallel_internal {

// An owned file descriptor, closed on destruction.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() { Reset(); }
  Fd(Fd&& other) noexcept : fd_(other.Release()) {}
  Fd& operator=(Fd&& other) noexcept;
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int Release();
  void Reset();

 private:
  int fd_ = -1;
};

// Listens on `host`:`port` (port 0: any free port; host "" or "0.0.0.0": every interface).
absl::StatusOr<Fd> Listen(const std::string& host, int port);
// The port a listening socket is bound to.
absl::StatusOr<int> BoundPort(int fd);

// Connects once (no retries). UnavailableError carries the errno text ("Connection refused").
absl::StatusOr<Fd> ConnectOnce(const std::string& host, int port, absl::Time deadline);

// Reads exactly `n` bytes. DeadlineExceeded when the deadline passes first, Unavailable when the
// peer closes the connection or the socket fails.
absl::Status ReadFull(int fd, void* data, size_t n, absl::Time deadline);
absl::Status WriteFull(int fd, const void* data, size_t n, absl::Time deadline);

// The local IP address this host uses to reach `host`:`port` (no packet is sent), for ranks on
// several hosts to advertise an address their peers can reach.
absl::StatusOr<std::string> LocalAddressToward(const std::string& host, int port);

}  // namespace dsv3::parallel_internal
