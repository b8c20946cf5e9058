#include "engine/backend/tensor.h"

#include <cstdlib>
#include <new>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace dsv3 {

namespace {

class AlignedHostAllocator final : public Allocator {
 public:
  void* Allocate(int64_t bytes) override {
    // 64-byte alignment for vector loads; size rounded up as aligned_alloc requires.
    const size_t rounded = (static_cast<size_t>(bytes) + 63) & ~size_t{63};
    void* p = std::aligned_alloc(64, rounded == 0 ? 64 : rounded);
    if (p == nullptr) throw std::bad_alloc();
    return p;
  }
  void Free(void* p) override { std::free(p); }
  Device device() const override { return Device::kCpu; }
};

void FillContiguousStrides(TensorView& v) {
  int64_t stride = 1;
  for (int i = v.ndim - 1; i >= 0; --i) {
    v.strides[i] = stride;
    stride *= v.shape[i];
  }
}

}  // namespace

Allocator* HostAllocator() {
  static AlignedHostAllocator allocator;
  return &allocator;
}

TensorView TensorView::Contiguous(void* data, DType dtype, std::initializer_list<int64_t> shape,
                                  Device device) {
  return Contiguous(data, dtype, std::span<const int64_t>(shape.begin(), shape.size()), device);
}

TensorView TensorView::Contiguous(void* data, DType dtype, std::span<const int64_t> shape,
                                  Device device) {
  TensorView v;
  v.data = data;
  v.dtype = dtype;
  v.device = device;
  assert(shape.size() <= kMaxDims);
  v.ndim = static_cast<int>(shape.size());
  for (int i = 0; i < v.ndim; ++i) v.shape[i] = shape[i];
  FillContiguousStrides(v);
  return v;
}

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int i = 0; i < ndim; ++i) n *= shape[i];
  return n;
}

bool TensorView::is_contiguous() const {
  int64_t stride = 1;
  for (int i = ndim - 1; i >= 0; --i) {
    if (shape[i] != 1 && strides[i] != stride) return false;
    stride *= shape[i];
  }
  return true;
}

std::string TensorView::ShapeString() const {
  return absl::StrCat("[", absl::StrJoin(shape.begin(), shape.begin() + ndim, ", "), "]");
}

TensorView TensorView::Rows(int64_t begin, int64_t end) const {
  assert(ndim >= 1 && 0 <= begin && begin <= end && end <= shape[0]);
  TensorView v = *this;
  v.data = static_cast<char*>(data) + begin * strides[0] * DTypeSize(dtype);
  v.shape[0] = end - begin;
  return v;
}

TensorView TensorView::Reshape(std::initializer_list<int64_t> new_shape) const {
  assert(is_contiguous());
  TensorView v = Contiguous(data, dtype, new_shape, device);
  assert(v.numel() == numel());
  return v;
}

Tensor::Tensor(Allocator* allocator, DType dtype, std::initializer_list<int64_t> shape)
    : Tensor(allocator, dtype, shape.begin(), static_cast<int>(shape.size())) {}

Tensor::Tensor(Allocator* allocator, DType dtype, const int64_t* shape, int ndim)
    : allocator_(allocator) {
  assert(ndim <= kMaxDims);
  view_.dtype = dtype;
  view_.device = allocator->device();
  view_.ndim = ndim;
  for (int i = 0; i < ndim; ++i) view_.shape[i] = shape[i];
  FillContiguousStrides(view_);
  view_.data = allocator_->Allocate(view_.nbytes());
}

Tensor::~Tensor() {
  if (allocator_ != nullptr && view_.data != nullptr) allocator_->Free(view_.data);
}

Tensor::Tensor(Tensor&& other) noexcept
    : allocator_(std::exchange(other.allocator_, nullptr)), view_(std::exchange(other.view_, {})) {}

Tensor& Tensor::operator=(Tensor&& other) noexcept {
  if (this != &other) {
    if (allocator_ != nullptr && view_.data != nullptr) allocator_->Free(view_.data);
    allocator_ = std::exchange(other.allocator_, nullptr);
    view_ = std::exchange(other.view_, {});
  }
  return *this;
}

}  // namespace dsv3
