// Why gRPC cancelled a server call: gRPC's callback API runs OnCancel for a client's cancel and
// for an expired deadline alike, and both reach the server as the same HTTP/2 reset. Pure
// timing, so that it can be tested without a server.
#pragma once

#include <chrono>

namespace dsv3::server {

enum class CancelReason { kClient, kDeadline };

// A call received at `received` with `deadline` (time_point::max() or far future: none) and
// cancelled at `now`. The client's deadline timer usually fires before the server's and resets
// the stream, so the server hears of an expired deadline a little before the deadline it knows:
// that one is later by the time the call took to arrive and by the grpc-timeout header's
// rounding up (to three significant digits, under 1%). A cancellation within
// kDeadlineSlackFraction of the call's time budget plus kDeadlineSlack of the deadline is
// counted as the deadline; a client that cancels on purpose that late is rare, and counted so.
inline constexpr double kDeadlineSlackFraction = 0.1;
inline constexpr std::chrono::milliseconds kDeadlineSlack{100};

CancelReason ClassifyCancel(std::chrono::system_clock::time_point received,
                            std::chrono::system_clock::time_point deadline,
                            std::chrono::system_clock::time_point now);

}  // namespace dsv3::server
