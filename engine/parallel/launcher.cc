#include "engine/parallel/launcher.h"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

extern char** environ;

namespace dsv3 {
namespace {

constexpr const char* kRankVariables[] = {"RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                                          "LOCAL_RANK"};

std::vector<std::string> WorkerEnvironment(const LaunchOptions& o, int local_rank) {
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    bool ours = false;
    for (const char* name : kRankVariables) ours |= absl::StartsWith(*e, absl::StrCat(name, "="));
    if (!ours) env.emplace_back(*e);
  }
  env.push_back(absl::StrCat("RANK=", o.first_rank + local_rank));
  env.push_back(absl::StrCat("WORLD_SIZE=", o.world_size));
  env.push_back(absl::StrCat("MASTER_ADDR=", o.master_addr));
  env.push_back(absl::StrCat("MASTER_PORT=", o.master_port));
  env.push_back(absl::StrCat("LOCAL_RANK=", local_rank));
  return env;
}

std::vector<char*> Pointers(std::vector<std::string>& strings) {
  std::vector<char*> p;
  for (std::string& s : strings) p.push_back(s.data());
  p.push_back(nullptr);
  return p;
}

std::string DescribeExit(const siginfo_t& info) {
  if (info.si_code == CLD_EXITED) return absl::StrCat("exited with status ", info.si_status);
  return absl::StrCat("killed by signal ", info.si_status, " (", strsignal(info.si_status), ")");
}

}  // namespace

absl::StatusOr<std::unique_ptr<Launcher>> Launcher::Start(const LaunchOptions& options) {
  std::unique_ptr<Launcher> launcher(new Launcher(options));
  if (absl::Status st = launcher->SpawnAll(); !st.ok()) return st;  // ~Launcher kills the rest
  return launcher;
}

absl::Status Launcher::SpawnAll() {
  const pid_t parent = getpid();
  for (int local_rank = 1; local_rank < options_.node_ranks; ++local_rank) {
    const int rank = options_.first_rank + local_rank;
    // Everything the child needs is built before fork: after it, only async-signal-safe calls.
    std::vector<std::string> args = {options_.program};
    args.insert(args.end(), options_.args.begin(), options_.args.end());
    std::vector<std::string> env = WorkerEnvironment(options_, local_rank);
    std::vector<char*> argv = Pointers(args);
    std::vector<char*> envp = Pointers(env);
    const pid_t pid = fork();
    if (pid < 0) {
      return absl::InternalError(
          absl::StrCat("cannot start rank ", rank, ": fork: ", std::strerror(errno)));
    }
    if (pid == 0) {
      // Threads of the server block SIGTERM/SIGINT to take them with sigwait; exec keeps the
      // mask, so clear it, and ask for SIGKILL when rank 0 dies.
      sigset_t none;
      sigemptyset(&none);
      sigprocmask(SIG_SETMASK, &none, nullptr);
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent) _exit(127);  // rank 0 died before prctl took effect
      execve(argv[0], argv.data(), envp.data());
      _exit(127);
    }
    absl::MutexLock lock(&mu_);
    workers_.push_back({.rank = rank, .pid = pid});
  }
  absl::MutexLock stop_lock(&stop_mu_);
  absl::MutexLock lock(&mu_);
  for (size_t i = 0; i < workers_.size(); ++i) {
    supervisors_.emplace_back([this, i] { Supervise(i); });
  }
  return absl::OkStatus();
}

void Launcher::Supervise(size_t index) {
  pid_t pid;
  {
    absl::MutexLock lock(&mu_);
    pid = workers_[index].pid;
  }
  // Wait without reaping, so that the pid cannot be reused while Stop() may still signal it.
  siginfo_t info{};
  while (waitid(P_PID, pid, &info, WEXITED | WNOWAIT) != 0 && errno == EINTR) {
  }
  const bool clean = info.si_code == CLD_EXITED && info.si_status == 0;
  bool report = false;
  int rank = 0;
  {
    absl::MutexLock lock(&mu_);
    workers_[index].exited = true;
    report = !stopped_ && (options_.report_clean_exits || !clean);
    rank = workers_[index].rank;
  }
  while (waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
  }
  if (report && options_.on_worker_exit) options_.on_worker_exit(rank, DescribeExit(info));
}

void Launcher::Stop(absl::Duration grace) {
  absl::MutexLock stop_lock(&stop_mu_);
  {
    absl::MutexLock lock(&mu_);
    if (stopped_) return;
    stopped_ = true;  // exits are expected from now on
    auto all_exited = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      for (const Worker& w : workers_) {
        if (!w.exited) return false;
      }
      return true;
    };
    mu_.AwaitWithTimeout(absl::Condition(&all_exited), grace);
    for (const Worker& w : workers_) {
      if (!w.exited) kill(w.pid, SIGKILL);
    }
  }
  // Without supervisors (SpawnAll failed half-way) nobody reaps: do it here.
  if (supervisors_.empty()) {
    for (pid_t pid : pids()) waitpid(pid, nullptr, 0);
  }
  for (std::thread& t : supervisors_) t.join();
}

Launcher::~Launcher() { Stop(absl::ZeroDuration()); }

std::vector<pid_t> Launcher::pids() const {
  absl::MutexLock lock(&mu_);
  std::vector<pid_t> pids;
  for (const Worker& w : workers_) pids.push_back(w.pid);
  return pids;
}

int Launcher::exited() const {
  absl::MutexLock lock(&mu_);
  int n = 0;
  for (const Worker& w : workers_) n += w.exited ? 1 : 0;
  return n;
}

}  // namespace dsv3
