// Bug 8: calls whose deadline expired were counted and logged as CANCELLED (157 of 206 in a
// deadline storm): the client's timer fires first and resets the stream, a little before the
// deadline the server knows.
#include "gtest/gtest.h"
#include "server/cancel_reason.h"

namespace dsv3::server::server_cancel_reason_test {
namespace {

using Clock = std::chrono::system_clock;
using std::chrono::milliseconds;

TEST(CancelReasonTest, CancellationJustBeforeTheDeadlineIsTheDeadline) {
  const Clock::time_point received = Clock::now();
  const Clock::time_point deadline = received + milliseconds(300);
  EXPECT_EQ(ClassifyCancel(received, deadline, deadline), CancelReason::kDeadline);
  EXPECT_EQ(ClassifyCancel(received, deadline, deadline + milliseconds(5)),
            CancelReason::kDeadline);
  // The client's timer, a few milliseconds ahead of the server's.
  EXPECT_EQ(ClassifyCancel(received, deadline, deadline - milliseconds(3)),
            CancelReason::kDeadline);
  // 10% of 300 ms plus 100 ms.
  EXPECT_EQ(ClassifyCancel(received, deadline, deadline - milliseconds(130)),
            CancelReason::kDeadline);
  EXPECT_EQ(ClassifyCancel(received, deadline, deadline - milliseconds(131)),
            CancelReason::kClient);
}

TEST(CancelReasonTest, EarlyCancellationIsTheClient) {
  const Clock::time_point received = Clock::now();
  const Clock::time_point deadline = received + std::chrono::seconds(60);
  EXPECT_EQ(ClassifyCancel(received, deadline, received + std::chrono::seconds(1)),
            CancelReason::kClient);
  EXPECT_EQ(ClassifyCancel(received, deadline, deadline - std::chrono::seconds(7)),
            CancelReason::kClient);
  EXPECT_EQ(ClassifyCancel(received, deadline, deadline - std::chrono::seconds(5)),
            CancelReason::kDeadline);
}

TEST(CancelReasonTest, NoDeadlineIsAlwaysTheClient) {
  const Clock::time_point received = Clock::now();
  EXPECT_EQ(ClassifyCancel(received, Clock::time_point::max(), received + std::chrono::hours(1)),
            CancelReason::kClient);
}

}  // namespace
}  // namespace dsv3::server::server_cancel_reason_test
