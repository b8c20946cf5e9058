#include "tests/smoke_model.h"

#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <system_error>
#include <vector>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace dsv3::testing {
namespace {

namespace fs = std::filesystem;

// The model's shape: DeepSeek-V3's layout (MLA with q/kv LoRA, one dense layer then MoE with
// grouped routing and a shared expert) at toy width.
constexpr int64_t kVocab = 129280;
constexpr int64_t kHidden = 64;
constexpr int64_t kLayers = 2;
constexpr int64_t kDenseLayers = 1;
constexpr int64_t kIntermediate = 128;
constexpr int64_t kMoeIntermediate = 32;
constexpr int64_t kExperts = 8;
constexpr int64_t kSharedExperts = 1;
constexpr int64_t kExpertsPerToken = 2;
constexpr int64_t kGroups = 4;
constexpr int64_t kTopkGroups = 2;
constexpr int64_t kHeads = 2;
constexpr int64_t kQLora = 32;
constexpr int64_t kKvLora = 32;
constexpr int64_t kNope = 16;
constexpr int64_t kRope = 16;
constexpr int64_t kV = 16;
constexpr int64_t kMaxPositions = 4096;

nlohmann::json ConfigJson() {
  return {
      {"architectures", {"DeepseekV3ForCausalLM"}},
      {"model_type", "deepseek_v3"},
      {"vocab_size", kVocab},
      {"hidden_size", kHidden},
      {"intermediate_size", kIntermediate},
      {"moe_intermediate_size", kMoeIntermediate},
      {"num_hidden_layers", kLayers},
      {"first_k_dense_replace", kDenseLayers},
      {"moe_layer_freq", 1},
      {"num_nextn_predict_layers", 0},
      {"num_attention_heads", kHeads},
      {"num_key_value_heads", kHeads},
      {"q_lora_rank", kQLora},
      {"kv_lora_rank", kKvLora},
      {"qk_nope_head_dim", kNope},
      {"qk_rope_head_dim", kRope},
      {"v_head_dim", kV},
      {"n_routed_experts", kExperts},
      {"n_shared_experts", kSharedExperts},
      {"num_experts_per_tok", kExpertsPerToken},
      {"n_group", kGroups},
      {"topk_group", kTopkGroups},
      {"routed_scaling_factor", 2.5},
      {"norm_topk_prob", true},
      {"scoring_func", "sigmoid"},
      {"topk_method", "noaux_tc"},
      {"rms_norm_eps", 1e-6},
      {"rope_theta", 10000.0},
      {"max_position_embeddings", kMaxPositions},
      {"hidden_act", "silu"},
      {"bos_token_id", 0},
      {"eos_token_id", 1},
      {"tie_word_embeddings", false},
      {"torch_dtype", "bfloat16"},
  };
}

// SplitMix64: tiny, fast, and the same stream on every platform, so every machine generates
// byte-identical weights.
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t Next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in [-1, 1).
  float Symmetric() { return static_cast<float>((Next() >> 40) * 0x1.0p-24 * 2.0 - 1.0); }

 private:
  uint64_t state_;
};

// Round to nearest even, as torch does when casting to bfloat16.
uint16_t ToBf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof(bits));
  const uint32_t rounding = 0x7FFF + ((bits >> 16) & 1);
  return static_cast<uint16_t>((bits + rounding) >> 16);
}

struct Tensor {
  std::string name;
  std::string dtype;  // "BF16" or "F32"
  std::vector<int64_t> shape;
  std::string bytes;
};

class Writer {
 public:
  // Uniform weights with standard deviation `stddev` (uniform on [-a, a] has std a / sqrt(3)).
  void Random(const std::string& name, std::vector<int64_t> shape, float stddev) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    const float a = stddev * std::sqrt(3.0f);
    // Every tensor has its own stream, seeded by its index, so that adding a tensor later does
    // not change the others.
    SplitMix64 rng(0x5EED0000ull + tensors_.size());
    std::string bytes(static_cast<size_t>(n) * 2, '\0');
    for (int64_t i = 0; i < n; ++i) {
      const uint16_t v = ToBf16(a * rng.Symmetric());
      std::memcpy(bytes.data() + i * 2, &v, 2);
    }
    tensors_.push_back({name, "BF16", std::move(shape), std::move(bytes)});
  }
  void Ones(const std::string& name, int64_t n) {
    std::string bytes(static_cast<size_t>(n) * 2, '\0');
    const uint16_t one = ToBf16(1.0f);
    for (int64_t i = 0; i < n; ++i) std::memcpy(bytes.data() + i * 2, &one, 2);
    tensors_.push_back({name, "BF16", {n}, std::move(bytes)});
  }
  void ZerosF32(const std::string& name, int64_t n) {
    tensors_.push_back({name, "F32", {n}, std::string(static_cast<size_t>(n) * 4, '\0')});
  }
  // A linear layer [out, in], scaled so activations keep their size from layer to layer.
  void Linear(const std::string& name, int64_t out, int64_t in, float gain = 1.0f) {
    Random(name + ".weight", {out, in}, gain / std::sqrt(static_cast<float>(in)));
  }

  // The safetensors layout: 8-byte little-endian header length, JSON header, raw data.
  absl::Status Save(const fs::path& path) const {
    nlohmann::json header = nlohmann::json::object();
    header["__metadata__"] = {{"format", "pt"}};
    uint64_t offset = 0;
    for (const Tensor& t : tensors_) {
      header[t.name] = {{"dtype", t.dtype},
                        {"shape", t.shape},
                        {"data_offsets", {offset, offset + t.bytes.size()}}};
      offset += t.bytes.size();
    }
    std::string text = header.dump();
    text.append((8 - text.size() % 8) % 8, ' ');
    std::ofstream out(path, std::ios::binary);
    char len[8];
    for (int i = 0; i < 8; ++i) len[i] = static_cast<char>((text.size() >> (8 * i)) & 0xFF);
    out.write(len, 8);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    for (const Tensor& t : tensors_) {
      out.write(t.bytes.data(), static_cast<std::streamsize>(t.bytes.size()));
    }
    out.close();
    if (!out) return absl::InternalError("cannot write " + path.string());
    return absl::OkStatus();
  }

 private:
  std::vector<Tensor> tensors_;
};

void AddMlp(Writer& w, const std::string& prefix, int64_t inter) {
  w.Linear(prefix + "gate_proj", inter, kHidden);
  w.Linear(prefix + "up_proj", inter, kHidden);
  w.Linear(prefix + "down_proj", kHidden, inter);
}

Writer SmokeWeights() {
  Writer w;
  // Unit-scale embeddings and a head with logits of standard deviation ~2: sharp enough that
  // greedy decoding is not flat, spread enough that different contexts pick different tokens.
  w.Random("model.embed_tokens.weight", {kVocab, kHidden}, 1.0f);
  for (int64_t i = 0; i < kLayers; ++i) {
    const std::string p = absl::StrCat("model.layers.", i, ".");
    w.Ones(p + "input_layernorm.weight", kHidden);
    w.Ones(p + "post_attention_layernorm.weight", kHidden);
    const std::string a = p + "self_attn.";
    w.Linear(a + "q_a_proj", kQLora, kHidden);
    w.Ones(a + "q_a_layernorm.weight", kQLora);
    w.Linear(a + "q_b_proj", kHeads * (kNope + kRope), kQLora);
    w.Linear(a + "kv_a_proj_with_mqa", kKvLora + kRope, kHidden);
    w.Ones(a + "kv_a_layernorm.weight", kKvLora);
    w.Linear(a + "kv_b_proj", kHeads * (kNope + kV), kKvLora);
    w.Linear(a + "o_proj", kHidden, kHeads * kV);
    if (i < kDenseLayers) {
      AddMlp(w, p + "mlp.", kIntermediate);
      continue;
    }
    w.Linear(p + "mlp.gate", kExperts, kHidden);
    w.ZerosF32(p + "mlp.gate.e_score_correction_bias", kExperts);
    for (int64_t e = 0; e < kExperts; ++e)
      AddMlp(w, absl::StrCat(p, "mlp.experts.", e, "."), kMoeIntermediate);
    AddMlp(w, p + "mlp.shared_experts.", kMoeIntermediate * kSharedExperts);
  }
  w.Ones("model.norm.weight", kHidden);
  w.Linear("lm_head", kVocab, kHidden, 2.0f);
  return w;
}

absl::Status Generate(const fs::path& dir, const std::string& tokenizer_dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::InternalError("cannot create " + dir.string() + ": " + ec.message());
  for (const char* file : {"tokenizer.json", "tokenizer_config.json"}) {
    fs::copy_file(fs::path(tokenizer_dir) / file, dir / file, ec);
    if (ec) {
      return absl::NotFoundError(absl::StrCat("cannot copy ", file, " from ", tokenizer_dir,
                                              " (build the project first): ", ec.message()));
    }
  }
  std::ofstream(dir / "config.json") << ConfigJson().dump(2) << "\n";
  if (absl::Status st = SmokeWeights().Save(dir / "model.safetensors"); !st.ok()) return st;
  std::ofstream marker(dir / server::kRandomModelMarker);
  marker << nlohmann::json{{"name", kSmokeModelName},
                           {"note",
                            "random weights generated for tests; output is "
                            "meaningless"}}
                .dump(2)
         << "\n";
  marker.close();
  if (!marker) {
    return absl::InternalError("cannot write " + (dir / server::kRandomModelMarker).string());
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> EnsureSmokeModel(const std::string& cache_dir,
                                             const std::string& tokenizer_dir) {
  const fs::path final_dir = fs::path(cache_dir) / kSmokeModelName;
  if (fs::exists(final_dir / server::kRandomModelMarker)) return final_dir.string();

  const fs::path temp_dir =
      fs::path(cache_dir) / absl::StrCat(kSmokeModelName, ".tmp-", ::getpid());
  std::error_code ec;
  fs::remove_all(temp_dir, ec);
  if (absl::Status st = Generate(temp_dir, tokenizer_dir); !st.ok()) {
    fs::remove_all(temp_dir, ec);
    return st;
  }
  fs::rename(temp_dir, final_dir, ec);
  if (ec) {
    // Another process may have won the race: its directory is as good as ours.
    fs::remove_all(temp_dir, ec);
    if (fs::exists(final_dir / server::kRandomModelMarker)) return final_dir.string();
    return absl::InternalError("cannot create " + final_dir.string());
  }
  return final_dir.string();
}

}  // namespace dsv3::testing
