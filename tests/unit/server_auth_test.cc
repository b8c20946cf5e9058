#include <fstream>
#include <map>
#include <string>

#include "gtest/gtest.h"
#include "server/auth.h"
#include "tests/test_util.h"

namespace dsv3::server::server_auth_test {
namespace {

grpc::StatusCode CodeFor(const ApiKeyAuth& auth, std::multimap<std::string, std::string> md) {
  std::multimap<grpc::string_ref, grpc::string_ref> refs;
  for (const auto& [k, v] : md) refs.emplace(k, v);
  return auth.Check(refs).error_code();
}

TEST(ServerAuth, DisabledAcceptsEverything) {
  EXPECT_EQ(CodeFor(ApiKeyAuth(), {}), grpc::StatusCode::OK);
}

TEST(ServerAuth, BearerOrHeader) {
  const ApiKeyAuth auth({"k1", "second-key"});
  EXPECT_EQ(CodeFor(auth, {{"authorization", "Bearer k1"}}), grpc::StatusCode::OK);
  EXPECT_EQ(CodeFor(auth, {{"authorization", "bearer second-key"}}), grpc::StatusCode::OK);
  EXPECT_EQ(CodeFor(auth, {{"x-api-key", "second-key"}}), grpc::StatusCode::OK);
  EXPECT_EQ(CodeFor(auth, {}), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(CodeFor(auth, {{"authorization", "Bearer k2"}}), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(CodeFor(auth, {{"authorization", "Bearer k"}}), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(CodeFor(auth, {{"authorization", "Bearer k11"}}), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(CodeFor(auth, {{"authorization", "Basic k1"}}), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(CodeFor(auth, {{"x-api-key", ""}}), grpc::StatusCode::UNAUTHENTICATED);
}

TEST(ServerAuth, MessagesNeverEchoTheKey) {
  const ApiKeyAuth auth({"secret"});
  std::multimap<grpc::string_ref, grpc::string_ref> md;
  const std::string name = "x-api-key", value = "guess-secret";
  md.emplace(name, value);
  const grpc::Status st = auth.Check(md);
  EXPECT_EQ(st.error_message(), "the API key is not valid");
  EXPECT_NE(auth.Check({}).error_message().find("requires an API key"), std::string::npos);
}

TEST(ServerAuth, KeyFile) {
  testing::TempDir dir;
  std::ofstream(dir.file("keys")) << "# comment\n\n  alpha  \nbeta\n";
  auto keys = ApiKeyAuth::ReadKeyFile(dir.file("keys"));
  ASSERT_TRUE(keys.ok());
  EXPECT_EQ(*keys, (std::vector<std::string>{"alpha", "beta"}));
  std::ofstream(dir.file("empty")) << "# nothing\n";
  EXPECT_FALSE(ApiKeyAuth::ReadKeyFile(dir.file("empty")).ok());
  EXPECT_FALSE(ApiKeyAuth::ReadKeyFile(dir.file("missing")).ok());
}

}  // namespace
}  // namespace dsv3::server::server_auth_test
