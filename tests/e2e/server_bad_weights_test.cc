// Issue 19, bug 10: a checkpoint with NaN/Inf weights, a NaN weight_scale_inv, FP8 NaN bytes or
// two tensors sharing a byte range loaded silently; the output was all zeros and health said
// SERVING. Now dsv3-server exits 1 at startup with one line naming the file and the tensor.
#include <cstdint>
#include <cstring>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/e2e/server_process.h"
#include "tests/test_util.h"

namespace dsv3::testing::server_bad_weights_test {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

constexpr char kShard[] = "model-00001-of-00004.safetensors";

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

void WriteAll(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc)
      .write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// A safetensors file split into its header (JSON) and data section, and put back together.
struct Safetensors {
  nlohmann::json header;
  std::string data;

  static Safetensors Read(const std::string& path) {
    const std::string bytes = ReadAll(path);
    uint64_t len = 0;
    std::memcpy(&len, bytes.data(), 8);
    return {nlohmann::json::parse(bytes.substr(8, len)), bytes.substr(8 + len)};
  }
  void Write(const std::string& path) const {
    std::string text = header.dump();
    text.append((8 - text.size() % 8) % 8, ' ');
    const uint64_t len = text.size();
    std::string out(8, '\0');
    std::memcpy(out.data(), &len, 8);
    WriteAll(path, out + text + data);
  }
  // Byte `i` of tensor `name` inside `data`.
  char& Byte(const std::string& name, size_t i) {
    return data[header.at(name).at("data_offsets").at(0).get<size_t>() + i];
  }
  void Put(const std::string& name, size_t i, const void* value, size_t size) {
    std::memcpy(&Byte(name, i), value, size);
  }
};

// A copy of tiny-fp8 in `dir` whose first shard `damage` changed; returns its path.
std::string DamagedCopy(const std::function<void(Safetensors&)>& damage, const TempDir& dir) {
  const std::string model = dir.file("model");
  CopyTree(FixturePath("tiny-fp8"), model);
  Safetensors st = Safetensors::Read(model + "/" + kShard);
  damage(st);
  st.Write(model + "/" + kShard);
  return model;
}

CommandResult ServeDamaged(const std::function<void(Safetensors&)>& damage, const TempDir& dir) {
  return RunCommand("timeout -s KILL 60 " + BinaryPath("server/dsv3-server") + " --model " +
                    DamagedCopy(damage, dir) +
                    " --threads 1 --listen 127.0.0.1:0 --metrics-listen ''");
}

void ExpectLoadFailure(const CommandResult& r, const std::string& file, const std::string& tensor,
                       const std::string& what) {
  EXPECT_FALSE(r.signaled) << r.err;
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_THAT(r.err, AllOf(HasSubstr("cannot load the model"), HasSubstr(file),
                           HasSubstr("tensor '" + tensor + "'"), HasSubstr(what)));
}

TEST(ServerBadWeightsTest, NanBf16WeightFailsStartupNamingFileAndTensor) {
  TempDir dir;
  const CommandResult r = ServeDamaged(
      [](Safetensors& st) {
        const uint16_t nan = 0x7FC0;
        st.Put("model.layers.0.input_layernorm.weight", 2 * 3, &nan, 2);
      },
      dir);
  ExpectLoadFailure(r, kShard, "model.layers.0.input_layernorm.weight", "element 3 is NaN");
}

TEST(ServerBadWeightsTest, InfBf16LinearWeightFailsStartup) {
  TempDir dir;
  const CommandResult r = ServeDamaged(
      [](Safetensors& st) {
        const uint16_t inf = 0xFF80;  // -Inf
        st.Put("lm_head.weight", 2 * (128 * 5 + 7), &inf, 2);
      },
      dir);
  ExpectLoadFailure(r, kShard, "lm_head.weight", "element [5, 7] is Inf");
}

TEST(ServerBadWeightsTest, NanWeightScaleInvFailsStartup) {
  TempDir dir;
  const CommandResult r = ServeDamaged(
      [](Safetensors& st) {
        const uint32_t nan = 0x7FC00000u;
        st.Put("model.layers.0.mlp.gate_proj.weight_scale_inv", 4, &nan, 4);
      },
      dir);
  ExpectLoadFailure(r, kShard, "model.layers.0.mlp.gate_proj.weight_scale_inv",
                    "element 1 is NaN");
}

TEST(ServerBadWeightsTest, Fp8NanByteFailsStartup) {
  TempDir dir;
  const CommandResult r = ServeDamaged(
      [](Safetensors& st) { st.Byte("model.layers.0.mlp.down_proj.weight", 256 * 2 + 9) = '\xff'; },
      dir);
  ExpectLoadFailure(r, kShard, "model.layers.0.mlp.down_proj.weight",
                    "element [2, 9] is an FP8 NaN code");
}

TEST(ServerBadWeightsTest, TensorsSharingAByteRangeFailStartup) {
  TempDir dir;
  const CommandResult r = ServeDamaged(
      [](Safetensors& st) {
        st.header["model.layers.0.post_attention_layernorm.weight"]["data_offsets"] =
            st.header["model.layers.0.input_layernorm.weight"]["data_offsets"];
      },
      dir);
  EXPECT_FALSE(r.signaled) << r.err;
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_THAT(r.err, AllOf(HasSubstr(kShard), HasSubstr("overlap tensor 'model.layers.0."),
                           HasSubstr("_layernorm.weight'")));
}

TEST(ServerBadWeightsTest, RewrittenButUndamagedCopyServes) {
  // The damage is what fails, not the rewriting of the shard.
  TempDir dir;
  ServerProcess server({"--model=" + DamagedCopy([](Safetensors&) {}, dir), "--num-kv-blocks=32"});
  ASSERT_TRUE(server.WaitServing()) << server.log();
  EXPECT_EQ(server.Stop(), 0) << server.log();
}

}  // namespace
}  // namespace dsv3::testing::server_bad_weights_test
