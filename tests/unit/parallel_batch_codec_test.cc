// The step-plan codec: round trips, and a table of damaged buffers that must decode to DataLoss
// (never crash, never allocate what a corrupt count claims).
#include <gtest/gtest.h>

#include <cstring>
#include <functional>

#include "engine/parallel/batch_codec.h"

namespace dsv3::parallel_batch_codec_test {
namespace {

ControlMessage TwoSequenceStep() {
  ControlMessage m;
  m.kind = ControlMessage::Kind::kStep;
  m.mla_mode = MlaMode::kAbsorbed;
  m.batch.token_ids = {5, 6, 7, 8, 9};
  m.batch.sequences = {{.token_begin = 0, .num_tokens = 3, .context_begin = 0, .block_table = {4}},
                       {.token_begin = 3, .num_tokens = 2, .context_begin = 70,
                        .block_table = {1, 2}, .attention_rank = 3}};
  m.batch.logits_rows = {2, 4};
  m.batch.hidden_rows = {0, 1, 2, 4};
  return m;
}

void ExpectSameBatch(const ForwardBatch& a, const ForwardBatch& b) {
  EXPECT_EQ(a.token_ids, b.token_ids);
  EXPECT_EQ(a.logits_rows, b.logits_rows);
  EXPECT_EQ(a.hidden_rows, b.hidden_rows);
  ASSERT_EQ(a.sequences.size(), b.sequences.size());
  for (size_t i = 0; i < a.sequences.size(); ++i) {
    EXPECT_EQ(a.sequences[i].token_begin, b.sequences[i].token_begin);
    EXPECT_EQ(a.sequences[i].num_tokens, b.sequences[i].num_tokens);
    EXPECT_EQ(a.sequences[i].context_begin, b.sequences[i].context_begin);
    EXPECT_EQ(a.sequences[i].block_table, b.sequences[i].block_table);
    EXPECT_EQ(a.sequences[i].attention_rank, b.sequences[i].attention_rank);
  }
}

TEST(BatchCodecTest, StepRoundTrips) {
  const ControlMessage m = TwoSequenceStep();
  auto decoded = DecodeControlMessage(EncodeControlMessage(m));
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->kind, ControlMessage::Kind::kStep);
  EXPECT_EQ(decoded->mla_mode, MlaMode::kAbsorbed);
  ExpectSameBatch(decoded->batch, m.batch);
}

TEST(BatchCodecTest, MtpStepRoundTrips) {
  ControlMessage m = TwoSequenceStep();
  m.kind = ControlMessage::Kind::kMtpStep;
  auto decoded = DecodeControlMessage(EncodeControlMessage(m));
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->kind, ControlMessage::Kind::kMtpStep);
  ExpectSameBatch(decoded->batch, m.batch);
}

TEST(BatchCodecTest, CacheGeometryRoundTrips) {
  ControlMessage m;
  m.kind = ControlMessage::Kind::kAllocateCache;
  m.num_kv_blocks = 1ll << 33;
  m.kv_block_size = 64;
  for (bool mtp_layer : {false, true}) {
    m.mtp_layer = mtp_layer;
    auto decoded = DecodeControlMessage(EncodeControlMessage(m));
    ASSERT_TRUE(decoded.ok()) << decoded.status();
    EXPECT_EQ(decoded->kind, ControlMessage::Kind::kAllocateCache);
    EXPECT_EQ(decoded->num_kv_blocks, 1ll << 33);
    EXPECT_EQ(decoded->kv_block_size, 64);
    EXPECT_EQ(decoded->mtp_layer, mtp_layer);
  }
  m.kv_block_size = 0;
  EXPECT_EQ(DecodeControlMessage(EncodeControlMessage(m)).status().code(),
            absl::StatusCode::kDataLoss);
}

TEST(BatchCodecTest, EmptyStepAndControlKindsRoundTrip) {
  for (auto kind : {ControlMessage::Kind::kStep, ControlMessage::Kind::kShutdown,
                    ControlMessage::Kind::kHeartbeat}) {
    ControlMessage m;
    m.kind = kind;
    auto decoded = DecodeControlMessage(EncodeControlMessage(m));
    ASSERT_TRUE(decoded.ok()) << decoded.status();
    EXPECT_EQ(decoded->kind, kind);
    EXPECT_EQ(decoded->batch.num_tokens(), 0);
  }
}

// Overwrites 4 bytes at `offset` and re-seals nothing: the checksum or a size check must catch
// it.
std::string Patched(std::string bytes, size_t offset, uint32_t value) {
  std::memcpy(bytes.data() + offset, &value, sizeof(value));
  return bytes;
}

// Re-encodes a structurally inconsistent batch (the checksum is then valid).
std::string EncodedWith(const std::function<void(ForwardBatch&)>& damage) {
  ControlMessage m = TwoSequenceStep();
  damage(m.batch);
  return EncodeControlMessage(m);
}

TEST(BatchCodecTest, CorruptBuffersAreDataLossErrors) {
  const std::string good = EncodeControlMessage(TwoSequenceStep());
  constexpr size_t kHeader = 24;
  struct Case {
    const char* name;
    std::string bytes;
  };
  const Case cases[] = {
      {"empty", ""},
      {"short header", good.substr(0, 10)},
      {"bad magic", Patched(good, 0, 0x33565358u)},  // "XSV3"
      {"other version", Patched(good, 8, 0x00010001u)},  // version 1, kind 1
      {"unknown kind", Patched(good, 8, kPlanCodecVersion | 0x00090000u)},
      {"truncated payload", good.substr(0, good.size() - 4)},
      {"trailing byte", good + "x"},
      {"flipped payload bit", [&] {
         std::string b = good;
         b[kHeader + 5] ^= 1;
         return b;
       }()},
      {"huge token count", Patched(good, kHeader, 0xFFFFFFF0u)},
      {"huge payload size", Patched(good, 12, 0xFFFFFFF0u)},
      {"sequence past the tokens",
       EncodedWith([](ForwardBatch& b) { b.sequences[1].num_tokens = 9; })},
      {"negative context", EncodedWith([](ForwardBatch& b) { b.sequences[0].context_begin = -1; })},
      {"negative row start", EncodedWith([](ForwardBatch& b) { b.sequences[0].token_begin = -2; })},
      {"negative attention rank",
       EncodedWith([](ForwardBatch& b) { b.sequences[1].attention_rank = -1; })},
      {"logits row out of range", EncodedWith([](ForwardBatch& b) { b.logits_rows = {5}; })},
      {"hidden row out of range", EncodedWith([](ForwardBatch& b) { b.hidden_rows = {0, -1}; })},
  };
  for (const Case& c : cases) {
    auto decoded = DecodeControlMessage(c.bytes);
    ASSERT_FALSE(decoded.ok()) << c.name;
    EXPECT_EQ(decoded.status().code(), absl::StatusCode::kDataLoss) << c.name << ": "
                                                                     << decoded.status();
  }
}

TEST(BatchCodecTest, EveryTruncationFailsCleanly) {
  const std::string full = EncodeControlMessage(TwoSequenceStep());
  for (size_t n = 0; n < full.size(); ++n) {
    EXPECT_FALSE(DecodeControlMessage(full.substr(0, n)).ok()) << n;
  }
}

}  // namespace
}  // namespace dsv3::parallel_batch_codec_test
