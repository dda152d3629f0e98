// Runtime services: interrupting a call (InterruptPoll / Interrupted), fork safety (a child
// of a process that ran threads computes, on one thread), and the thread-count limit.
#include <gtest/gtest.h>

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <climits>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "convcore/config.hpp"
#include "convcore/gemm.hpp"
#include "convcore/interrupt.hpp"
#include "runtime/runtime.hpp"
#include "test_support.hpp"

namespace convcore_test {
namespace {

// C = A·B with A all ones and B all twos: every element is 2k.
struct OnesGemm {
  int64_t n;
  std::vector<float> a, b, c;
  explicit OnesGemm(int64_t size)
      : n(size), a(size * size, 1.0f), b(size * size, 2.0f), c(size * size, -1.0f) {}
  void run() { convcore::gemm<float>(n, n, n, a.data(), n, 1, b.data(), n, 1, c.data(), n, false); }
  bool right() const {
    for (float v : c)
      if (v != 2.0f * n) return false;
    return true;
  }
};

bool stop_now(void* count) {
  ++*static_cast<int*>(count);
  return true;
}
bool never(void* count) {
  ++*static_cast<int*>(count);
  return false;
}

TEST(Interrupt, PollThatSaysStopThrowsInterruptedAndTheLibraryStaysUsable) {
  RuntimeGuard guard;
  for (int threads : {1, 2}) {
    convcore::set_num_threads(threads);
    OnesGemm big(1500);  // several GFLOP: far longer than the 1 ms poll interval
    int polls = 0;
    const auto t0 = std::chrono::steady_clock::now();
    {
      convcore::InterruptPoll poll(&stop_now, &polls, 1);
      EXPECT_THROW(big.run(), convcore::Interrupted) << "threads=" << threads;
      // the scope stays stopped: a later call in it stops too
      EXPECT_THROW(big.run(), convcore::Interrupted);
    }
    const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_EQ(polls, 1);
    EXPECT_LT(took, 1.0) << "threads=" << threads;
    OnesGemm small(300);  // outside the scope: runs to the end, right
    small.run();
    EXPECT_TRUE(small.right());
  }
}

TEST(Interrupt, PollThatSaysGoOnLetsTheCallFinish) {
  RuntimeGuard guard;
  convcore::set_num_threads(2);
  OnesGemm g(700);
  int polls = 0;
  {
    convcore::InterruptPoll poll(&never, &polls, 1);
    g.run();
  }
  EXPECT_TRUE(g.right());
}

TEST(Interrupt, ScopesNestAndOtherThreadsAreNotAffected) {
  RuntimeGuard guard;
  convcore::set_num_threads(1);
  int outer = 0, inner = 0;
  convcore::InterruptPoll poll_outer(&never, &outer, 1);
  bool other_right = false;
  {
    convcore::InterruptPoll poll_inner(&stop_now, &inner, 1);
    std::thread other([&] {  // no scope on this thread
      OnesGemm g(500);
      g.run();
      other_right = g.right();
    });
    OnesGemm big(1200);
    EXPECT_THROW(big.run(), convcore::Interrupted);
    other.join();
  }
  EXPECT_TRUE(other_right);
  OnesGemm g(500);  // the outer scope polls again (and says go on)
  g.run();
  EXPECT_TRUE(g.right());
}

// Waits for a child with a deadline; a child that hangs is killed and reported.
int wait_child(pid_t pid, double seconds) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  int status = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    const pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  kill(pid, SIGKILL);
  waitpid(pid, &status, 0);
  return -1;  // hung
}

TEST(Fork, ChildOfAThreadedProcessComputesOnOneThread) {
  RuntimeGuard guard;
  convcore::set_num_threads(2);
  OnesGemm g(400);
  g.run();  // a multi-threaded call: OpenMP's pool now exists
  ASSERT_TRUE(g.right());
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    // Without OpenMP there is no pool to lose: the child keeps its (serial) setting.
    const bool serial_expected = convcore::has_openmp();
    int code = !serial_expected || convcore::get_num_threads() == 1 ? 0 : 2;
    for (int level = 0; level < 2 && code == 0; ++level) {  // the child, then a grandchild
      OnesGemm c(400);
      c.run();
      if (!c.right()) code = 3;
      if (level == 0 && code == 0) {
        const pid_t grandchild = fork();
        if (grandchild == 0) continue;  // level 1 in the grandchild
        code = wait_child(grandchild, 60) == 0 ? 0 : 4;
        break;
      }
    }
    _exit(code);
  }
  EXPECT_EQ(wait_child(pid, 120), 0) << "-1: the child hung; 2: threads; 3: wrong; 4: grandchild";
  OnesGemm after(400);
  after.run();
  EXPECT_TRUE(after.right());
  EXPECT_EQ(convcore::get_num_threads(), 2);
}

TEST(Threads, SetNumThreadsClampsToTheMaximum) {
  RuntimeGuard guard;
  EXPECT_GE(convcore::max_num_threads(), 64);
  convcore::set_num_threads(INT_MAX);
  EXPECT_EQ(convcore::get_num_threads(), convcore::max_num_threads());
  convcore::set_num_threads(3);
  EXPECT_EQ(convcore::get_num_threads(), 3);
  EXPECT_THROW(convcore::set_num_threads(0), std::invalid_argument);
}

// A fake /proc/self/cgroup and cgroup file system under a fresh temporary folder.
struct CgroupTree {
  std::string dir;
  CgroupTree() {
    char tmpl[] = "/tmp/convcore_cgroup_XXXXXX";
    const char* d = mkdtemp(tmpl);
    EXPECT_NE(d, nullptr);
    dir = d ? d : "/nonexistent";
  }
  ~CgroupTree() { EXPECT_EQ(std::system(("rm -rf '" + dir + "'").c_str()), 0); }
  void write(const std::string& rel, const std::string& text) const {
    const std::string path = dir + "/" + rel;
    for (std::size_t i = dir.size() + 1; (i = path.find('/', i)) != std::string::npos; ++i)
      mkdir(path.substr(0, i).c_str(), 0700);
    std::FILE* f = std::fopen(path.c_str(), "w");
    ASSERT_NE(f, nullptr) << path;
    std::fputs((text + "\n").c_str(), f);
    std::fclose(f);
  }
  int limit() const {
    return convcore::cgroup_cpu_limit((dir + "/proc_cgroup").c_str(), (dir + "/fs").c_str());
  }
};

TEST(Threads, CgroupV2CpuQuotaIsTheLowestAlongThePath) {
  CgroupTree t;
  t.write("proc_cgroup", "0::/pod/job");
  t.write("fs/cpu.max", "max 100000");
  t.write("fs/pod/cpu.max", "250000 100000");  // 2.5 CPUs: 3 threads
  t.write("fs/pod/job/cpu.max", "max 100000");
  EXPECT_EQ(t.limit(), 3);
  t.write("fs/pod/job/cpu.max", "50000 100000");  // half a CPU: 1 thread
  EXPECT_EQ(t.limit(), 1);
  t.write("fs/pod/job/cpu.max", "max 100000");
  t.write("fs/pod/cpu.max", "max 100000");
  EXPECT_EQ(t.limit(), 0);  // no quota anywhere
}

TEST(Threads, DefaultCountIsCappedByTheQuotaUnlessOmpNumThreadsIsSet) {
  CgroupTree t;
  t.write("proc_cgroup", "0::/pod");
  t.write("fs/pod/cpu.max", "250000 100000");  // 2.5 CPUs
  using convcore::detail::threads_within_quota;
  EXPECT_EQ(threads_within_quota(64, nullptr, t.limit()), 3);  // the host's 64 CPUs: 3
  EXPECT_EQ(threads_within_quota(64, "", t.limit()), 3);       // set but empty: unset
  EXPECT_EQ(threads_within_quota(2, nullptr, t.limit()), 2);   // fewer CPUs than the quota
  EXPECT_EQ(threads_within_quota(64, "64", t.limit()), 64);    // the user's number
  t.write("fs/pod/cpu.max", "max 100000");
  EXPECT_EQ(threads_within_quota(64, nullptr, t.limit()), 64);  // no quota
  EXPECT_EQ(threads_within_quota(0, nullptr, 0), 1);
}

TEST(Threads, CgroupQuotaAtTheMountRootWhenThePathIsAbsent) {
  CgroupTree t;  // a cgroup namespace: the process's path names the host's hierarchy
  t.write("proc_cgroup", "0::/host/slice/container");
  t.write("fs/cpu.max", "400000 100000");
  EXPECT_EQ(t.limit(), 4);
  t.write("fs/cpu.max", "lots 100000");
  EXPECT_EQ(t.limit(), 0);
}

TEST(Threads, CgroupV1CpuQuota) {
  CgroupTree t;
  t.write("proc_cgroup", "12:memory:/docker/c1\n4:cpu,cpuacct:/docker/c1\n1:name=systemd:/x");
  t.write("fs/cpu,cpuacct/cpu.cfs_quota_us", "-1");
  t.write("fs/cpu,cpuacct/cpu.cfs_period_us", "100000");
  t.write("fs/cpu,cpuacct/docker/c1/cpu.cfs_quota_us", "150000");
  t.write("fs/cpu,cpuacct/docker/c1/cpu.cfs_period_us", "100000");
  EXPECT_EQ(t.limit(), 2);
  t.write("fs/cpu,cpuacct/docker/c1/cpu.cfs_quota_us", "-1");
  EXPECT_EQ(t.limit(), 0);
}

TEST(Threads, CgroupFilesMissing) {
  CgroupTree t;
  EXPECT_EQ(t.limit(), 0);  // no proc_cgroup
  t.write("proc_cgroup", "0::/");
  EXPECT_EQ(t.limit(), 0);  // no cpu.max
  // this process: whatever its quota, a count of CPUs or none
  EXPECT_GE(convcore::cgroup_cpu_limit("/proc/self/cgroup", "/sys/fs/cgroup"), 0);
}

}  // namespace
}  // namespace convcore_test
