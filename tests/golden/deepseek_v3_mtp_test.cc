// The MTP module's forward (DeepseekV3Model::ForwardMtp) on the CPU backend.
//
// No transformers reference exists for it (transformers ignores layer num_hidden_layers), so the
// float32 reference of the SPEC math is tools/fixtures/make_mtp_reference.py; where its output
// (<fixture>-ref/mtp_logits.npy, from the first kMtpReferenceTokens tokens of the fixture's first
// longest prompt) is present the test holds dsv3-generate's numbers to it within 1e-4, else that
// check is skipped. What runs here always:
// - one MTP pass over a whole prefill equals the MTP module fed one position at a time through
//   its paged cache (naive and absorbed attention, cache writes and reads, block tables);
// - dsv3-generate --mtp-logits-out writes [T-1, V], equal to ForwardMtp in process;
// - the trained demo model's MTP module agrees with the main model's next prediction far more
//   often than chance on held-out text (a wrong embedding/hidden order, norm or position would
//   drop it to ~0).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <numeric>
#include <vector>

#include "absl/strings/str_join.h"
#include "engine/backend/cpu/cpu_backend.h"
#include "engine/model/model.h"
#include "engine/util/npy.h"
#include "tests/demo_model.h"
#include "tests/fixture_reference.h"
#include "tests/test_util.h"

namespace dsv3::deepseek_v3_mtp_test {
namespace {

using ::dsv3::testing::FixturePath;
using ::dsv3::testing::RelativeError;

constexpr int32_t kBlockSize = 16;
// make_mtp_reference.py --prefix-tokens: the reference covers this prefix of the prompt.
constexpr size_t kMtpReferenceTokens = 65;

std::vector<int32_t> Table(int32_t n) {
  std::vector<int32_t> table((n + kBlockSize - 1) / kBlockSize);
  std::iota(table.begin(), table.end(), 0);
  return table;
}

// The main model's final hidden states of every position but the last: [T-1, H].
std::vector<float> PrefillHidden(DeepseekV3Model& model, KvCache& cache,
                                 const std::vector<int32_t>& tokens) {
  const int32_t n = static_cast<int32_t>(tokens.size());
  ForwardBatch batch;
  batch.token_ids = tokens;
  batch.sequences.push_back({0, n, 0, Table(n)});
  for (int32_t r = 0; r + 1 < n; ++r) batch.hidden_rows.push_back(r);
  std::vector<float> logits, hidden;
  EXPECT_TRUE(model.Forward(batch, cache, logits, MlaMode::kAuto, &hidden).ok());
  return hidden;
}

// MTP logits [T-1, V] of positions [0, T-1) in one pass.
std::vector<float> MtpPrefill(DeepseekV3Model& model, KvCache& cache,
                              const std::vector<int32_t>& tokens,
                              const std::vector<float>& hidden) {
  const int32_t n = static_cast<int32_t>(tokens.size());
  ForwardBatch mtp;
  mtp.token_ids.assign(tokens.begin() + 1, tokens.end());
  mtp.sequences.push_back({0, n - 1, 0, Table(n)});
  for (int32_t r = 0; r + 1 < n; ++r) mtp.logits_rows.push_back(r);
  std::vector<float> logits;
  EXPECT_TRUE(model.ForwardMtp(mtp, hidden, cache, logits).ok());
  return logits;
}

class MtpFixtureTest : public ::testing::TestWithParam<std::string> {};

TEST_P(MtpFixtureTest, PrefillEqualsOnePositionAtATime) {
  CpuBackend backend(0);
  auto model = DeepseekV3Model::Load(FixturePath(GetParam()), backend);
  ASSERT_TRUE(model.ok()) << model.status();
  ASSERT_TRUE((*model)->has_mtp());
  const ModelConfig& c = (*model)->config();
  std::string name = GetParam();
  const auto ref = ::dsv3::testing::LoadFixtureReference(name.substr(0, name.find('-')));
  std::vector<int32_t> tokens = ref.prompts.back();
  ASSERT_GE(tokens.size(), 3u);
  const int32_t n = static_cast<int32_t>(tokens.size());
  const int64_t v = c.vocab_size, h = c.hidden_size;

  KvCache cache(backend, c, Table(n).size(), kBlockSize, /*mtp_layer=*/true);
  const std::vector<float> hidden = PrefillHidden(**model, cache, tokens);
  ASSERT_EQ(hidden.size(), static_cast<size_t>((n - 1) * h));
  const std::vector<float> once = MtpPrefill(**model, cache, tokens, hidden);
  ASSERT_EQ(once.size(), static_cast<size_t>((n - 1) * v));
  for (float x : once) ASSERT_TRUE(std::isfinite(x));

  KvCache fresh(backend, c, Table(n).size(), kBlockSize, /*mtp_layer=*/true);
  std::vector<float> stepped;
  for (int32_t j = 0; j + 1 < n; ++j) {
    ForwardBatch one;
    one.token_ids = {tokens[j + 1]};
    one.sequences.push_back({0, 1, j, Table(n)});
    one.logits_rows = {0};
    std::vector<float> logits;
    ASSERT_TRUE((*model)
                    ->ForwardMtp(one, absl::MakeConstSpan(hidden).subspan(j * h, h), fresh, logits)
                    .ok());
    stepped.insert(stepped.end(), logits.begin(), logits.end());
  }
  EXPECT_LT(RelativeError(stepped, once), 1e-5);
}

TEST_P(MtpFixtureTest, GenerateWritesMtpLogitsOfThePrompt) {
  CpuBackend backend(0);
  auto model = DeepseekV3Model::Load(FixturePath(GetParam()), backend);
  ASSERT_TRUE(model.ok()) << model.status();
  std::string name = GetParam();
  const std::string fixture = name.substr(0, name.find('-'));
  const auto ref = ::dsv3::testing::LoadFixtureReference(fixture);
  // The first longest prompt's first tokens, as make_mtp_reference.py takes them.
  const std::vector<int32_t>& longest = *std::max_element(
      ref.prompts.begin(), ref.prompts.end(),
      [](const auto& a, const auto& b) { return a.size() < b.size(); });
  const std::vector<int32_t> tokens(
      longest.begin(), longest.begin() + std::min<size_t>(longest.size(), kMtpReferenceTokens));
  const int32_t n = static_cast<int32_t>(tokens.size());

  ::dsv3::testing::TempDir dir;
  const std::string out = dir.file("mtp.npy");
  const auto run = ::dsv3::testing::RunCommand(
      ::dsv3::testing::ToolPath("dsv3-generate") + " --model " + FixturePath(GetParam()) +
      " --prompt-ids " + absl::StrJoin(tokens, ",") + " --max-new-tokens 0 --mtp-logits-out " +
      out);
  ASSERT_EQ(run.exit_code, 0) << run.err;
  auto npy = ReadNpyF32(out);
  ASSERT_TRUE(npy.ok()) << npy.status();
  EXPECT_EQ(npy->shape, (std::vector<int64_t>{n - 1, (*model)->config().vocab_size}));

  KvCache cache(backend, (*model)->config(), Table(n).size(), kBlockSize, /*mtp_layer=*/true);
  const std::vector<float> want =
      MtpPrefill(**model, cache, tokens, PrefillHidden(**model, cache, tokens));
  EXPECT_LT(RelativeError(npy->data, want), 1e-6);

  // The float32 reference of the SPEC math, once make_mtp_reference.py has been run.
  const std::string reference = FixturePath(fixture + "-ref/mtp_logits.npy");
  if (!std::filesystem::exists(reference)) {
    GTEST_SKIP() << reference << " is missing: run tools/fixtures/make_mtp_reference.py";
  }
  auto want_ref = ReadNpyF32(reference);
  ASSERT_TRUE(want_ref.ok()) << want_ref.status();
  ASSERT_EQ(want_ref->shape, npy->shape);
  EXPECT_LT(RelativeError(npy->data, want_ref->data), 1e-4);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, MtpFixtureTest,
                         ::testing::ValuesIn(::dsv3::testing::AllFixtureCheckpoints()),
                         ::dsv3::testing::FixtureTestName);

int32_t Argmax(const float* row, int64_t n) {
  return static_cast<int32_t>(std::max_element(row, row + n) - row);
}

TEST(MtpDemoModelTest, DraftsAgreeWithMainModelOnHeldOutText) {
  CpuBackend backend(0);
  auto model = DeepseekV3Model::Load(::dsv3::testing::DemoModelDir(), backend);
  ASSERT_TRUE(model.ok()) << model.status();
  const int64_t v = (*model)->config().vocab_size;
  int64_t agree = 0, total = 0;
  for (const std::vector<int32_t>& tokens : ::dsv3::testing::HeldOutWindows(8, 128)) {
    const int32_t n = static_cast<int32_t>(tokens.size());
    KvCache cache(backend, (*model)->config(), Table(n).size(), kBlockSize, true);
    ForwardBatch batch;
    batch.token_ids = tokens;
    batch.sequences.push_back({0, n, 0, Table(n)});
    for (int32_t r = 0; r < n; ++r) batch.logits_rows.push_back(r);
    for (int32_t r = 0; r + 1 < n; ++r) batch.hidden_rows.push_back(r);
    std::vector<float> main_logits, hidden;
    ASSERT_TRUE((*model)->Forward(batch, cache, main_logits, MlaMode::kAuto, &hidden).ok());
    const std::vector<float> mtp = MtpPrefill(**model, cache, tokens, hidden);
    // Row j predicts token j+2, as the main model's row j+1 does.
    for (int32_t j = 0; j + 2 < n; ++j) {
      agree += Argmax(&mtp[j * v], v) == Argmax(&main_logits[(j + 1) * v], v);
      ++total;
    }
  }
  ASSERT_GT(total, 500);
  // Measured in training: ~0.56.
  EXPECT_GT(static_cast<double>(agree) / total, 0.4) << agree << " of " << total;
  std::cout << "MTP top-1 agreement with the main model: " << agree << " of " << total << "\n";
}

}  // namespace
}  // namespace dsv3::deepseek_v3_mtp_test
