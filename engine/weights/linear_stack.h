// Linear layers that read the same input, stacked into one weight so that a step runs one GEMM
// (and quantizes its activations once) for all of them: MLA's q_a and kv_a, an MLP's gate and up.
// At batch 1 each of them is a short, latency-bound GEMM (kv_a: 4 MB in ~7 us on the H200), so
// one launch over their rows together costs about what the larger one did alone.
//
// LinearStack builds the host tensors of the stacked weight from its parts as a TensorSource
// holds them (a staged checkpoint read, random tensors): each part's rows, in order. With FP8
// parts every part begins on a 128-row boundary, so no block scale straddles two parts (the gap
// is zero rows, whose outputs nobody reads); a part whose rows start inside a block brings that
// block's rows before them. Parts of different dtypes are stacked as float32.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/backend/backend.h"
#include "engine/weights/tensor_source.h"

namespace dsv3 {

// A stacked weight as the model keeps it: y [T, N_stacked] = x W^T, and part i's output is
// columns [parts[i].offset, parts[i].offset + parts[i].n) of y.
struct StackedLinear {
  struct Part {
    int64_t offset = 0;
    int64_t n = 0;
  };
  LinearWeight weight;  // [N_stacked, K]
  std::vector<Part> parts;

  // Part i's columns of y [T, N_stacked]: a view with y's row stride.
  TensorView Output(const TensorView& y, size_t i) const;
  // Part i as a weight of its own: a view of its rows of `weight` (and of their block scales).
  // None for an FP8 part that does not start on a 128-row scale block.
  std::optional<LinearWeight> Weight(size_t i) const;
};

class LinearStack {
 public:
  // `name` names the stack in errors.
  explicit LinearStack(std::string name) : name_(std::move(name)) {}

  // Appends rows [row_begin, row_end) of the linear "<prefix>.weight" [n, k] in `source`
  // (F8_E4M3 with F32 "<prefix>.weight_scale_inv", BF16 or F32). Every part has the same k.
  absl::Status Add(const TensorSource& source, const std::string& prefix, int64_t n, int64_t k,
                   int64_t row_begin, int64_t row_end);

  struct Built {
    Tensor weight;     // [N_stacked, K] host, F8_E4M3, BF16 or F32
    Tensor scale_inv;  // [N_stacked / 128, ceil(K / 128)] F32 for FP8, else empty
    std::vector<StackedLinear::Part> parts;
  };
  // The stacked host tensors (for Backend::MakeLinear). Fails without parts.
  absl::StatusOr<Built> Build() const;

 private:
  struct Held {
    std::string prefix;
    DType dtype = DType::kF32;
    int64_t rows = 0;       // rows held, from `first`
    int64_t first = 0;      // the part's row `first` is held row 0 (a block start for FP8)
    int64_t row_begin = 0;  // the part's rows [row_begin, row_end)
    int64_t row_end = 0;
    std::vector<uint8_t> weight;  // [rows, k] as stored
    std::vector<float> scales;    // [ceil(rows / 128), ceil(k / 128)] for FP8
  };

  std::string name_;
  int64_t k_ = -1;
  std::vector<Held> parts_;
};

}  // namespace dsv3
