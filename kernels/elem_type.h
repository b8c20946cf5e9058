// Element types of kernel arguments, shared by the host-side launch headers and the kernels.
#pragma once

#include <cstdint>

namespace dsv3::kernels {

enum class ElemType : uint8_t { kF32, kBF16, kF8E4M3, kI32 };

}  // namespace dsv3::kernels
