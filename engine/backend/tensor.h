// TensorView: a non-owning view of a strided tensor on some device; Tensor: an owning buffer.
// Model code and kernels only ever see views; ownership stays with the backend or the checkpoint.
#pragma once

#include <array>
#include <cassert>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>

#include "engine/backend/dtype.h"

namespace dsv3 {

enum class Device : uint8_t { kCpu, kCuda };

inline constexpr int kMaxDims = 4;

struct TensorView {
  void* data = nullptr;
  DType dtype = DType::kF32;
  Device device = Device::kCpu;
  int ndim = 0;
  std::array<int64_t, kMaxDims> shape{};
  std::array<int64_t, kMaxDims> strides{};  // in elements

  // A contiguous (row-major) view over `data`.
  static TensorView Contiguous(void* data, DType dtype, std::initializer_list<int64_t> shape,
                               Device device = Device::kCpu);
  // The same for a shape held elsewhere (a checkpoint entry's, a staged read's); at most
  // kMaxDims dimensions.
  static TensorView Contiguous(void* data, DType dtype, std::span<const int64_t> shape,
                               Device device = Device::kCpu);

  bool empty() const { return data == nullptr; }
  int64_t dim(int i) const { return shape[i < 0 ? i + ndim : i]; }
  int64_t numel() const;
  int64_t nbytes() const { return numel() * DTypeSize(dtype); }
  bool is_contiguous() const;
  std::string ShapeString() const;  // "[3, 4]"

  // Rows [begin, end) of the first dimension.
  TensorView Rows(int64_t begin, int64_t end) const;
  // The same data seen with another contiguous shape of equal numel (requires contiguity).
  TensorView Reshape(std::initializer_list<int64_t> new_shape) const;

  template <typename T>
  T* ptr() const {
    return static_cast<T*>(data);
  }
};

// An owning, contiguous buffer with a view. Memory comes from an Allocator so that the same type
// serves host and device tensors.
class Allocator {
 public:
  virtual ~Allocator() = default;
  virtual void* Allocate(int64_t bytes) = 0;
  virtual void Free(void* p) = 0;
  virtual Device device() const = 0;
};

// Aligned host memory.
Allocator* HostAllocator();

class Tensor {
 public:
  Tensor() = default;
  Tensor(Allocator* allocator, DType dtype, std::initializer_list<int64_t> shape);
  Tensor(Allocator* allocator, DType dtype, const int64_t* shape, int ndim);
  ~Tensor();
  Tensor(Tensor&& other) noexcept;
  Tensor& operator=(Tensor&& other) noexcept;
  Tensor(const Tensor&) = delete;
  Tensor& operator=(const Tensor&) = delete;

  const TensorView& view() const { return view_; }
  operator const TensorView&() const { return view_; }  // NOLINT: views are the lingua franca
  template <typename T>
  T* ptr() const {
    return view_.ptr<T>();
  }
  int64_t numel() const { return view_.numel(); }
  bool empty() const { return view_.empty(); }

 private:
  Allocator* allocator_ = nullptr;
  TensorView view_;
};

}  // namespace dsv3
