// ReadPlan: which bytes of which shard one tensor-parallel rank reads to load its weights, in the
// order the model loader asks for them. Pure logic: no I/O beyond the Checkpoint's headers.
//
// A linear weight's slice becomes one contiguous range of whole rows: rows [r0, r1) of [n, k]
// when the slice cuts rows (column-parallel weights, vocabulary rows, whole experts), all rows
// when it cuts only columns (row-parallel o_proj and down_proj: reading only their columns would
// be one small read per row). An FP8 weight's rows are widened to its 128-row scale blocks, so
// the staged rows with the staged block scales are themselves a well-formed block-scaled weight
// (block boundaries unchanged); its scales are the matching rows of "<prefix>.weight_scale_inv".
// A dense tensor (norms, router, bias) is read whole.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/weights/checkpoint.h"

namespace dsv3 {

// One request of the model loader (ModelWeights::Load).
struct WeightRequest {
  enum class Kind { kLinear, kDense };
  Kind kind = Kind::kDense;
  std::string name;            // linear: the prefix of "<prefix>.weight"; dense: the tensor
  int64_t n = 0, k = 0;        // linear: the stored shape [n, k]
  Slice2D slice;               // linear: what this rank keeps
  std::vector<int64_t> shape;  // dense: the expected shape
};

// One contiguous byte range of one shard: one staged tensor.
struct TensorRead {
  std::string name;     // the checkpoint tensor
  int file = 0;         // index into Checkpoint::files()
  uint64_t offset = 0;  // absolute offset in the file
  uint64_t bytes = 0;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;  // of the staged bytes: the stored shape, or [rows, k] for rows
};

// How one request reads and how it applies to the staged tensors.
struct PlannedLoad {
  size_t first_read = 0;  // reads [first_read, first_read + num_reads) of ReadPlan::reads
  size_t num_reads = 0;
  int64_t row_origin = 0;  // linear: staged row 0 is this row of the stored weight
  int64_t staged_n = 0;    // linear: rows staged
  Slice2D staged_slice;    // linear: the request's slice in staged rows (ends resolved)
};

struct ReadPlan {
  std::vector<TensorRead> reads;
  std::vector<PlannedLoad> loads;    // one per request, in request order
  uint64_t bytes = 0;                // the sum of the reads
  uint64_t stored_bytes = 0;         // the stored size of every tensor touched (a whole read)
  std::vector<uint64_t> file_bytes;  // per Checkpoint::files() entry, what this plan reads there
};

// Checks every request as the backends would (the tensor exists, its shape and dtype; an FP8
// weight has F32/BF16/F16 scales of shape [ceil(n/128), ceil(k/128)]; the slice lies inside
// [n, k]) and plans its reads. The first failing request's error, in the same words as
// TensorSource::Get / LoadLinearF32 (file, tensor, shape, dtype).
absl::StatusOr<ReadPlan> PlanReads(const Checkpoint& ckpt, std::span<const WeightRequest> requests);

}  // namespace dsv3
