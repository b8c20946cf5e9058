#include "engine/weights/read_plan.h"

#include <algorithm>
#include <array>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/util/status_macros.h"
#include "engine/weights/tensor_source.h"

namespace dsv3 {

namespace {

// Rows [r0, r1) of the stored tensor `name` (2-D, row-major) as one read.
TensorRead RowsRead(const Checkpoint& ckpt, const std::string& name, int64_t r0, int64_t r1) {
  const Checkpoint::Location& at = *ckpt.Locate(name);
  const SafetensorsEntry& e = *at.entry;
  const uint64_t row_bytes = static_cast<uint64_t>(e.shape[1]) * DTypeSize(e.dtype);
  TensorRead read;
  read.name = name;
  read.file = at.file;
  read.offset = ckpt.files()[at.file]->data_offset() + e.begin + r0 * row_bytes;
  read.bytes = (r1 - r0) * row_bytes;
  read.dtype = e.dtype;
  read.shape = {r1 - r0, e.shape[1]};
  return read;
}

TensorRead WholeRead(const Checkpoint& ckpt, const std::string& name) {
  const Checkpoint::Location& at = *ckpt.Locate(name);
  const SafetensorsEntry& e = *at.entry;
  TensorRead read;
  read.name = name;
  read.file = at.file;
  read.offset = ckpt.files()[at.file]->data_offset() + e.begin;
  read.bytes = e.end - e.begin;
  read.dtype = e.dtype;
  read.shape = e.shape;
  return read;
}

uint64_t StoredBytes(const Checkpoint& ckpt, const std::string& name) {
  const SafetensorsEntry& e = *ckpt.Locate(name)->entry;
  return e.end - e.begin;
}

absl::Status PlanLinear(const Checkpoint& ckpt, const WeightRequest& r, ReadPlan& plan,
                        PlannedLoad& load) {
  const std::string name = r.name + ".weight";
  const std::array<int64_t, 2> shape = {r.n, r.k};
  DSV3_ASSIGN_OR_RETURN(
      const TensorView w,
      ckpt.Get(name, shape, {DType::kF8E4M3, DType::kBF16, DType::kF16, DType::kF32}));
  const Slice2D& s = r.slice;
  const int64_t r0 = s.row_begin, r1 = s.row_end < 0 ? r.n : s.row_end;
  const int64_t c0 = s.col_begin, c1 = s.col_end < 0 ? r.k : s.col_end;
  if (r0 < 0 || r0 > r1 || r1 > r.n || c0 < 0 || c0 > c1 || c1 > r.k) {
    return absl::InvalidArgumentError(absl::StrCat(ckpt.FileOf(name), ": tensor '", name,
                                                   "': bad slice of [", r.n, ", ", r.k, "]: rows [",
                                                   r0, ", ", r1, "), cols [", c0, ", ", c1, ")"));
  }
  const bool fp8 = w.dtype == DType::kF8E4M3;
  // FP8 rows widen to whole scale blocks: the staged weight keeps the stored block boundaries.
  const int64_t first = fp8 ? r0 / kFp8ScaleBlock * kFp8ScaleBlock : r0;
  const int64_t last = fp8 ? std::min(r.n, ScaleBlocks(r1) * kFp8ScaleBlock) : r1;
  plan.reads.push_back(RowsRead(ckpt, name, first, last));
  plan.stored_bytes += StoredBytes(ckpt, name);
  load.row_origin = first;
  load.staged_n = last - first;
  load.staged_slice = {r0 - first, r1 - first, c0, c1};
  if (!fp8) return absl::OkStatus();

  const std::string scale_name = r.name + ".weight_scale_inv";
  if (!ckpt.Has(scale_name)) {
    return absl::NotFoundError(absl::StrCat(ckpt.FileOf(name), ": tensor '", name,
                                            "': F8_E4M3 weight without '", scale_name, "'"));
  }
  const std::array<int64_t, 2> scale_shape = {ScaleBlocks(r.n), ScaleBlocks(r.k)};
  DSV3_RETURN_IF_ERROR(
      ckpt.Get(scale_name, scale_shape, {DType::kF32, DType::kBF16, DType::kF16}).status());
  plan.reads.push_back(RowsRead(ckpt, scale_name, first / kFp8ScaleBlock, ScaleBlocks(last)));
  plan.stored_bytes += StoredBytes(ckpt, scale_name);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ReadPlan> PlanReads(const Checkpoint& ckpt,
                                   std::span<const WeightRequest> requests) {
  ReadPlan plan;
  for (const WeightRequest& r : requests) {
    PlannedLoad& load = plan.loads.emplace_back();
    load.first_read = plan.reads.size();
    if (r.kind == WeightRequest::Kind::kLinear) {
      DSV3_RETURN_IF_ERROR(PlanLinear(ckpt, r, plan, load));
    } else {
      DSV3_RETURN_IF_ERROR(
          ckpt.Get(r.name, r.shape, {DType::kF32, DType::kBF16, DType::kF16}).status());
      plan.reads.push_back(WholeRead(ckpt, r.name));
      plan.stored_bytes += StoredBytes(ckpt, r.name);
    }
    load.num_reads = plan.reads.size() - load.first_read;
  }
  plan.file_bytes.assign(ckpt.files().size(), 0);
  for (const TensorRead& read : plan.reads) {
    plan.bytes += read.bytes;
    plan.file_bytes[read.file] += read.bytes;
  }
  return plan;
}

}  // namespace dsv3
