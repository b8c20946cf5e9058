// Issue 19, bug 12: with API keys on, server reflection and /metrics answered without a key, and
// /metrics stayed plain HTTP under mutual TLS, undocumented. Now: with keys, reflection is off
// and /metrics needs a key unless the flags say otherwise; under TLS, plain-HTTP metrics on an
// address off this host need --metrics-allow-plaintext.
#include <fstream>

#include "gmock/gmock.h"
#include "grpcpp/generic/generic_stub.h"
#include "gtest/gtest.h"
#include "tests/e2e/server_process.h"

namespace dsv3::testing::server_exposure_test {
namespace {

using ::testing::HasSubstr;

constexpr char kKey[] = "exposure-key";

std::vector<std::string> Args(std::vector<std::string> extra) {
  std::vector<std::string> args = {"--model=" + FixturePath("tiny-fp8"), "--num-kv-blocks=32",
                                   "--kv-block-size=16"};
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

// One ServerReflectionRequest{list_services: ""} (field 7, empty string), unauthenticated. Its
// status, and in `services` the raw response (it names the services).
grpc::Status ListServices(const ServerProcess& server, std::string* services) {
  grpc::GenericStub stub(server.Channel());
  grpc::CompletionQueue cq;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  const char request_bytes[] = {0x3a, 0x00};
  grpc::Slice slice(request_bytes, sizeof(request_bytes));
  grpc::ByteBuffer request(&slice, 1), response;
  grpc::Status status;
  auto call = stub.PrepareUnaryCall(
      &context, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", request, &cq);
  call->StartCall();
  call->Finish(&response, &status, reinterpret_cast<void*>(1));
  void* tag;
  bool ok;
  EXPECT_TRUE(cq.Next(&tag, &ok));
  std::vector<grpc::Slice> slices;
  services->clear();
  if (status.ok() && response.Dump(&slices).ok()) {
    for (const grpc::Slice& s : slices) services->append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
  return status;
}

// GET /metrics with `headers`: the status code (-1: no answer).
int MetricsStatus(const ServerProcess& server, const httplib::Headers& headers = {}) {
  const std::string text = server.log();
  // The port is the one ServerProcess passed; ask the server's log line for it.
  const size_t at = text.find("metrics on port ");
  if (at == std::string::npos) return -1;
  const int port = std::stoi(text.substr(at + 16));
  httplib::Client client("127.0.0.1", port);
  auto res = client.Get("/metrics", headers);
  return res ? res->status : -1;
}

TEST(ServerExposureTest, WithoutApiKeysReflectionAndMetricsAreOpen) {
  ServerProcess server(Args({}));
  ASSERT_TRUE(server.WaitServing()) << server.log();
  std::string services;
  ASSERT_TRUE(ListServices(server, &services).ok());
  EXPECT_THAT(services, HasSubstr("dsv3.v1.Inference"));
  EXPECT_EQ(MetricsStatus(server), 200);
}

TEST(ServerExposureTest, ApiKeysTurnReflectionOffAndPutMetricsBehindTheKey) {
  ServerProcess server(Args({std::string("--api-key=") + kKey}));
  ASSERT_TRUE(server.WaitServing()) << server.log();
  std::string services;
  EXPECT_EQ(ListServices(server, &services).error_code(), grpc::StatusCode::UNIMPLEMENTED);
  EXPECT_EQ(MetricsStatus(server), 401);
  EXPECT_EQ(MetricsStatus(server, {{"Authorization", "Bearer wrong"}}), 401);
  EXPECT_EQ(MetricsStatus(server, {{"Authorization", std::string("Bearer ") + kKey}}), 200);
  EXPECT_EQ(MetricsStatus(server, {{"X-API-Key", kKey}}), 200);
  EXPECT_THAT(server.log(), HasSubstr("(API key required), reflection off"));
}

TEST(ServerExposureTest, OperatorsCanOpenThemExplicitly) {
  ServerProcess server(
      Args({std::string("--api-key=") + kKey, "--reflection=on", "--metrics-auth=none"}));
  ASSERT_TRUE(server.WaitServing()) << server.log();
  std::string services;
  EXPECT_TRUE(ListServices(server, &services).ok());
  EXPECT_EQ(MetricsStatus(server), 200);
}

TEST(ServerExposureTest, ReflectionCanBeTurnedOffWithoutKeys) {
  ServerProcess server(Args({"--reflection=off"}));
  ASSERT_TRUE(server.WaitServing()) << server.log();
  std::string services;
  EXPECT_EQ(ListServices(server, &services).error_code(), grpc::StatusCode::UNIMPLEMENTED);
}

CommandResult RunServer(const std::string& flags) {
  return RunCommand("timeout -s KILL 60 " + BinaryPath("server/dsv3-server") + " --model " +
                    FixturePath("tiny-fp8") + " --threads 1 --listen 127.0.0.1:0 " + flags);
}

TEST(ServerExposureTest, PlainMetricsOffThisHostUnderTlsFailStartup) {
  TempDir dir;
  std::ofstream(dir.file("pem")) << "not checked before the exposure\n";
  const std::string tls = " --tls-cert " + dir.file("pem") + " --tls-key " + dir.file("pem");
  const CommandResult r = RunServer("--metrics-listen 0.0.0.0:0" + tls);
  EXPECT_FALSE(r.signaled);
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_THAT(r.err, HasSubstr("--metrics-listen 0.0.0.0:0: metrics are plain HTTP"));
  EXPECT_THAT(r.err, HasSubstr("--metrics-allow-plaintext"));
}

TEST(ServerExposureTest, MetricsAuthKeyWithoutKeysFailsStartup) {
  const CommandResult r = RunServer("--metrics-listen '' --metrics-auth key");
  EXPECT_FALSE(r.signaled);
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_THAT(r.err, HasSubstr("--metrics-auth key: no API keys are configured"));
}

}  // namespace
}  // namespace dsv3::testing::server_exposure_test
