#include "engine/parallel/socket_io.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>

#include "absl/strings/str_cat.h"

namespace dsv3::parallel_internal {
namespace {

std::string ErrnoText(int err) { return std::strerror(err); }

// poll()'s timeout: -1 waits forever.
int MillisUntil(absl::Time deadline) {
  if (deadline == absl::InfiniteFuture()) return -1;
  const absl::Duration left = deadline - absl::Now();
  if (left <= absl::ZeroDuration()) return 0;
  return static_cast<int>(std::min<int64_t>(absl::ToInt64Milliseconds(left) + 1, 1 << 30));
}

// Waits until `fd` is ready for `events`; false when the deadline passed.
absl::StatusOr<bool> PollUntil(int fd, short events, absl::Time deadline) {
  while (true) {
    pollfd p{fd, events, 0};
    const int r = poll(&p, 1, MillisUntil(deadline));
    if (r > 0) return true;
    if (r == 0) return false;
    if (errno != EINTR) return absl::UnavailableError(absl::StrCat("poll: ", ErrnoText(errno)));
  }
}

struct AddrInfoDeleter {
  void operator()(addrinfo* info) const { freeaddrinfo(info); }
};
using AddrInfoPtr = std::unique_ptr<addrinfo, AddrInfoDeleter>;

absl::StatusOr<AddrInfoPtr> Resolve(const std::string& host, int port, int socktype, int flags) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = socktype;
  hints.ai_flags = flags;
  addrinfo* result = nullptr;
  const std::string service = std::to_string(port);
  const int rc = getaddrinfo(host.empty() ? nullptr : host.c_str(), service.c_str(), &hints, &result);
  if (rc != 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot resolve '", host, "': ", gai_strerror(rc)));
  }
  return AddrInfoPtr(result);
}

}  // namespace

Fd& Fd::operator=(Fd&& other) noexcept {
  if (this != &other) {
    Reset();
    fd_ = other.Release();
  }
  return *this;
}

int Fd::Release() {
  const int fd = fd_;
  fd_ = -1;
  return fd;
}

void Fd::Reset() {
  if (fd_ >= 0) close(fd_);
  fd_ = -1;
}

absl::StatusOr<Fd> Listen(const std::string& host, int port) {
  const std::string bind_host = host == "0.0.0.0" ? "" : host;
  auto info = Resolve(bind_host, port, SOCK_STREAM, AI_PASSIVE);
  if (!info.ok()) return info.status();
  int last_errno = 0;
  for (addrinfo* a = info->get(); a != nullptr; a = a->ai_next) {
    Fd fd(socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol));
    if (!fd.valid()) {
      last_errno = errno;
      continue;
    }
    const int one = 1;
    setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd.get(), a->ai_addr, a->ai_addrlen) == 0 && listen(fd.get(), 128) == 0) return fd;
    last_errno = errno;
  }
  return absl::UnavailableError(absl::StrCat("cannot listen on ", host.empty() ? "*" : host, ":",
                                             port, ": ", ErrnoText(last_errno)));
}

absl::StatusOr<int> BoundPort(int fd) {
  sockaddr_storage addr{};
  socklen_t len = sizeof(addr);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    return absl::InternalError(absl::StrCat("getsockname: ", ErrnoText(errno)));
  }
  if (addr.ss_family == AF_INET) return ntohs(reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
  return ntohs(reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port);
}

absl::StatusOr<Fd> ConnectOnce(const std::string& host, int port, absl::Time deadline) {
  auto info = Resolve(host, port, SOCK_STREAM, 0);
  if (!info.ok()) return info.status();
  std::string last_error = "no address";
  for (addrinfo* a = info->get(); a != nullptr; a = a->ai_next) {
    Fd fd(socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a->ai_protocol));
    if (!fd.valid()) {
      last_error = ErrnoText(errno);
      continue;
    }
    int rc = connect(fd.get(), a->ai_addr, a->ai_addrlen);
    if (rc != 0 && errno == EINPROGRESS) {
      auto ready = PollUntil(fd.get(), POLLOUT, deadline);
      if (!ready.ok()) return ready.status();
      if (!*ready) return absl::DeadlineExceededError("connect timed out");
      int err = 0;
      socklen_t len = sizeof(err);
      getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
      rc = err == 0 ? 0 : -1;
      errno = err;
    }
    if (rc != 0) {
      last_error = ErrnoText(errno);
      continue;
    }
    // Back to blocking mode: reads and writes below poll with their own deadlines.
    fcntl(fd.get(), F_SETFL, fcntl(fd.get(), F_GETFL) & ~O_NONBLOCK);
    const int one = 1;
    setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
  }
  return absl::UnavailableError(last_error);
}

absl::Status ReadFull(int fd, void* data, size_t n, absl::Time deadline) {
  auto* p = static_cast<char*>(data);
  while (n > 0) {
    auto ready = PollUntil(fd, POLLIN, deadline);
    if (!ready.ok()) return ready.status();
    if (!*ready) return absl::DeadlineExceededError("read timed out");
    const ssize_t r = recv(fd, p, n, 0);
    if (r == 0) return absl::UnavailableError("connection closed by peer");
    if (r < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return absl::UnavailableError(absl::StrCat("recv: ", ErrnoText(errno)));
    }
    p += r;
    n -= static_cast<size_t>(r);
  }
  return absl::OkStatus();
}

absl::Status WriteFull(int fd, const void* data, size_t n, absl::Time deadline) {
  const auto* p = static_cast<const char*>(data);
  while (n > 0) {
    auto ready = PollUntil(fd, POLLOUT, deadline);
    if (!ready.ok()) return ready.status();
    if (!*ready) return absl::DeadlineExceededError("write timed out");
    const ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return absl::UnavailableError(absl::StrCat("send: ", ErrnoText(errno)));
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> LocalAddressToward(const std::string& host, int port) {
  auto info = Resolve(host, port, SOCK_DGRAM, 0);
  if (!info.ok()) return info.status();
  const addrinfo* a = info->get();
  Fd fd(socket(a->ai_family, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  // connect() on a UDP socket only picks the route and the source address.
  if (!fd.valid() || connect(fd.get(), a->ai_addr, a->ai_addrlen) != 0) {
    return absl::UnavailableError(
        absl::StrCat("no route to ", host, ":", port, ": ", ErrnoText(errno)));
  }
  sockaddr_storage local{};
  socklen_t len = sizeof(local);
  if (getsockname(fd.get(), reinterpret_cast<sockaddr*>(&local), &len) != 0) {
    return absl::InternalError(absl::StrCat("getsockname: ", ErrnoText(errno)));
  }
  char text[INET6_ADDRSTRLEN] = {};
  const void* addr = local.ss_family == AF_INET
                         ? static_cast<const void*>(&reinterpret_cast<sockaddr_in*>(&local)->sin_addr)
                         : static_cast<const void*>(&reinterpret_cast<sockaddr_in6*>(&local)->sin6_addr);
  inet_ntop(local.ss_family, addr, text, sizeof(text));
  return std::string(text);
}

}  // namespace dsv3::parallel_internal
