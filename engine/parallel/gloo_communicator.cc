#include "engine/parallel/gloo_communicator.h"

#include <chrono>
#include <cstring>
#include <exception>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/parallel/gloo_store_adapter.h"
#include "gloo/allgather.h"
#include "gloo/allreduce.h"
#include "gloo/alltoallv.h"
#include "gloo/barrier.h"
#include "gloo/broadcast.h"
#include "gloo/math.h"
#include "gloo/rendezvous/context.h"
#include "gloo/transport/tcp/device.h"

namespace dsv3 {
namespace {

std::chrono::milliseconds ToChrono(absl::Duration d) {
  return std::chrono::milliseconds(absl::ToInt64Milliseconds(d));
}

absl::Status CheckHostTensor(const TensorView& t, const char* name) {
  if (t.device != Device::kCpu) {
    return absl::InvalidArgumentError(absl::StrCat("gloo: ", name, " is not a host tensor"));
  }
  if (!t.is_contiguous()) {
    return absl::InvalidArgumentError(absl::StrCat("gloo: ", name, " is not contiguous"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<GlooCommunicator>> GlooCommunicator::Create(
    TcpStore& store, const GlooOptions& options) {
  if (options.world_size < 1 || options.rank < 0 || options.rank >= options.world_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("gloo: rank ", options.rank, " of world size ", options.world_size));
  }
  GlooStoreAdapter adapter(store, options.key_prefix, options.rendezvous_timeout);
  try {
    gloo::transport::tcp::attr attr;
    attr.hostname = options.hostname;
    auto device = gloo::transport::tcp::CreateDevice(attr);
    auto context =
        std::make_shared<gloo::rendezvous::Context>(options.rank, options.world_size);
    // connectFullMesh waits for every peer's address with the context's timeout.
    context->setTimeout(ToChrono(options.rendezvous_timeout));
    context->connectFullMesh(adapter, device);
    context->setTimeout(ToChrono(options.timeout));
    return std::unique_ptr<GlooCommunicator>(new GlooCommunicator(options, std::move(context)));
  } catch (const std::exception& e) {
    if (!adapter.first_error().ok()) return adapter.first_error();
    return absl::UnavailableError(absl::StrCat("gloo rendezvous of rank ", options.rank, " of ",
                                               options.world_size, " failed: ", e.what()));
  }
}

GlooCommunicator::GlooCommunicator(GlooOptions options, std::shared_ptr<gloo::Context> context)
    : options_(std::move(options)), context_(std::move(context)) {}

GlooCommunicator::~GlooCommunicator() = default;

template <typename Fn>
absl::Status GlooCommunicator::Run(const char* what, Fn&& fn) {
  if (!failed_.ok()) return failed_;
  try {
    fn(next_tag_++);
    return absl::OkStatus();
  } catch (const std::exception& e) {
    // gloo's state after a failed collective is undefined (buffers may still be posted), so the
    // communicator is done: the process is expected to exit.
    failed_ = absl::UnavailableError(absl::StrCat("gloo ", what, " on rank ", options_.rank,
                                                  " of ", options_.world_size,
                                                  " failed (a peer died or timed out after ",
                                                  absl::FormatDuration(options_.timeout),
                                                  "): ", e.what()));
    return failed_;
  }
}

absl::Status GlooCommunicator::AllReduceSum(const TensorView& data) {
  if (absl::Status st = CheckHostTensor(data, "all-reduce buffer"); !st.ok()) return st;
  if (data.dtype != DType::kF32) {
    return absl::InvalidArgumentError("gloo: all-reduce supports F32 only");
  }
  if (options_.world_size == 1 || data.numel() == 0) return failed_;
  return Run("all-reduce", [&](uint32_t tag) {
    gloo::AllreduceOptions opts(context_);
    opts.setOutput(data.ptr<float>(), static_cast<size_t>(data.numel()));  // in place
    opts.setReduceFunction(
        static_cast<void (*)(void*, const void*, const void*, size_t)>(&gloo::sum<float>));
    opts.setTag(tag);
    gloo::allreduce(opts);
  });
}

absl::Status GlooCommunicator::AllGather(const TensorView& in, const TensorView& out) {
  if (absl::Status st = CheckHostTensor(in, "all-gather input"); !st.ok()) return st;
  if (absl::Status st = CheckHostTensor(out, "all-gather output"); !st.ok()) return st;
  if (in.dtype != out.dtype || out.numel() != in.numel() * options_.world_size) {
    return absl::InvalidArgumentError(absl::StrCat("gloo: all-gather of ", in.ShapeString(),
                                                   " into ", out.ShapeString(), " across ",
                                                   options_.world_size, " ranks"));
  }
  if (options_.world_size == 1) {
    if (in.data != out.data) std::memcpy(out.data, in.data, in.nbytes());
    return failed_;
  }
  return Run("all-gather", [&](uint32_t tag) {
    gloo::AllgatherOptions opts(context_);
    opts.setInput(in.ptr<uint8_t>(), static_cast<size_t>(in.nbytes()));
    opts.setOutput(out.ptr<uint8_t>(), static_cast<size_t>(out.nbytes()));
    opts.setTag(tag);
    gloo::allgather(opts);
  });
}

absl::Status GlooCommunicator::AllToAllV(const TensorView& send,
                                         std::span<const int64_t> send_rows,
                                         const TensorView& recv,
                                         std::span<const int64_t> recv_rows) {
  if (absl::Status st = CheckHostTensor(send, "all-to-all input"); !st.ok()) return st;
  if (absl::Status st = CheckHostTensor(recv, "all-to-all output"); !st.ok()) return st;
  if (absl::Status st = CheckAllToAllV("gloo", options_.world_size, send, send_rows, recv,
                                       recv_rows);
      !st.ok()) {
    return st;
  }
  // gloo counts elements of one size: bytes here. Empty buffers still take part (their
  // pointers are never read); a one-byte stand-in keeps gloo from seeing a null buffer.
  const int64_t row_bytes = RowBytes(send);
  std::vector<int64_t> send_bytes(send_rows.begin(), send_rows.end());
  std::vector<int64_t> recv_bytes(recv_rows.begin(), recv_rows.end());
  for (int64_t& b : send_bytes) b *= row_bytes;
  for (int64_t& b : recv_bytes) b *= row_bytes;
  uint8_t stand_in[2] = {0, 0};
  uint8_t* in = send.nbytes() > 0 ? send.ptr<uint8_t>() : &stand_in[0];
  uint8_t* out = recv.nbytes() > 0 ? recv.ptr<uint8_t>() : &stand_in[1];
  return Run("all-to-all", [&](uint32_t tag) {
    gloo::AlltoallvOptions opts(context_);
    opts.setInput(in, send_bytes);
    opts.setOutput(out, recv_bytes);
    opts.setTag(tag);
    gloo::alltoallv(opts);
  });
}

absl::Status GlooCommunicator::Broadcast(std::string& bytes, int root) {
  if (root < 0 || root >= options_.world_size) {
    return absl::InvalidArgumentError(absl::StrCat("gloo: broadcast root ", root));
  }
  if (options_.world_size == 1) return failed_;
  uint64_t size = bytes.size();
  absl::Status st = Run("broadcast (size)", [&](uint32_t tag) {
    gloo::BroadcastOptions opts(context_);
    opts.setOutput(&size, 1);
    opts.setRoot(root);
    opts.setTag(tag);
    gloo::broadcast(opts);
  });
  if (!st.ok() || size == 0) {
    if (st.ok()) bytes.clear();
    return st;
  }
  bytes.resize(size);
  return Run("broadcast", [&](uint32_t tag) {
    gloo::BroadcastOptions opts(context_);
    opts.setOutput(bytes.data(), bytes.size());
    opts.setRoot(root);
    opts.setTag(tag);
    gloo::broadcast(opts);
  });
}

absl::Status GlooCommunicator::Barrier() { return BarrierFor(options_.timeout); }

absl::Status GlooCommunicator::StartupBarrier(absl::Duration timeout) {
  return BarrierFor(timeout);
}

absl::Status GlooCommunicator::BarrierFor(absl::Duration timeout) {
  if (options_.world_size == 1) return failed_;
  return Run("barrier", [&](uint32_t tag) {
    gloo::BarrierOptions opts(context_);
    opts.setTag(tag);
    opts.setTimeout(ToChrono(timeout));
    gloo::barrier(opts);
  });
}

}  // namespace dsv3
