// API keys, TLS and mutual TLS, with certificates made here by openssl.
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/e2e/server_process.h"

namespace dsv3::testing::server_security_test {
namespace {

using ::testing::HasSubstr;

std::vector<std::string> TinyArgs() {
  return {"--model=" + FixturePath("tiny-fp8"), "--num-kv-blocks=32", "--kv-block-size=16"};
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

grpc::Status CallGenerate(const std::shared_ptr<grpc::Channel>& channel,
                          const std::string& api_key = "") {
  auto stub = v1::Inference::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
  if (!api_key.empty()) context.AddMetadata("authorization", "Bearer " + api_key);
  return ReadGenerate(*stub, GreedyIds({0, 1, 2}, 4), &context).status;
}

TEST(ServerSecurity, ApiKeys) {
  TempDir dir;
  std::ofstream(dir.file("keys")) << "# keys\nfile-key\n";
  std::vector<std::string> args = TinyArgs();
  args.push_back("--api-key=flag-key");
  args.push_back("--api-key-file=" + dir.file("keys"));
  ServerProcess server(args);
  // Health answers without a key.
  ASSERT_TRUE(server.WaitServing()) << server.log();
  const grpc::Status none = CallGenerate(server.Channel());
  EXPECT_EQ(none.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(none.error_message(), HasSubstr("requires an API key"));
  EXPECT_EQ(CallGenerate(server.Channel(), "wrong").error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_TRUE(CallGenerate(server.Channel(), "flag-key").ok());
  EXPECT_TRUE(CallGenerate(server.Channel(), "file-key").ok());

  auto stub = server.Stub();
  grpc::ClientContext context;
  v1::ModelInfo info;
  EXPECT_EQ(stub->GetModelInfo(&context, {}, &info).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);

  const CommandResult r = RunCommand(ToolPath("dsv3-client") + " --server " +
                                     server.address() + " --prompt-ids 1,2 --max-new-tokens 3");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("error: UNAUTHENTICATED: "));
  const CommandResult ok =
      RunCommand(ToolPath("dsv3-client") + " --server " + server.address() +
                 " --api-key file-key --prompt-ids 1,2 --max-new-tokens 3");
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
}

class Certificates {
 public:
  Certificates() {
    const std::string d = dir_.path().string();
    const std::string script =
        "cd " + d +
        " && set -e; "
        "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 1 "
        "  -subj /CN=dsv3-test-ca; "
        "printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > san.ext; "
        "openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr "
        "  -subj /CN=localhost; "
        "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
        "  -out server.pem -days 1 -extfile san.ext; "
        "openssl req -newkey rsa:2048 -nodes -keyout client.key -out client.csr "
        "  -subj /CN=dsv3-test-client; "
        "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
        "  -out client.pem -days 1";
    const CommandResult r = RunCommand("sh -c \"" + script + "\"");
    EXPECT_EQ(r.exit_code, 0) << r.err;
  }
  std::string file(const std::string& name) const { return dir_.file(name); }

 private:
  TempDir dir_;
};

std::shared_ptr<grpc::Channel> TlsChannel(const ServerProcess& server, const Certificates& certs,
                                          bool client_cert) {
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = ReadFile(certs.file("ca.pem"));
  if (client_cert) {
    ssl.pem_cert_chain = ReadFile(certs.file("client.pem"));
    ssl.pem_private_key = ReadFile(certs.file("client.key"));
  }
  return grpc::CreateChannel(server.address(), grpc::SslCredentials(ssl));
}

TEST(ServerSecurity, Tls) {
  Certificates certs;
  std::vector<std::string> args = TinyArgs();
  args.push_back("--tls-cert=" + certs.file("server.pem"));
  args.push_back("--tls-key=" + certs.file("server.key"));
  ServerProcess server(args);
  // The helper's health probe is plaintext: wait on a TLS call instead.
  bool up = false;
  for (int i = 0; i < 600 && !up; ++i) {
    up = CallGenerate(TlsChannel(server, certs, false)).ok();
    if (!up) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_TRUE(up) << server.log();
  EXPECT_FALSE(CallGenerate(server.Channel()).ok());  // plaintext is refused

  const CommandResult r =
      RunCommand(ToolPath("dsv3-client") + " --server " + server.address() + " --tls-ca " +
                 certs.file("ca.pem") + " --prompt-ids 1,2 --max-new-tokens 3");
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

TEST(ServerSecurity, MutualTls) {
  Certificates certs;
  std::vector<std::string> args = TinyArgs();
  args.push_back("--tls-cert=" + certs.file("server.pem"));
  args.push_back("--tls-key=" + certs.file("server.key"));
  args.push_back("--tls-client-ca=" + certs.file("ca.pem"));
  ServerProcess server(args);
  bool up = false;
  for (int i = 0; i < 600 && !up; ++i) {
    up = CallGenerate(TlsChannel(server, certs, true)).ok();
    if (!up) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_TRUE(up) << server.log();
  EXPECT_FALSE(CallGenerate(TlsChannel(server, certs, false)).ok());  // no client certificate

  const CommandResult r =
      RunCommand(ToolPath("dsv3-client") + " --server " + server.address() + " --tls-ca " +
                 certs.file("ca.pem") + " --tls-cert " + certs.file("client.pem") + " --tls-key " +
                 certs.file("client.key") + " --prompt-ids 1,2 --max-new-tokens 3");
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

}  // namespace
}  // namespace dsv3::testing::server_security_test
