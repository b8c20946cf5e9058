#include "server/cancel_reason.h"

namespace dsv3::server {

CancelReason ClassifyCancel(std::chrono::system_clock::time_point received,
                            std::chrono::system_clock::time_point deadline,
                            std::chrono::system_clock::time_point now) {
  if (now >= deadline) return CancelReason::kDeadline;
  // No deadline reads as a far future one (years): its slack never reaches back to now.
  const auto budget = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - received);
  const auto slack = std::chrono::duration_cast<std::chrono::milliseconds>(
                         budget * kDeadlineSlackFraction) +
                     kDeadlineSlack;
  return deadline - now <= slack ? CancelReason::kDeadline : CancelReason::kClient;
}

}  // namespace dsv3::server
