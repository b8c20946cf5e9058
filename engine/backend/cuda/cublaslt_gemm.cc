#include "engine/backend/cuda/cublaslt_gemm.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace dsv3 {

namespace {

absl::Status LtStatus(cublasStatus_t s, const char* what) {
  if (s == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, ": cublasStatus_t ", static_cast<int>(s)));
}

#define DSV3_LT_RETURN_IF_ERROR(expr)                          \
  do {                                                         \
    absl::Status _dsv3_lt = LtStatus((expr), #expr);           \
    if (!_dsv3_lt.ok()) return _dsv3_lt;                       \
  } while (0)

template <typename T>
cublasStatus_t SetDesc(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attr,
                       const T& value) {
  return cublasLtMatmulDescSetAttribute(desc, attr, &value, sizeof(value));
}

template <typename T>
cublasStatus_t SetLayout(cublasLtMatrixLayout_t layout, cublasLtMatrixLayoutAttribute_t attr,
                         const T& value) {
  return cublasLtMatrixLayoutSetAttribute(layout, attr, &value, sizeof(value));
}

// The largest power of two (at most 256) dividing the address and every batch stride in bytes.
uint32_t Alignment(const void* p, int64_t stride_bytes) {
  uint64_t v = reinterpret_cast<uintptr_t>(p) | 256u;
  if (stride_bytes != 0) v |= static_cast<uint64_t>(stride_bytes);
  return static_cast<uint32_t>(v & (~v + 1));
}

}  // namespace

CublasLtGemm::Plan::~Plan() {
  if (a) cublasLtMatrixLayoutDestroy(a);
  if (b) cublasLtMatrixLayoutDestroy(b);
  if (d) cublasLtMatrixLayoutDestroy(d);
  if (desc) cublasLtMatmulDescDestroy(desc);
}

absl::StatusOr<std::unique_ptr<CublasLtGemm>> CublasLtGemm::Create(cudaStream_t stream) {
  std::unique_ptr<CublasLtGemm> g(new CublasLtGemm(stream));
  DSV3_LT_RETURN_IF_ERROR(cublasLtCreate(&g->handle_));
  if (cudaMalloc(&g->workspace_, kWorkspaceBytes) != cudaSuccess) {
    return absl::ResourceExhaustedError("cuBLASLt workspace allocation failed");
  }
  return g;
}

CublasLtGemm::~CublasLtGemm() {
  plans_.clear();
  if (workspace_) cudaFree(workspace_);
  if (handle_) cublasLtDestroy(handle_);
}

absl::Status CublasLtGemm::ChooseAlgo(Plan& plan, uint32_t align_a, uint32_t align_b,
                                      uint32_t align_d) {
  cublasLtMatmulPreference_t pref = nullptr;
  DSV3_LT_RETURN_IF_ERROR(cublasLtMatmulPreferenceCreate(&pref));
  const uint64_t ws = kWorkspaceBytes;
  cublasStatus_t s = cublasLtMatmulPreferenceSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws));
  const std::pair<cublasLtMatmulPreferenceAttributes_t, uint32_t> aligns[] = {
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, align_a},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, align_b},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, align_d},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, align_d}};
  for (const auto& [attr, value] : aligns) {
    if (s == CUBLAS_STATUS_SUCCESS) {
      s = cublasLtMatmulPreferenceSetAttribute(pref, attr, &value, sizeof(value));
    }
  }
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  if (s == CUBLAS_STATUS_SUCCESS) {
    s = cublasLtMatmulAlgoGetHeuristic(handle_, plan.desc, plan.a, plan.b, plan.d, plan.d, pref, 1,
                                       &result, &found);
  }
  cublasLtMatmulPreferenceDestroy(pref);
  DSV3_LT_RETURN_IF_ERROR(s);
  if (found == 0) return absl::UnimplementedError("cuBLASLt: no algorithm for this shape");
  plan.algo = result.algo;
  return absl::OkStatus();
}

absl::StatusOr<CublasLtGemm::Plan*> CublasLtGemm::Fp8Plan(const Fp8GemmArgs& g) {
  const uint32_t align_a = Alignment(g.w, 0), align_b = Alignment(g.x, 0),
                 align_d = Alignment(g.d, 0);
  const Key key{8,     true, false, g.n_padded, g.m_padded, g.k_padded, g.k_padded, 0, g.k_padded,
                0,     g.ldd, 0,    1,          g.d_f32,    align_a,    align_b,    align_d};
  auto it = plans_.find(key);
  if (it != plans_.end()) return it->second.get();
  auto plan = std::make_unique<Plan>();
  DSV3_LT_RETURN_IF_ERROR(cublasLtMatmulDescCreate(&plan->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  DSV3_LT_RETURN_IF_ERROR(SetDesc(plan->desc, CUBLASLT_MATMUL_DESC_TRANSA, CUBLAS_OP_T));
  DSV3_LT_RETURN_IF_ERROR(SetDesc(plan->desc, CUBLASLT_MATMUL_DESC_TRANSB, CUBLAS_OP_N));
  DSV3_LT_RETURN_IF_ERROR(SetDesc(plan->desc, CUBLASLT_MATMUL_DESC_A_SCALE_MODE,
                                  CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F));
  DSV3_LT_RETURN_IF_ERROR(SetDesc(plan->desc, CUBLASLT_MATMUL_DESC_B_SCALE_MODE,
                                  CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F));
  // A = W as K x N (TRANSA = T), B = X as K x M, D as N x M: all column-major.
  DSV3_LT_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&plan->a, CUDA_R_8F_E4M3, g.k_padded,
                                                     g.n_padded, g.k_padded));
  DSV3_LT_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&plan->b, CUDA_R_8F_E4M3, g.k_padded,
                                                     g.m_padded, g.k_padded));
  DSV3_LT_RETURN_IF_ERROR(
      cublasLtMatrixLayoutCreate(&plan->d, g.d_f32 ? CUDA_R_32F : CUDA_R_16BF, g.n_padded,
                                 g.m_padded, g.ldd));
  // The heuristic looks at the scale pointers' presence, so set placeholders before choosing.
  DSV3_LT_RETURN_IF_ERROR(SetDesc(plan->desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, g.w_scale));
  DSV3_LT_RETURN_IF_ERROR(SetDesc(plan->desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, g.x_scale));
  const absl::Status chosen = ChooseAlgo(*plan, align_a, align_b, align_d);
  if (!chosen.ok()) {
    return absl::Status(chosen.code(),
                        absl::StrCat("FP8 GEMM M=", g.m_padded, " N=", g.n_padded, " K=",
                                     g.k_padded, g.d_f32 ? " (F32 out)" : "", ": ",
                                     chosen.message()));
  }
  Plan* p = plan.get();
  plans_.emplace(key, std::move(plan));
  return p;
}

absl::Status CublasLtGemm::Fp8(const Fp8GemmArgs& g) {
  auto plan = Fp8Plan(g);
  if (!plan.ok()) return plan.status();
  Plan& p = **plan;
  DSV3_LT_RETURN_IF_ERROR(SetDesc(p.desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, g.w_scale));
  DSV3_LT_RETURN_IF_ERROR(SetDesc(p.desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, g.x_scale));
  const float alpha = 1.0f, beta = g.add_to_d ? 1.0f : 0.0f;
  DSV3_LT_RETURN_IF_ERROR(cublasLtMatmul(handle_, p.desc, &alpha, g.w, p.a, g.x, p.b, &beta, g.d,
                                         p.d, g.d, p.d, &p.algo, workspace_, kWorkspaceBytes,
                                         stream_));
  return absl::OkStatus();
}

absl::StatusOr<CublasLtGemm::Plan*> CublasLtGemm::Bf16Plan(const Bf16GemmArgs& g) {
  const int64_t d_size = g.d_f32 ? 4 : 2;
  const uint32_t align_a = Alignment(g.a, g.batch > 1 ? g.stride_a * 2 : 0);
  const uint32_t align_b = Alignment(g.b, g.batch > 1 ? g.stride_b * 2 : 0);
  const uint32_t align_d = Alignment(g.d, g.batch > 1 ? g.stride_d * d_size : 0);
  const Key key{16,       g.trans_a, g.trans_b, g.m,     g.n,     g.k,     g.lda,  g.stride_a, g.ldb,
                g.stride_b, g.ldd,   g.stride_d, g.batch, g.d_f32, align_a, align_b, align_d};
  auto it = plans_.find(key);
  if (it != plans_.end()) return it->second.get();
  auto plan = std::make_unique<Plan>();
  DSV3_LT_RETURN_IF_ERROR(cublasLtMatmulDescCreate(&plan->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  DSV3_LT_RETURN_IF_ERROR(SetDesc(plan->desc, CUBLASLT_MATMUL_DESC_TRANSA,
                                  g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N));
  DSV3_LT_RETURN_IF_ERROR(SetDesc(plan->desc, CUBLASLT_MATMUL_DESC_TRANSB,
                                  g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N));
  // Stored shapes: A is m x k (k x m when transposed), B is k x n (n x k when transposed).
  DSV3_LT_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(
      &plan->a, CUDA_R_16BF, g.trans_a ? g.k : g.m, g.trans_a ? g.m : g.k, g.lda));
  DSV3_LT_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(
      &plan->b, CUDA_R_16BF, g.trans_b ? g.n : g.k, g.trans_b ? g.k : g.n, g.ldb));
  DSV3_LT_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(
      &plan->d, g.d_f32 ? CUDA_R_32F : CUDA_R_16BF, g.m, g.n, g.ldd));
  if (g.batch > 1) {
    const std::tuple<cublasLtMatrixLayout_t, int64_t> layouts[] = {
        {plan->a, g.stride_a}, {plan->b, g.stride_b}, {plan->d, g.stride_d}};
    for (const auto& [layout, stride] : layouts) {
      DSV3_LT_RETURN_IF_ERROR(SetLayout(layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, g.batch));
      DSV3_LT_RETURN_IF_ERROR(
          SetLayout(layout, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, stride));
    }
  }
  const absl::Status chosen = ChooseAlgo(*plan, align_a, align_b, align_d);
  if (!chosen.ok()) {
    return absl::Status(chosen.code(), absl::StrCat("BF16 GEMM m=", g.m, " n=", g.n, " k=", g.k,
                                                    " batch=", g.batch, ": ", chosen.message()));
  }
  Plan* p = plan.get();
  plans_.emplace(key, std::move(plan));
  return p;
}

absl::Status CublasLtGemm::Bf16(const Bf16GemmArgs& g) {
  if (g.m == 0 || g.n == 0) return absl::OkStatus();
  auto plan = Bf16Plan(g);
  if (!plan.ok()) return plan.status();
  Plan& p = **plan;
  const float alpha = 1.0f, beta = g.add_to_d ? 1.0f : 0.0f;
  DSV3_LT_RETURN_IF_ERROR(cublasLtMatmul(handle_, p.desc, &alpha, g.a, p.a, g.b, p.b, &beta, g.d,
                                         p.d, g.d, p.d, &p.algo, workspace_, kWorkspaceBytes,
                                         stream_));
  return absl::OkStatus();
}

}  // namespace dsv3
