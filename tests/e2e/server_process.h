// End-to-end helper: runs the real dsv3-server binary on free loopback ports and talks to it
// (gRPC stubs, /metrics over HTTP, signals).
#pragma once

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <memory>
#include <optional>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "dsv3/v1/inference.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "tests/test_util.h"

namespace dsv3::testing {

// A port that was free a moment ago (the kernel does not hand it out again right away).
inline int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

// The smoke model cache shared by all tests of this build (generated once, atomically).
inline std::string SmokeCacheDir() { return BinaryPath("test-cache"); }

class ServerProcess {
 public:
  // `http`: also serve the OpenAI-compatible HTTP API (--http-listen) on a free port.
  explicit ServerProcess(std::vector<std::string> args, bool http = false)
      : args_(std::move(args)), http_(http), log_path_(dir_.file("server.log")) {
    Spawn();
  }
  // Stops the server the way an operator would (Stop), so that it runs its shutdown path and
  // leak checkers see it exit.
  ~ServerProcess() { Stop(); }

  // SIGTERM; a second SIGTERM (stop now) if the drain outlasts `timeout` (a test may leave
  // streams open); SIGKILL if the server is still running 5 s after that, which fails the test.
  // Returns the exit code, or -1 when it ended by a signal. A server that already exited is
  // only reaped.
  int Stop(std::chrono::seconds timeout = std::chrono::seconds(15)) {
    if (Running()) {
      int code = SignalAndWait(SIGTERM, timeout);
      if (Running()) code = SignalAndWait(SIGTERM, std::chrono::seconds(5));
      if (Running()) {
        ADD_FAILURE() << "dsv3-server " << pid_ << " still running after two SIGTERMs; killed. "
                      << "Log:\n"
                      << log();
        kill(pid_, SIGKILL);
        waitpid(pid_, nullptr, 0);
        pid_ = -1;
        return -1;
      }
      return code;
    }
    return WIFEXITED(exit_status_) ? WEXITSTATUS(exit_status_) : -1;
  }

  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  int port() const { return port_; }
  int http_port() const { return http_port_; }
  std::string http_url() const { return "http://127.0.0.1:" + std::to_string(http_port_); }
  std::string log() const {
    std::ifstream in(log_path_);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }

  std::shared_ptr<grpc::Channel> Channel() const {
    return grpc::CreateChannel(address(), grpc::InsecureChannelCredentials());
  }
  std::unique_ptr<v1::Inference::Stub> Stub() const { return v1::Inference::NewStub(Channel()); }

  // The health status ("" = the whole server); nullopt when the call itself fails.
  std::optional<grpc::health::v1::HealthCheckResponse::ServingStatus> Health() const {
    auto stub = grpc::health::v1::Health::NewStub(Channel());
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
    grpc::health::v1::HealthCheckResponse response;
    if (!stub->Check(&context, {}, &response).ok()) return std::nullopt;
    return response.status();
  }

  // Waits until health says SERVING; false if the process died or time ran out. A port that
  // FreePort found free can be taken by another test's connection before the server binds it
  // (tests run in parallel): a server that could not listen is started again on new ports.
  bool WaitServing(std::chrono::seconds timeout = std::chrono::seconds(120)) {
    const auto end = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < end) {
      if (!Running()) {
        if (respawns_ < 3 && log().find("cannot listen") != std::string::npos) {
          ++respawns_;
          Spawn();
          continue;
        }
        return false;
      }
      // Until this process has bound its port, a health answer there may come from another
      // test's server that took the port first (this one then exits "cannot listen").
      if (log().find("listening on") != std::string::npos &&
          Health() == grpc::health::v1::HealthCheckResponse::SERVING) {
        return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }

  bool Running() {
    if (pid_ <= 0) return false;
    int status;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      exit_status_ = status;
      return false;
    }
    return true;
  }

  // Sends `signal` and waits up to `timeout` for the exit; the exit code, or -1 (killed or
  // still running).
  int SignalAndWait(int signal, std::chrono::milliseconds timeout) {
    kill(pid_, signal);
    const auto end = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < end) {
      if (!Running()) {
        return WIFEXITED(exit_status_) ? WEXITSTATUS(exit_status_) : -1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return -1;
  }
  void SendSignal(int signal) { kill(pid_, signal); }
  pid_t pid() const { return pid_; }
  // Waits up to `timeout` for the process to exit on its own: its exit code, or -1 (killed by
  // a signal or still running).
  int WaitExit(std::chrono::milliseconds timeout) {
    const auto end = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < end) {
      if (!Running()) return WIFEXITED(exit_status_) ? WEXITSTATUS(exit_status_) : -1;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return -1;
  }

  std::string Metrics() const {
    httplib::Client client("127.0.0.1", metrics_port_);
    auto res = client.Get("/metrics");
    return res && res->status == 200 ? res->body : "";
  }
  // The value of metric `name` (every sample has a model_name label) whose labels include
  // `label` (`finished_reason="abort"`; empty: the first sample of `name`), or -1.
  double Metric(const std::string& name, const std::string& label = "") const {
    const std::string text = Metrics();
    std::smatch m;
    const std::regex sample("\n" + name + "\\{[^}]*" + label + "[^}]*\\} ([-0-9.e+]+)\n");
    if (std::regex_search(text, m, sample)) {
      return std::stod(m[1]);
    }
    return -1;
  }

 private:
  // Starts the server on fresh ports (its output to log_path_).
  void Spawn() {
    port_ = FreePort();
    metrics_port_ = FreePort();
    std::vector<std::string> args = args_;
    if (http_) {
      http_port_ = FreePort();
      args.push_back("--http-listen=127.0.0.1:" + std::to_string(http_port_));
    }
    args.insert(args.begin(), BinaryPath("server/dsv3-server"));
    args.push_back("--listen=127.0.0.1:" + std::to_string(port_));
    args.push_back("--metrics-listen=127.0.0.1:" + std::to_string(metrics_port_));
    args.push_back("--threads=2");
    // These tests are of the CPU backend (CI has no GPU); --device auto would pick a GPU where
    // one is visible.
    if (std::none_of(args_.begin(), args_.end(),
                     [](const std::string& a) { return a.rfind("--device", 0) == 0; })) {
      args.push_back("--device=cpu");
    }
    const pid_t parent = getpid();
    pid_ = fork();
    if (pid_ == 0) {
      // The server dies with the test (a timeout, a crash) instead of living on under init.
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent) _exit(127);  // the test died before prctl took effect
      signal(SIGHUP, SIG_DFL);  // even under nohup: the server decides what SIGHUP does
      const int log = ::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      dup2(log, 1);
      dup2(log, 2);
      std::vector<char*> argv;
      for (std::string& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(127);
    }
  }

  std::vector<std::string> args_;  // the caller's flags (listen flags are added per spawn)
  bool http_ = false;
  int http_port_ = 0;
  TempDir dir_;
  int port_ = 0;
  int metrics_port_ = 0;
  std::string log_path_;
  pid_t pid_ = -1;
  int exit_status_ = 0;
  int respawns_ = 0;
};

// A test suite whose tests share one server: the suite's SetUpTestSuite calls
// StartSharedServer; the server stops after the suite's last test.
template <typename Suite>
class SharedServerTest : public ::testing::Test {
 protected:
  static void StartSharedServer(std::vector<std::string> args,
                                std::chrono::seconds timeout = std::chrono::seconds(300)) {
    server_ = new ServerProcess(std::move(args));
    ASSERT_TRUE(server_->WaitServing(timeout)) << server_->log();
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  // A dsv3-client command line against the shared server.
  static std::string Client(const std::string& args) {
    return ToolPath("dsv3-client") + " --server " + server_->address() + " " + args;
  }
  static inline ServerProcess* server_ = nullptr;
};

// Reads a whole Generate stream.
struct StreamResult {
  std::vector<int32_t> ids;
  std::string text;
  std::vector<std::string> text_deltas;
  v1::GenerateResponse last;
  grpc::Status status;
  int responses = 0;
};

inline StreamResult ReadGenerate(v1::Inference::Stub& stub, const v1::GenerateRequest& request,
                                 grpc::ClientContext* context = nullptr) {
  grpc::ClientContext own;
  if (context == nullptr) context = &own;
  StreamResult r;
  auto reader = stub.Generate(context, request);
  v1::GenerateResponse response;
  while (reader->Read(&response)) {
    r.ids.insert(r.ids.end(), response.token_ids().begin(), response.token_ids().end());
    r.text += response.text();
    r.text_deltas.push_back(response.text());
    r.last = response;
    ++r.responses;
  }
  r.status = reader->Finish();
  return r;
}

inline v1::GenerateRequest GreedyIds(std::vector<int32_t> ids, int max_tokens) {
  v1::GenerateRequest r;
  for (int32_t id : ids) r.mutable_token_ids()->add_ids(id);
  r.mutable_sampling()->set_temperature(0);
  r.mutable_sampling()->set_max_tokens(max_tokens);
  r.mutable_sampling()->set_ignore_eos(true);
  return r;
}

}  // namespace dsv3::testing
