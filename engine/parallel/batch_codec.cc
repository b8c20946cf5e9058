#include "engine/parallel/batch_codec.h"

#include <cstring>
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "engine/util/status_macros.h"

namespace dsv3 {
namespace {

constexpr char kMagic[8] = {'D', 'S', 'V', '3', 'P', 'L', 'A', 'N'};

struct Header {
  char magic[8];
  uint16_t version;
  uint8_t kind;
  uint8_t mla_mode;
  uint32_t payload_bytes;
  uint64_t checksum;
};
static_assert(sizeof(Header) == 24 && std::is_trivially_copyable_v<Header>);

uint64_t Fnv1a(const char* data, size_t n) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < n; ++i) {
    h ^= static_cast<uint8_t>(data[i]);
    h *= 0x100000001b3ull;
  }
  return h;
}

void PutU32(std::string& out, uint32_t v) { out.append(reinterpret_cast<const char*>(&v), 4); }

void PutArray(std::string& out, const std::vector<int32_t>& v) {
  PutU32(out, static_cast<uint32_t>(v.size()));
  out.append(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(int32_t));
}

// Reads the payload front to back; every read checks the bytes left.
class Reader {
 public:
  Reader(const char* data, size_t size) : p_(data), left_(size) {}

  absl::Status U8(uint8_t* v) { return Bytes(v, sizeof(*v), "a flag"); }
  absl::Status U32(uint32_t* v) { return Bytes(v, sizeof(*v), "a count"); }
  absl::Status I32(int32_t* v) { return Bytes(v, sizeof(*v), "a field"); }
  absl::Status I64(int64_t* v) { return Bytes(v, sizeof(*v), "a field"); }
  absl::Status Array(std::vector<int32_t>* v, const char* what) {
    uint32_t n = 0;
    DSV3_RETURN_IF_ERROR(U32(&n));
    if (n > left_ / sizeof(int32_t)) {
      return absl::DataLossError(absl::StrCat("step plan: ", what, " claims ", n,
                                              " entries but ", left_, " bytes are left"));
    }
    v->resize(n);
    return Bytes(v->data(), n * sizeof(int32_t), what);
  }
  size_t left() const { return left_; }

 private:
  absl::Status Bytes(void* out, size_t n, const char* what) {
    if (n > left_) {
      return absl::DataLossError(absl::StrCat("step plan truncated while reading ", what));
    }
    if (n > 0) std::memcpy(out, p_, n);
    p_ += n;
    left_ -= n;
    return absl::OkStatus();
  }
  const char* p_;
  size_t left_;
};

absl::Status CheckBatch(const ForwardBatch& b) {
  const int64_t tokens = b.num_tokens();
  for (size_t i = 0; i < b.sequences.size(); ++i) {
    const SequenceSlice& s = b.sequences[i];
    if (s.token_begin < 0 || s.num_tokens < 0 || s.context_begin < 0 || s.attention_rank < 0 ||
        static_cast<int64_t>(s.token_begin) + s.num_tokens > tokens) {
      return absl::DataLossError(absl::StrCat("step plan: sequence ", i, " covers rows [",
                                              s.token_begin, ", +", s.num_tokens, ") of ", tokens,
                                              " at context ", s.context_begin,
                                              " on attention rank ", s.attention_rank));
    }
  }
  for (int32_t row : b.logits_rows) {
    if (row < 0 || row >= tokens) {
      return absl::DataLossError(absl::StrCat("step plan: logits row ", row, " of ", tokens));
    }
  }
  for (int32_t row : b.hidden_rows) {
    if (row < 0 || row >= tokens) {
      return absl::DataLossError(absl::StrCat("step plan: hidden row ", row, " of ", tokens));
    }
  }
  return absl::OkStatus();
}

bool CarriesBatch(ControlMessage::Kind kind) {
  return kind == ControlMessage::Kind::kStep || kind == ControlMessage::Kind::kMtpStep;
}

}  // namespace

std::string EncodeControlMessage(const ControlMessage& message) {
  std::string payload;
  if (CarriesBatch(message.kind)) {
    const ForwardBatch& b = message.batch;
    PutArray(payload, b.token_ids);
    PutU32(payload, static_cast<uint32_t>(b.sequences.size()));
    for (const SequenceSlice& s : b.sequences) {
      for (int32_t v : {s.token_begin, s.num_tokens, s.context_begin, s.attention_rank}) {
        payload.append(reinterpret_cast<const char*>(&v), sizeof(v));
      }
      PutArray(payload, s.block_table);
    }
    PutArray(payload, b.logits_rows);
    PutArray(payload, b.hidden_rows);
  } else if (message.kind == ControlMessage::Kind::kAllocateCache) {
    payload.append(reinterpret_cast<const char*>(&message.num_kv_blocks), sizeof(int64_t));
    payload.append(reinterpret_cast<const char*>(&message.kv_block_size), sizeof(int32_t));
    payload.push_back(message.mtp_layer ? 1 : 0);
  }
  Header h{};
  std::memcpy(h.magic, kMagic, sizeof(kMagic));
  h.version = kPlanCodecVersion;
  h.kind = static_cast<uint8_t>(message.kind);
  h.mla_mode = static_cast<uint8_t>(message.mla_mode);
  h.payload_bytes = static_cast<uint32_t>(payload.size());
  h.checksum = Fnv1a(payload.data(), payload.size());
  std::string out(reinterpret_cast<const char*>(&h), sizeof(h));
  out += payload;
  return out;
}

absl::StatusOr<ControlMessage> DecodeControlMessage(const std::string& bytes) {
  Header h{};
  if (bytes.size() < sizeof(h)) {
    return absl::DataLossError(
        absl::StrCat("step plan of ", bytes.size(), " bytes is shorter than its header"));
  }
  std::memcpy(&h, bytes.data(), sizeof(h));
  if (std::memcmp(h.magic, kMagic, sizeof(kMagic)) != 0) {
    return absl::DataLossError("step plan: bad magic");
  }
  if (h.version != kPlanCodecVersion) {
    // Ranks of one group must run the same build.
    return absl::DataLossError(absl::StrCat("step plan version ", h.version, ", this rank reads ",
                                            kPlanCodecVersion, ": are all ranks the same build?"));
  }
  if (h.payload_bytes != bytes.size() - sizeof(h)) {
    return absl::DataLossError(absl::StrCat("step plan: header says ", h.payload_bytes,
                                            " payload bytes, buffer has ",
                                            bytes.size() - sizeof(h)));
  }
  const char* payload = bytes.data() + sizeof(h);
  if (Fnv1a(payload, h.payload_bytes) != h.checksum) {
    return absl::DataLossError("step plan: checksum mismatch");
  }
  ControlMessage m;
  if (h.kind < 1 || h.kind > static_cast<uint8_t>(ControlMessage::Kind::kMtpStep)) {
    return absl::DataLossError(absl::StrCat("step plan: unknown kind ", h.kind));
  }
  if (h.mla_mode > static_cast<uint8_t>(MlaMode::kAbsorbed)) {
    return absl::DataLossError(absl::StrCat("step plan: unknown MLA mode ", h.mla_mode));
  }
  m.kind = static_cast<ControlMessage::Kind>(h.kind);
  m.mla_mode = static_cast<MlaMode>(h.mla_mode);
  Reader r(payload, h.payload_bytes);
  if (CarriesBatch(m.kind)) {
    ForwardBatch& b = m.batch;
    DSV3_RETURN_IF_ERROR(r.Array(&b.token_ids, "token ids"));
    uint32_t num_sequences = 0;
    DSV3_RETURN_IF_ERROR(r.U32(&num_sequences));
    // Each sequence takes at least 20 bytes: bound the count before allocating for it.
    if (num_sequences > r.left() / 20) {
      return absl::DataLossError(
          absl::StrCat("step plan claims ", num_sequences, " sequences in ", r.left(), " bytes"));
    }
    b.sequences.resize(num_sequences);
    for (SequenceSlice& s : b.sequences) {
      DSV3_RETURN_IF_ERROR(r.I32(&s.token_begin));
      DSV3_RETURN_IF_ERROR(r.I32(&s.num_tokens));
      DSV3_RETURN_IF_ERROR(r.I32(&s.context_begin));
      DSV3_RETURN_IF_ERROR(r.I32(&s.attention_rank));
      DSV3_RETURN_IF_ERROR(r.Array(&s.block_table, "a block table"));
    }
    DSV3_RETURN_IF_ERROR(r.Array(&b.logits_rows, "logits rows"));
    DSV3_RETURN_IF_ERROR(r.Array(&b.hidden_rows, "hidden rows"));
    DSV3_RETURN_IF_ERROR(CheckBatch(b));
  } else if (m.kind == ControlMessage::Kind::kAllocateCache) {
    DSV3_RETURN_IF_ERROR(r.I64(&m.num_kv_blocks));
    DSV3_RETURN_IF_ERROR(r.I32(&m.kv_block_size));
    uint8_t mtp_layer = 0;
    DSV3_RETURN_IF_ERROR(r.U8(&mtp_layer));
    if (m.num_kv_blocks < 0 || m.kv_block_size < 1 || mtp_layer > 1) {  // 0 blocks: release
      return absl::DataLossError(absl::StrCat("step plan: cache of ", m.num_kv_blocks,
                                              " blocks of ", m.kv_block_size,
                                              " tokens, MTP layer flag ", mtp_layer));
    }
    m.mtp_layer = mtp_layer == 1;
  }
  if (r.left() != 0) {
    return absl::DataLossError(absl::StrCat("step plan: ", r.left(), " trailing bytes"));
  }
  return m;
}

}  // namespace dsv3
