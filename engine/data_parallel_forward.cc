#include "engine/data_parallel_forward.h"

#include <algorithm>
#include <optional>

#include "engine/model/model.h"
#include "engine/model/step_graphs.h"
#include "engine/parallel/attention_split.h"
#include "engine/util/status_macros.h"

namespace dsv3 {
namespace {

std::vector<AttentionRankPart> SplitByRank(const ForwardBatch& batch, int world) {
  std::vector<AttentionRankPart> parts;
  for (int r = 0; r < world; ++r) parts.push_back(SplitForAttentionRank(batch, r));
  return parts;
}

// Each rank's rows `mine` ([rows of this rank, width] F32, host) to rank 0, which puts rank r's
// row i at row parts[r].*output_rows[i] of `out` ([out_rows, width]); the other ranks get `out`
// empty. The rows travel in the backend's memory, which the communicator takes (NCCL reads device
// memory).
absl::Status GatherOnRankZero(Backend& backend, Communicator& comm,
                              const std::vector<AttentionRankPart>& parts,
                              std::vector<int32_t> AttentionRankPart::*output_rows,
                              int64_t out_rows, int64_t width, const std::vector<float>& mine,
                              std::vector<float>& out) {
  const int world = comm.world_size(), me = comm.rank();
  std::vector<int64_t> send_rows(world, 0), recv_rows(world, 0);
  send_rows[0] = static_cast<int64_t>((parts[me].*output_rows).size());
  int64_t gathered_rows = 0;
  if (me == 0) {
    for (int r = 0; r < world; ++r) {
      recv_rows[r] = static_cast<int64_t>((parts[r].*output_rows).size());
    }
    gathered_rows = out_rows;
  }
  Tensor send(backend.allocator(), DType::kF32, {send_rows[0], width});
  Tensor recv(backend.allocator(), DType::kF32, {gathered_rows, width});
  backend.CopyFromHost(mine.data(), send);
  DSV3_RETURN_IF_ERROR(comm.AllToAllV(send, send_rows, recv, recv_rows));
  out.clear();
  if (me != 0) return absl::OkStatus();
  std::vector<float> gathered(gathered_rows * width);
  backend.CopyToHost(recv, gathered.data());
  out.resize(gathered.size());
  const float* row = gathered.data();
  for (const AttentionRankPart& part : parts) {
    for (int32_t i : part.*output_rows) {
      std::copy_n(row, width, out.data() + i * width);
      row += width;
    }
  }
  return absl::OkStatus();
}

// Rank 0's rows `rows` ([step rows, width] F32, host; empty elsewhere) to the ranks that run
// them: each rank gets its part's rows in the part's order (parts[r].step_rows) in `mine`.
absl::Status ScatterFromRankZero(Backend& backend, Communicator& comm,
                                 const std::vector<AttentionRankPart>& parts, int64_t width,
                                 absl::Span<const float> rows, std::vector<float>& mine) {
  const int world = comm.world_size(), me = comm.rank();
  std::vector<int64_t> send_rows(world, 0), recv_rows(world, 0);
  std::vector<float> ordered;  // rank 0: every rank's rows, rank after rank
  if (me == 0) {
    for (int r = 0; r < world; ++r) {
      send_rows[r] = static_cast<int64_t>(parts[r].step_rows.size());
      for (int32_t row : parts[r].step_rows) {
        ordered.insert(ordered.end(), rows.begin() + row * width, rows.begin() + (row + 1) * width);
      }
    }
  }
  recv_rows[0] = static_cast<int64_t>(parts[me].step_rows.size());
  Tensor send(backend.allocator(), DType::kF32,
              {static_cast<int64_t>(ordered.size()) / width, width});
  Tensor recv(backend.allocator(), DType::kF32, {recv_rows[0], width});
  backend.CopyFromHost(ordered.data(), send);
  DSV3_RETURN_IF_ERROR(comm.AllToAllV(send, send_rows, recv, recv_rows));
  mine.resize(recv_rows[0] * width);
  backend.CopyToHost(recv, mine.data());
  return absl::OkStatus();
}

}  // namespace

absl::Status ForwardDataParallel(DeepseekV3Model& model, DecodeGraphRunner* graphs,
                                 Communicator& comm, const ForwardBatch& batch, KvCache& cache,
                                 std::vector<float>& logits, MlaMode mla_mode,
                                 std::vector<float>* hidden) {
  const int me = comm.rank();
  const ModelConfig& c = model.config();
  std::vector<AttentionRankPart> parts = SplitByRank(batch, comm.world_size());
  // Every rank decides alike from the broadcast batch whether hidden states are exchanged.
  const bool with_hidden = !batch.hidden_rows.empty();
  std::vector<float> mine, mine_hidden;  // [rows of this rank, V], [hidden rows of it, H]
  std::vector<float>* mine_hidden_ptr = with_hidden ? &mine_hidden : nullptr;
  // Every rank gets the same shape (or none) from the same parts.
  const std::optional<GraphStepShape> shape =
      graphs != nullptr ? graphs->DataParallelShape(parts, mla_mode) : std::nullopt;
  if (shape) {
    parts[me].batch.max_rank_tokens = shape->rows();
    DSV3_RETURN_IF_ERROR(
        graphs->ForwardDataParallel(parts[me].batch, *shape, cache, mine, mine_hidden_ptr));
  } else {
    DSV3_RETURN_IF_ERROR(model.Forward(parts[me].batch, cache, mine, mla_mode, mine_hidden_ptr));
  }
  Backend& backend = model.backend();
  DSV3_RETURN_IF_ERROR(GatherOnRankZero(backend, comm, parts, &AttentionRankPart::output_rows,
                                        static_cast<int64_t>(batch.logits_rows.size()),
                                        c.vocab_size, mine, logits));
  if (!with_hidden) return absl::OkStatus();
  std::vector<float> gathered;
  DSV3_RETURN_IF_ERROR(GatherOnRankZero(
      backend, comm, parts, &AttentionRankPart::hidden_output_rows,
      static_cast<int64_t>(batch.hidden_rows.size()), c.hidden_size, mine_hidden, gathered));
  if (hidden != nullptr) *hidden = std::move(gathered);
  return absl::OkStatus();
}

absl::Status ForwardMtpDataParallel(DeepseekV3Model& model, Communicator& comm,
                                    const ForwardBatch& batch, absl::Span<const float> hidden,
                                    KvCache& cache, std::vector<float>& logits,
                                    std::vector<float>& hidden_out) {
  const int me = comm.rank();
  const ModelConfig& c = model.config();
  Backend& backend = model.backend();
  const std::vector<AttentionRankPart> parts = SplitByRank(batch, comm.world_size());
  std::vector<float> mine_in, mine_logits, mine_out;  // [part rows, H], [R, V], [R, H]
  DSV3_RETURN_IF_ERROR(ScatterFromRankZero(backend, comm, parts, c.hidden_size, hidden, mine_in));
  DSV3_RETURN_IF_ERROR(
      model.ForwardMtp(parts[me].batch, mine_in, cache, mine_logits, &mine_out));
  const int64_t rows = static_cast<int64_t>(batch.logits_rows.size());
  DSV3_RETURN_IF_ERROR(GatherOnRankZero(backend, comm, parts, &AttentionRankPart::output_rows,
                                        rows, c.vocab_size, mine_logits, logits));
  return GatherOnRankZero(backend, comm, parts, &AttentionRankPart::output_rows, rows,
                          c.hidden_size, mine_out, hidden_out);
}

}  // namespace dsv3
