// dsv3-server startup failures after the flags are read: each one ends with a message naming
// the flag (and the file) and exit status 1, never a crash. Before the fix, all of them ended in
// SIGSEGV from Server::Drain run by ~Server on a server that never started.
#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/e2e/server_process.h"

namespace dsv3::testing::server_startup_test {
namespace {

using ::testing::HasSubstr;

// Runs dsv3-server with `flags` (a model, no metrics endpoint, any free gRPC port unless the
// flags say otherwise); a server that does not exit within a minute is killed.
CommandResult RunServer(const std::string& flags) {
  return RunCommand("timeout -s KILL 60 " + BinaryPath("server/dsv3-server") + " --model " +
                    FixturePath("tiny-fp8") + " --threads 1 " + flags);
}

constexpr char kOwnPorts[] = " --listen 127.0.0.1:0 --metrics-listen '' ";

// A loopback TCP socket listening on a port of its own, closed when it dies.
class ListeningSocket {
 public:
  ListeningSocket() : fd_(socket(AF_INET, SOCK_STREAM, 0)) {
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    EXPECT_EQ(listen(fd_, 1), 0);
    socklen_t len = sizeof(addr);
    getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
  }
  ~ListeningSocket() { close(fd_); }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }

 private:
  int fd_;
  int port_ = 0;
};

void ExpectCleanFailure(const CommandResult& r, const std::string& message) {
  EXPECT_FALSE(r.signaled) << r.err;
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_THAT(r.err, HasSubstr(message));
}

TEST(ServerStartupTest, StartupFailureExitsCleanlyWithEmptyApiKeyFile) {
  TempDir dir;
  std::ofstream(dir.file("empty"));
  std::ofstream(dir.file("blank")) << "  \n\t\n# a comment, no key\n";
  for (const char* name : {"empty", "blank"}) {
    const CommandResult r = RunServer(std::string(kOwnPorts) + "--api-key-file " + dir.file(name));
    ExpectCleanFailure(r, "--api-key-file: the API key file " + dir.file(name) + " holds no key");
  }
}

TEST(ServerStartupTest, StartupFailureExitsCleanlyWhenPortInUse) {
  ListeningSocket taken;
  const CommandResult r = RunServer("--metrics-listen '' --listen " + taken.address());
  ExpectCleanFailure(r, "--listen: cannot listen on " + taken.address());
}

// Bug 3: gRPC's default SO_REUSEPORT let a second server bind the same port and take half of
// the new connections.
TEST(ServerStartupTest, StartupFailureExitsCleanlyWhenAnotherServerHasThePort) {
  ServerProcess first({"--model=" + FixturePath("tiny-fp8"), "--num-kv-blocks=32",
                       "--kv-block-size=16"});
  ASSERT_TRUE(first.WaitServing()) << first.log();
  const CommandResult r = RunServer("--metrics-listen '' --listen " + first.address());
  ExpectCleanFailure(r, "--listen: cannot listen on " + first.address());
  EXPECT_EQ(first.Health(), grpc::health::v1::HealthCheckResponse::SERVING);
}

TEST(ServerStartupTest, StartupFailureExitsCleanlyWithUnassignableAddress) {
  // 192.0.2.0/24 is TEST-NET-1: never an address of this host.
  const CommandResult r = RunServer("--metrics-listen '' --listen 192.0.2.1:50051");
  ExpectCleanFailure(r, "--listen: cannot listen on 192.0.2.1:50051");
}

TEST(ServerStartupTest, StartupFailureExitsCleanlyWhenMetricsPortInUse) {
  ListeningSocket taken;
  const CommandResult r = RunServer("--listen 127.0.0.1:0 --metrics-listen " + taken.address());
  ExpectCleanFailure(r, "--metrics-listen: cannot listen for metrics on " + taken.address());
}

// A certificate and key pair, a second key, and a file that is no PEM at all.
class TlsFiles {
 public:
  TlsFiles() {
    const CommandResult r = RunCommand(
        "sh -c 'cd " + dir_.path().string() +
        " && openssl req -x509 -newkey rsa:2048 -nodes -keyout server.key -out server.pem "
        "-days 1 -subj /CN=localhost && openssl genrsa -out other.key 2048'");
    EXPECT_EQ(r.exit_code, 0) << r.err;
    std::ofstream(file("garbage.pem")) << "this is not a certificate\n";
  }
  std::string file(const std::string& name) const { return dir_.file(name); }

 private:
  TempDir dir_;
};

TEST(ServerStartupTest, StartupFailureExitsCleanlyWithGarbageTlsCert) {
  TlsFiles tls;
  const CommandResult r = RunServer(std::string(kOwnPorts) + "--tls-cert " +
                                    tls.file("garbage.pem") + " --tls-key " +
                                    tls.file("server.key"));
  ExpectCleanFailure(r, "--tls-cert " + tls.file("garbage.pem") + ": holds no PEM certificate");
}

TEST(ServerStartupTest, StartupFailureExitsCleanlyWithMismatchedTlsKey) {
  TlsFiles tls;
  const CommandResult r = RunServer(std::string(kOwnPorts) + "--tls-cert " +
                                    tls.file("server.pem") + " --tls-key " +
                                    tls.file("other.key"));
  ExpectCleanFailure(r, "--tls-key " + tls.file("other.key") +
                            ": is not the key of the certificate in --tls-cert");
}

TEST(ServerStartupTest, StartupFailureExitsCleanlyWithGarbageTlsClientCa) {
  TlsFiles tls;
  const CommandResult r = RunServer(std::string(kOwnPorts) + "--tls-cert " +
                                    tls.file("server.pem") + " --tls-key " +
                                    tls.file("server.key") + " --tls-client-ca " +
                                    tls.file("garbage.pem"));
  ExpectCleanFailure(r,
                     "--tls-client-ca " + tls.file("garbage.pem") + ": holds no PEM certificate");
}

}  // namespace
}  // namespace dsv3::testing::server_startup_test
