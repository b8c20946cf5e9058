// The step plan as rank 0 broadcasts it: one flat byte buffer per step, decoded by every worker.
// Workers never see requests or the scheduler; this message is everything they get.
//
// Layout (host byte order: all ranks run the same binary): a 24-byte header (magic "DSV3PLAN",
// version, kind, MLA mode, payload size, FNV-1a checksum of the payload), then for kStep and
// kMtpStep the ForwardBatch as length-prefixed int32 arrays (each sequence with its attention
// rank; the logits and hidden-state rows). Decoding checks every size against the buffer and the
// batch's internal consistency: a corrupt or truncated buffer is a DataLoss error, never a crash.
// (Whether token ids and block ids fit the model and the cache is the worker's check.)
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "engine/backend/backend.h"
#include "engine/model/forward_batch.h"

namespace dsv3 {

// 2: SequenceSlice::attention_rank; 3: kMtpStep, the cache's MTP layer, hidden_rows.
inline constexpr uint16_t kPlanCodecVersion = 3;

struct ControlMessage {
  enum class Kind : uint8_t {
    kStep = 1,       // run `batch`
    kShutdown = 2,   // rank 0 is stopping: exit cleanly
    kHeartbeat = 3,  // rank 0 is alive but idle: answer with a barrier
    kAllocateCache = 4,  // make the KV cache rank 0 sized: block ids in plans index it
    kMtpStep = 5,        // run the MTP module over `batch` (DeepseekV3Model::ForwardMtp)
  };
  Kind kind = Kind::kStep;
  MlaMode mla_mode = MlaMode::kAuto;
  ForwardBatch batch = {};  // kStep and kMtpStep only
  int64_t num_kv_blocks = 0;  // kAllocateCache only; 0 releases the cache
  int32_t kv_block_size = 0;  // kAllocateCache only
  bool mtp_layer = false;     // kAllocateCache only: the cache has the MTP module's layer
};

std::string EncodeControlMessage(const ControlMessage& message);
absl::StatusOr<ControlMessage> DecodeControlMessage(const std::string& bytes);

}  // namespace dsv3
