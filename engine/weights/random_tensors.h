// RandomTensors: random weights in checkpoint form, one tensor (or a weight and its scales) at a
// time, for models with random weights (dsv3-bench at full size, tests). A backend loads them
// through LoadLinear / LoadDense like a checkpoint's host views, so random weights need nothing
// of the Backend interface beyond loading.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "engine/backend/backend.h"
#include "engine/weights/tensor_source.h"

namespace dsv3 {

class RandomTensors final : public TensorSource {
 public:
  // `staging`: where the host data lives (the backend's staging_allocator(): pinned on GPUs, so
  // the upload is DMA). The buffers grow to the largest tensor made and are reused.
  explicit RandomTensors(Allocator* staging) : staging_(staging) {}

  // Holds "<prefix>.weight" [n, k] (and nothing else). fp8: F8_E4M3 codes of about 64 times a
  // unit normal and "<prefix>.weight_scale_inv" [ceil(n/128), ceil(k/128)] F32 all `scale` / 64,
  // so the weight is about `scale` times a unit normal. Else BF16 uniform in [-scale, scale].
  void MakeLinear(const std::string& prefix, int64_t n, int64_t k, bool fp8, float scale,
                  uint64_t seed);
  // Holds `name` (and nothing else): `mean` + uniform in [-scale, scale], BF16 for 2-D and larger
  // shapes (embedding, router: the size of a vocabulary), F32 for vectors.
  void MakeDense(const std::string& name, std::span<const int64_t> shape, float mean, float scale,
                 uint64_t seed);

  bool Has(std::string_view name) const override;
  std::string FileOf(std::string_view name) const override;
  absl::StatusOr<TensorView> Get(std::string_view name) const override;

 private:
  struct Held {
    std::string name;
    TensorView view;  // into one of buffers_
  };
  // buffers_[slot] with at least `bytes` bytes.
  void* Buffer(int slot, int64_t bytes);

  Allocator* staging_;
  Tensor buffers_[2];  // the weight, its scales
  std::vector<Held> held_;
};

// A linear weight [n, k] made by RandomTensors::MakeLinear and loaded into `backend` (tensors
// in `storage`, as LoadLinear).
absl::StatusOr<LinearWeight> LoadRandomLinear(Backend& backend, int64_t n, int64_t k, bool fp8,
                                              float scale, uint64_t seed,
                                              std::vector<Tensor>& storage);

}  // namespace dsv3
