/* test_group.c — groups: a cgroup v2 leaf made below our own cgroup and removed again, the
 * process-group fallback, members (an escaped setsid grandchild included), signal-all,
 * kill-all, and the populated -> empty event.
 *
 * The cgroup tests are skipped, with the reason, where no writable cgroup v2 hierarchy is
 * available. Every test kills and reaps what it started, also when it fails half-way
 * (teardown). The test process makes itself a child subreaper so that escaped grandchildren
 * are re-parented to it and reaped by the loop's orphan reaper rather than left to pid 1. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <dirent.h>
#include <unistd.h>

#include <cmocka.h>

#include "harness.h"
#include "tend.h"

unsigned long group_proc_walks(void); /* lib/internal.h */

#define READY_FD 3
#define WAIT_USEC (10u * 1000u * 1000u)
#define MAX_PROCS 8
#define MAX_PIDFDS 8

struct fx {
        tend_loop *loop;
        tend_group *g;
        tend_proc *procs[MAX_PROCS];
        size_t n_procs;
        int pidfds[MAX_PIDFDS]; /* held on grandchildren, for checking and for cleanup */
        size_t n_pidfds;
        int empty_calls;
        int fds_at_setup;
        char tmpdir[64];
};

/* ---- helpers ----------------------------------------------------------------------------- */

static int pidfd_open_(pid_t pid) {
        return (int)syscall(SYS_pidfd_open, pid, 0);
}

static int pidfd_kill(int fd) {
        return (int)syscall(SYS_pidfd_send_signal, fd, SIGKILL, NULL, 0);
}

/* Has the process behind the pidfd ended (zombie or reaped)? Waits at most timeout_ms. */
static bool pidfd_ended(int fd, int timeout_ms) {
        struct pollfd p = { .fd = fd, .events = POLLIN };
        return poll(&p, 1, timeout_ms) == 1;
}

static void on_empty(tend_group *g, void *userdata) {
        struct fx *f = userdata;
        assert_ptr_equal(g, f->g);
        f->empty_calls++;
}

/* Run the loop until f->empty_calls reaches n; fail after WAIT_USEC. */
static void run_until_count(struct fx *f, int n) {
        uint64_t end = tend_now_usec() + WAIT_USEC;
        while (f->empty_calls < n) {
                if (tend_now_usec() > end)
                        fail_msg("timed out waiting for empty event %d", n);
                assert_true(tend_loop_run_once(f->loop, 200u * 1000u) >= 0);
        }
}

/* Run the loop until *flag becomes non-zero; fail after WAIT_USEC. */
static void run_until(struct fx *f, const int *flag) {
        uint64_t end = tend_now_usec() + WAIT_USEC;
        while (!*flag) {
                if (tend_now_usec() > end)
                        fail_msg("timed out waiting for the loop");
                assert_true(tend_loop_run_once(f->loop, 200u * 1000u) >= 0);
        }
}

/* Read "ready PID ..." from fd (bounded by the test's alarm); the words after the pid go to
 * extra (if not NULL). */
static pid_t read_ready(int fd, char *extra, size_t size) {
        char line[4096]; /* helper_read_ready's own line size */
        pid_t pid = helper_read_ready(fd, line, sizeof line);
        if (pid <= 0)
                fail_msg("no ready report from the helper ('%s')", line);
        if (extra) {
                int off = 0;
                (void)sscanf(line, "ready %*d%n", &off);
                snprintf(extra, size, "%s", line + off);
        }
        return pid;
}

/* Spawn `helper mode [arg]` (argv0 may replace the program path) into f->g, wait for its
 * ready report and return the reported pid. */
static pid_t spawn_helper_as(struct fx *f, const char *argv0, const char *mode, const char *arg,
                             tend_proc **ret_proc, char *extra, size_t extra_size) {
        int p[2];
        assert_int_equal(pipe2(p, O_CLOEXEC), 0);
        const char *argv[] = { argv0 ? argv0 : helper_path(), mode, arg, NULL };
        struct tend_fd_map map = { .parent_fd = p[1], .child_fd = READY_FD };
        struct tend_spawn_opts o = { .argv = argv, .fds = &map, .n_fds = 1, .group = f->g };
        o.stdio[0].kind = TEND_STDIO_NULL;
        tend_proc *proc = NULL;
        enum tend_spawn_step step = TEND_STEP_NONE;
        int r = tend_spawn(f->loop, &o, &proc, &step);
        close(p[1]);
        if (r < 0) {
                close(p[0]);
                fail_msg("spawn %s: %s at step %s", mode, strerror(-r),
                         tend_spawn_step_name(step));
        }
        assert_true(f->n_procs < MAX_PROCS);
        f->procs[f->n_procs++] = proc;
        pid_t pid = read_ready(p[0], extra, extra_size);
        close(p[0]);
        if (ret_proc)
                *ret_proc = proc;
        return pid;
}

static pid_t spawn_helper(struct fx *f, const char *mode, const char *arg, tend_proc **ret_proc) {
        return spawn_helper_as(f, NULL, mode, arg, ret_proc, NULL, 0);
}

static void hold_pidfd(struct fx *f, pid_t pid) {
        int fd = pidfd_open_(pid);
        assert_true(fd >= 0);
        assert_true(f->n_pidfds < MAX_PIDFDS);
        f->pidfds[f->n_pidfds++] = fd;
}

static bool contains(const pid_t *pids, int n, pid_t pid) {
        for (int i = 0; i < n; i++)
                if (pids[i] == pid)
                        return true;
        return false;
}

/* Our own cgroup v2 path from /proc/self/cgroup, or "" if none. */
static void own_cgroup(char *buf, size_t size) {
        FILE *fp = fopen("/proc/self/cgroup", "re");
        assert_non_null(fp);
        char line[4096];
        buf[0] = '\0';
        while (fgets(line, sizeof line, fp))
                if (strncmp(line, "0::", 3) == 0) {
                        line[strcspn(line, "\n")] = '\0';
                        snprintf(buf, size, "%s", line + 3);
                }
        fclose(fp);
}

static void cgroup_of(pid_t pid, char *buf, size_t size) {
        char path[64], line[4096];
        snprintf(path, sizeof path, "/proc/%d/cgroup", (int)pid);
        FILE *fp = fopen(path, "re");
        assert_non_null(fp);
        buf[0] = '\0';
        while (fgets(line, sizeof line, fp))
                if (strncmp(line, "0::", 3) == 0) {
                        line[strcspn(line, "\n")] = '\0';
                        snprintf(buf, size, "%s", line + 3);
                }
        fclose(fp);
}

static bool file_lists_pid(const char *path, pid_t pid) {
        FILE *fp = fopen(path, "re");
        if (!fp)
                return false;
        int v;
        bool found = false;
        while (fscanf(fp, "%d", &v) == 1)
                if (v == pid)
                        found = true;
        fclose(fp);
        return found;
}

static void new_group(struct fx *f, unsigned flags, const char *hint) {
        int r = tend_group_new(f->loop, hint, flags, &f->g);
        if (r < 0 && (flags & TEND_GROUP_REQUIRE_CGROUP))
                skip_with_reason("no writable cgroup v2 hierarchy here: %s", strerror(-r));
        assert_int_equal(r, 0);
        tend_group_on_empty(f->g, on_empty, f);
}

/* Wait (through the loop) until the process has been reaped; return its exit. */
static struct tend_exit wait_proc(struct fx *f, tend_proc *p) {
        uint64_t end = tend_now_usec() + WAIT_USEC;
        struct tend_exit ex;
        int r;
        while ((r = tend_proc_poll(p, &ex)) == -EAGAIN) {
                if (tend_now_usec() > end)
                        fail_msg("process %d did not end", (int)tend_proc_pid(p));
                assert_true(tend_loop_run_once(f->loop, 200u * 1000u) >= 0);
        }
        assert_int_equal(r, 0);
        return ex;
}

/* ---- fixture ----------------------------------------------------------------------------- */

/* Open fds of this process: every test must give back what it (and the library) opened. */
static int count_fds(void) {
        DIR *d = opendir("/proc/self/fd");
        if (!d)
                return -1;
        int n = 0;
        struct dirent *de;
        while ((de = readdir(d)))
                if (de->d_name[0] != '.')
                        n++;
        closedir(d);
        return n - 1; /* the directory's own fd */
}

static int setup(void **state) {
        struct fx *f = calloc(1, sizeof *f);
        if (!f)
                return -1;
        test_alarm(TEND_TEST_DEFAULT_ALARM);
        f->fds_at_setup = count_fds();
        /* Orphans come to us, not to pid 1 (which may not reap in a container). */
        if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0)
                return -1;
        if (setenv("HELPER_READY_FD", "3", 1) < 0 || tend_loop_new(&f->loop) < 0)
                return -1;
        if (tend_loop_reap_orphans(f->loop, NULL, NULL) < 0)
                return -1;
        *state = f;
        return 0;
}

static int teardown(void **state) {
        struct fx *f = *state;
        if (!f)
                return 0;
        if (f->g)
                (void)tend_group_kill(f->g);
        for (size_t i = 0; i < f->n_pidfds; i++) {
                (void)pidfd_kill(f->pidfds[i]);
                /* Ours through the subreaper: reap it here if the loop has not. */
                siginfo_t si;
                (void)waitid((idtype_t)P_PIDFD, (id_t)f->pidfds[i], &si, WEXITED | __WALL);
                (void)pidfd_ended(f->pidfds[i], 5000);
                close(f->pidfds[i]);
        }
        for (size_t i = 0; i < f->n_procs; i++) {
                struct tend_exit ex;
                (void)tend_proc_signal(f->procs[i], SIGKILL);
                (void)tend_proc_wait(f->procs[i], &ex);
                tend_proc_free(f->procs[i]);
        }
        f->g = tend_group_free(f->g);
        /* Whatever is left over (a failed test's orphans): reap before the next test. */
        while (waitpid(-1, NULL, WNOHANG) > 0)
                ;
        tend_loop_free(f->loop);
        if (f->tmpdir[0]) {
                char path[128];
                snprintf(path, sizeof path, "%s/a) (b", f->tmpdir);
                unlink(path);
                rmdir(f->tmpdir);
        }
        int fds = count_fds();
        int before = f->fds_at_setup;
        free(f);
        alarm(0);
        if (fds != before) {
                fprintf(stderr, "fd leak: %d open before the test, %d after\n", before, fds);
                return -1;
        }
        return 0;
}

/* ---- tests ------------------------------------------------------------------------------- */

/* A cgroup leaf appears below our own cgroup, named after the hint (sanitised) and our pid,
 * and is removed by free. */
static void test_cgroup_created_and_removed(void **state) {
        struct fx *f = *state;
        new_group(f, TEND_GROUP_REQUIRE_CGROUP, "unit test/x");
        assert_int_equal(tend_group_kind(f->g), TEND_GROUP_CGROUP);
        const char *path = tend_group_path(f->g);
        assert_non_null(path);
        struct stat st;
        assert_int_equal(stat(path, &st), 0);
        assert_true(S_ISDIR(st.st_mode));

        char want[64];
        snprintf(want, sizeof want, "tend-unit_test_x-%d-", (int)getpid());
        const char *base = strrchr(path, '/');
        assert_non_null(base);
        assert_memory_equal(base + 1, want, strlen(want));

        /* Its parent is the cgroup we are in: our pid is in the parent's cgroup.procs, and the
         * path ends with our cgroup's path plus the leaf. */
        char parent[4096], procs[4200], own[4096];
        snprintf(parent, sizeof parent, "%.*s", (int)(base - path), path);
        snprintf(procs, sizeof procs, "%s/cgroup.procs", parent);
        assert_true(file_lists_pid(procs, getpid()));
        own_cgroup(own, sizeof own);
        if (strcmp(own, "/") != 0) {
                size_t lo = strlen(own), lp = strlen(parent);
                assert_true(lp >= lo && strcmp(parent + lp - lo, own) == 0);
        }

        assert_int_equal(tend_group_members(f->g, NULL, 0), 0);
        assert_true(tend_group_empty(f->g));
        assert_int_equal(tend_group_signal(f->g, 0), 0);
        assert_int_equal(tend_group_kill(f->g), 0);

        char copy[4096];
        snprintf(copy, sizeof copy, "%s", path);
        f->g = tend_group_free(f->g);
        assert_int_equal(stat(copy, &st), -1);
        assert_int_equal(errno, ENOENT);
        assert_int_equal(f->empty_calls, 0);
}

/* A spawned child and a grandchild that double-forked and called setsid() are both members;
 * signal 0 reaches both; kill ends both; the empty callback runs exactly once. */
static void escape_kill_scenario(struct fx *f) {
        tend_proc *escaper = NULL, *sleeper = NULL, *tree = NULL;
        pid_t g = spawn_helper(f, "escape", NULL, &escaper);
        hold_pidfd(f, g);
        struct tend_exit ex = wait_proc(f, escaper); /* the middle process is gone too */
        assert_int_equal(ex.signo, 0);
        assert_int_equal(ex.code, 0);
        assert_int_equal(getsid(g), g);

        pid_t s = spawn_helper(f, "sleep-forever", NULL, &sleeper);
        assert_int_equal(s, tend_proc_pid(sleeper));

        char chain[256];
        (void)spawn_helper_as(f, NULL, "fork-tree", "2", &tree, chain, sizeof chain);
        int c0 = 0, c1 = 0, c2 = 0;
        assert_int_equal(sscanf(chain, " chain %d %d %d", &c0, &c1, &c2), 3);
        assert_int_equal(c0, tend_proc_pid(tree));

        pid_t pids[16];
        int n = tend_group_members(f->g, pids, 16);
        assert_int_equal(n, 5);
        assert_true(contains(pids, n, g));
        assert_true(contains(pids, n, s));
        assert_true(contains(pids, n, c0) && contains(pids, n, c1) && contains(pids, n, c2));
        assert_false(contains(pids, n, tend_proc_pid(escaper))); /* reaped: not a member */
        assert_false(contains(pids, n, getpid()));

        /* A short buffer still gets the full count. */
        assert_int_equal(tend_group_members(f->g, pids, 2), 5);

        assert_int_equal(tend_group_signal(f->g, 0), 5);
        assert_false(tend_group_empty(f->g));
        assert_int_equal(f->empty_calls, 0);

        assert_int_equal(tend_group_kill(f->g), 0);
        run_until(f, &f->empty_calls);
        assert_int_equal(f->empty_calls, 1);

        assert_true(pidfd_ended(f->pidfds[0], 5000));
        ex = wait_proc(f, sleeper);
        assert_int_equal(ex.signo, SIGKILL);
        ex = wait_proc(f, tree);
        assert_int_equal(ex.signo, SIGKILL);

        assert_int_equal(tend_group_members(f->g, pids, 16), 0);
        assert_true(tend_group_empty(f->g));
        assert_int_equal(tend_group_signal(f->g, 0), 0);
        (void)tend_loop_run_once(f->loop, 0);
        assert_int_equal(f->empty_calls, 1);
}

static void test_cgroup_escape_kill_empty(void **state) {
        struct fx *f = *state;
        new_group(f, TEND_GROUP_REQUIRE_CGROUP, "escape");
        escape_kill_scenario(f);
}

static void test_pgroup_escape_kill_empty(void **state) {
        struct fx *f = *state;
        new_group(f, TEND_GROUP_NO_CGROUP, "escape");
        assert_int_equal(tend_group_kind(f->g), TEND_GROUP_PGROUP);
        assert_null(tend_group_path(f->g));
        escape_kill_scenario(f);
}

/* The same without the kernel's children lists: members found by walking /proc. */
extern bool group_force_proc_walk; /* lib/internal.h */

static void test_pgroup_escape_kill_empty_walk(void **state) {
        struct fx *f = *state;
        group_force_proc_walk = true;
        unsigned long before = group_proc_walks();
        new_group(f, TEND_GROUP_NO_CGROUP, "escape");
        escape_kill_scenario(f);
        group_force_proc_walk = false;
        assert_true(group_proc_walks() > before);
}

/* The group can be used again after it became empty: a new spawn makes it populated again
 * and the next emptying is reported again. */
static void reuse_scenario(struct fx *f) {
        tend_proc *a = NULL, *b = NULL;
        spawn_helper(f, "sleep-forever", NULL, &a);
        assert_int_equal(tend_group_signal(f->g, SIGTERM), 1);
        wait_proc(f, a);
        run_until(f, &f->empty_calls);
        assert_int_equal(f->empty_calls, 1);

        spawn_helper(f, "sleep-forever", NULL, &b);
        assert_int_equal(tend_group_members(f->g, NULL, 0), 1);
        assert_int_equal(tend_group_kill(f->g), 0);
        wait_proc(f, b);
        uint64_t end = tend_now_usec() + WAIT_USEC;
        while (f->empty_calls < 2) {
                if (tend_now_usec() > end)
                        fail_msg("second empty event missing");
                assert_true(tend_loop_run_once(f->loop, 200u * 1000u) >= 0);
        }
        assert_int_equal(f->empty_calls, 2);
}

/* A group killed with tend_group_kill() takes new processes, which live (a supervised
 * service's next run). On 6.18 a child cloned into a cgroup after a cgroup.kill there died
 * of SIGKILL at once. */
static void kill_then_reuse_scenario(struct fx *f) {
        tend_proc *a = NULL;
        spawn_helper(f, "sleep-forever", NULL, &a);
        for (int round = 1; round <= 3; round++) {
                assert_int_equal(tend_group_kill(f->g), 0);
                struct tend_exit ex = wait_proc(f, a);
                assert_int_equal(ex.signo, SIGKILL);
                run_until_count(f, round);
                /* The ready report comes from the new process itself: it runs. */
                pid_t pid = spawn_helper(f, "sleep-forever", NULL, &a);
                assert_int_equal(kill(pid, 0), 0);
                pid_t pids[4];
                assert_int_equal(tend_group_members(f->g, pids, 4), 1);
                assert_int_equal(pids[0], pid);
                if (tend_group_path(f->g)) {
                        char own[4096], cg[4096];
                        cgroup_of(pid, cg, sizeof cg);
                        own_cgroup(own, sizeof own);
                        assert_non_null(strstr(tend_group_path(f->g), cg + strlen(own)));
                }
                assert_int_equal(tend_proc_poll(a, NULL), -EAGAIN);
        }
        assert_int_equal(tend_group_kill(f->g), 0);
        wait_proc(f, a);
}

static void test_cgroup_kill_then_reuse(void **state) {
        struct fx *f = *state;
        new_group(f, TEND_GROUP_REQUIRE_CGROUP, NULL);
        kill_then_reuse_scenario(f);
}

static void test_pgroup_kill_then_reuse(void **state) {
        struct fx *f = *state;
        new_group(f, TEND_GROUP_NO_CGROUP, NULL);
        kill_then_reuse_scenario(f);
}

static void test_cgroup_reuse(void **state) {
        struct fx *f = *state;
        new_group(f, TEND_GROUP_REQUIRE_CGROUP, NULL);
        reuse_scenario(f);
}

static void test_pgroup_reuse(void **state) {
        struct fx *f = *state;
        new_group(f, TEND_GROUP_NO_CGROUP, NULL);
        reuse_scenario(f);
}

/* A member that made a cgroup of its own below ours (as a delegated member may) is still a
 * member, is killed, and the nested cgroup is removed with the group. */
static void test_cgroup_nested(void **state) {
        struct fx *f = *state;
        skip_unless_root();
        new_group(f, TEND_GROUP_REQUIRE_CGROUP, "nested");
        char sub[4200], procs[4300], text[32], path[4096];
        snprintf(path, sizeof path, "%s", tend_group_path(f->g));
        snprintf(sub, sizeof sub, "%s/inner", path);
        assert_int_equal(mkdir(sub, 0755), 0);

        tend_proc *p = NULL;
        pid_t pid = spawn_helper(f, "sleep-forever", NULL, &p);
        snprintf(procs, sizeof procs, "%s/cgroup.procs", sub);
        snprintf(text, sizeof text, "%d", (int)pid);
        int fd = open(procs, O_WRONLY | O_CLOEXEC);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
        close(fd);

        pid_t pids[4];
        assert_int_equal(tend_group_members(f->g, pids, 4), 1);
        assert_int_equal(pids[0], pid);
        assert_int_equal(tend_group_signal(f->g, 0), 1);
        assert_false(tend_group_empty(f->g));

        assert_int_equal(tend_group_kill(f->g), 0);
        run_until(f, &f->empty_calls);
        struct tend_exit ex = wait_proc(f, p);
        assert_int_equal(ex.signo, SIGKILL);

        f->g = tend_group_free(f->g);
        struct stat st;
        assert_int_equal(stat(path, &st), -1);
        assert_int_equal(errno, ENOENT);
}

/* free kills nothing: a live member is moved back to our cgroup and the leaf still goes. */
static void test_cgroup_free_moves_members_out(void **state) {
        struct fx *f = *state;
        new_group(f, TEND_GROUP_REQUIRE_CGROUP, "move");
        char path[4096];
        snprintf(path, sizeof path, "%s", tend_group_path(f->g));
        tend_proc *p = NULL;
        pid_t pid = spawn_helper(f, "sleep-forever", NULL, &p);
        char cg[4096], own[4096];
        cgroup_of(pid, cg, sizeof cg);
        assert_non_null(strstr(path, cg));

        f->g = tend_group_free(f->g);
        struct stat st;
        assert_int_equal(stat(path, &st), -1);
        assert_int_equal(errno, ENOENT);
        assert_int_equal(tend_proc_signal(p, 0), 0);
        cgroup_of(pid, cg, sizeof cg);
        own_cgroup(own, sizeof own);
        assert_string_equal(cg, own);
}

/* Empty groups: no members, nothing to signal; bad signal numbers are refused. */
static void empty_scenario(struct fx *f) {
        pid_t pids[4];
        assert_int_equal(tend_group_members(f->g, pids, 4), 0);
        assert_int_equal(tend_group_members(f->g, NULL, 0), 0);
        assert_int_equal(tend_group_members(f->g, NULL, 4), -EINVAL);
        assert_true(tend_group_empty(f->g));
        assert_int_equal(tend_group_signal(f->g, 0), 0);
        assert_int_equal(tend_group_signal(f->g, SIGTERM), 0);
        assert_int_equal(tend_group_signal(f->g, -1), -EINVAL);
        assert_int_equal(tend_group_signal(f->g, 4096), -EINVAL);
        assert_int_equal(tend_group_kill(f->g), 0);
        (void)tend_loop_run_once(f->loop, 0);
        assert_int_equal(f->empty_calls, 0);
}

/* tend_group_remove_if_empty(): an empty cgroup is removed at once and then has no member,
 * takes no spawn and is not removed twice; one that has a member (our live handle, or a
 * grandchild that escaped) stays, until it is empty. */
static void test_cgroup_remove_if_empty(void **state) {
        struct fx *f = *state;
        assert_int_equal(tend_group_remove_if_empty(NULL), -EINVAL);
        new_group(f, TEND_GROUP_REQUIRE_CGROUP, "remove");
        char path[4096];
        snprintf(path, sizeof path, "%s", tend_group_path(f->g));
        struct stat st;

        tend_proc *sleeper = NULL, *escaper = NULL;
        (void)spawn_helper(f, "sleep-forever", NULL, &sleeper);
        assert_int_equal(tend_group_remove_if_empty(f->g), 0); /* our handle lives in it */
        assert_int_equal(stat(path, &st), 0);
        pid_t g = spawn_helper(f, "escape", NULL, &escaper);
        hold_pidfd(f, g);
        (void)wait_proc(f, escaper);
        (void)tend_proc_signal(sleeper, SIGKILL);
        (void)wait_proc(f, sleeper);
        assert_int_equal(tend_group_remove_if_empty(f->g), 0); /* the escaped grandchild */
        assert_int_equal(stat(path, &st), 0);
        pid_t pids[4];
        assert_int_equal(tend_group_members(f->g, pids, 4), 1);
        assert_int_equal(pids[0], g);

        assert_int_equal(tend_group_kill(f->g), 0);
        run_until(f, &f->empty_calls);
        assert_int_equal(tend_group_remove_if_empty(f->g), 1);
        assert_int_equal(stat(path, &st), -1);
        assert_int_equal(errno, ENOENT);
        assert_int_equal(tend_group_remove_if_empty(f->g), 1);
        assert_int_equal(tend_group_members(f->g, pids, 4), 0);
        assert_true(tend_group_empty(f->g));
        assert_int_equal(tend_group_signal(f->g, SIGTERM), 0);
        assert_int_equal(tend_group_kill(f->g), 0);

        const char *argv[] = { "/bin/true", NULL };
        struct tend_spawn_opts o = { .argv = argv, .group = f->g };
        tend_proc *p = NULL;
        enum tend_spawn_step step = TEND_STEP_NONE;
        assert_int_equal(tend_spawn(f->loop, &o, &p, &step), -ENOENT);
        assert_null(p);
        (void)tend_loop_run_once(f->loop, 0);
        assert_int_equal(f->empty_calls, 1);
        f->g = tend_group_free(f->g); /* nothing left to remove */
}

/* An empty event still owed when the cgroup is removed comes from the loop, once. */
static void test_cgroup_remove_if_empty_owes_event(void **state) {
        struct fx *f = *state;
        new_group(f, TEND_GROUP_REQUIRE_CGROUP, "remove-owed");
        tend_proc *p = NULL;
        (void)spawn_helper(f, "escape", NULL, &p);
        (void)wait_proc(f, p);
        /* Its grandchild is still in there; kill it by its pidfd behind the group's back,
         * and remove the cgroup before the loop has seen it empty. */
        pid_t pids[2];
        assert_int_equal(tend_group_members(f->g, pids, 2), 1);
        hold_pidfd(f, pids[0]);
        assert_int_equal(pidfd_kill(f->pidfds[0]), 0);
        siginfo_t si;
        assert_int_equal(waitid((idtype_t)P_PIDFD, (id_t)f->pidfds[0], &si, WEXITED | __WALL), 0);
        /* Wait for "populated 0" ourselves (POLLPRI on our own open of cgroup.events), not
         * through the loop, which would deliver the event before the removal. */
        char events[4200];
        snprintf(events, sizeof events, "%s/cgroup.events", tend_group_path(f->g));
        int efd = open(events, O_RDONLY | O_CLOEXEC);
        assert_true(efd >= 0);
        for (;;) {
                char text[256];
                ssize_t n = pread(efd, text, sizeof text - 1, 0);
                assert_true(n > 0);
                text[n] = '\0';
                if (strstr(text, "populated 0"))
                        break;
                struct pollfd pf = { .fd = efd, .events = POLLPRI };
                assert_int_equal(poll(&pf, 1, 10000), 1);
        }
        close(efd);
        assert_int_equal(tend_group_remove_if_empty(f->g), 1);
        assert_int_equal(f->empty_calls, 0); /* owed, not yet delivered */
        run_until(f, &f->empty_calls);
        (void)tend_loop_run_once(f->loop, 0);
        assert_int_equal(f->empty_calls, 1);
}

static void test_pgroup_remove_if_empty(void **state) {
        struct fx *f = *state;
        new_group(f, TEND_GROUP_NO_CGROUP, NULL);
        assert_int_equal(tend_group_remove_if_empty(f->g), 0); /* nothing to remove: ask */
        assert_true(tend_group_empty(f->g));
}

static void test_cgroup_empty(void **state) {
        struct fx *f = *state;
        new_group(f, TEND_GROUP_REQUIRE_CGROUP, NULL);
        empty_scenario(f);
}

static void test_pgroup_empty(void **state) {
        struct fx *f = *state;
        new_group(f, TEND_GROUP_NO_CGROUP, NULL);
        empty_scenario(f);
}

/* Members are live processes: a child that has died but is not yet reaped (a zombie) is not
 * one, while a process whose main thread exited but another thread runs (its leader shows as
 * a zombie in /proc) is. */
static void zombie_scenario(struct fx *f) {
        tend_proc *dead = NULL, *leader = NULL;
        pid_t d = spawn_helper(f, "sleep-forever", NULL, &dead);
        pid_t l = spawn_helper(f, "leader-exit", NULL, &leader);
        assert_int_equal(l, tend_proc_pid(leader));
        char stat[512], path[64];
        snprintf(path, sizeof path, "/proc/%d/stat", (int)l);
        FILE *fp = fopen(path, "re");
        assert_non_null(fp);
        assert_non_null(fgets(stat, sizeof stat, fp));
        fclose(fp);
        assert_non_null(strstr(stat, ") Z "));

        /* Kill one and let it become a zombie without running the loop (nothing reaps it). */
        assert_int_equal(tend_proc_signal(dead, SIGKILL), 0);
        assert_true(pidfd_ended(tend_proc_pidfd(dead), 5000));
        assert_int_equal(kill(d, 0), 0); /* still there: a zombie */

        pid_t pids[4];
        assert_int_equal(tend_group_members(f->g, pids, 4), 1);
        assert_int_equal(pids[0], l);
        assert_int_equal(tend_group_signal(f->g, 0), 1);
        assert_false(tend_group_empty(f->g));

        assert_int_equal(tend_group_kill(f->g), 0);
        assert_true(pidfd_ended(tend_proc_pidfd(leader), 5000));
        /* Both are zombies now, neither reaped: the group is empty already. */
        assert_int_equal(tend_group_members(f->g, pids, 4), 0);
        assert_true(tend_group_empty(f->g));
        wait_proc(f, dead);
        wait_proc(f, leader);
        run_until(f, &f->empty_calls);
        assert_int_equal(f->empty_calls, 1);
}

static void test_cgroup_zombies(void **state) {
        struct fx *f = *state;
        new_group(f, TEND_GROUP_REQUIRE_CGROUP, NULL);
        zombie_scenario(f);
}

static void test_pgroup_zombies(void **state) {
        struct fx *f = *state;
        new_group(f, TEND_GROUP_NO_CGROUP, NULL);
        zombie_scenario(f);
}

/* The usual thing to do when a group has emptied: free it, from the callback. */
static void on_empty_free(tend_group *g, void *userdata) {
        struct fx *f = userdata;
        assert_ptr_equal(g, f->g);
        f->empty_calls++;
        f->g = tend_group_free(g);
}

static void free_in_callback_scenario(struct fx *f) {
        tend_group_on_empty(f->g, on_empty_free, f);
        tend_proc *p = NULL;
        spawn_helper(f, "sleep-forever", NULL, &p);
        assert_int_equal(tend_group_kill(f->g), 0);
        run_until(f, &f->empty_calls);
        assert_null(f->g);
        struct tend_exit ex = wait_proc(f, p);
        assert_int_equal(ex.signo, SIGKILL);
        (void)tend_loop_run_once(f->loop, 0);
        assert_int_equal(f->empty_calls, 1);
}

static void test_cgroup_free_in_on_empty(void **state) {
        struct fx *f = *state;
        new_group(f, TEND_GROUP_REQUIRE_CGROUP, NULL);
        free_in_callback_scenario(f);
}

static void test_pgroup_free_in_on_empty(void **state) {
        struct fx *f = *state;
        new_group(f, TEND_GROUP_NO_CGROUP, NULL);
        free_in_callback_scenario(f);
}

/* The end of the last handle in a cgroup group is looked at once the round's callbacks have
 * run (group_settle): what the exit callback does to the group in between is what counts. */
struct exit_order {
        struct fx *f;
        int exits, empty_seen_at_exit, removed;
        char path[4096];
};

static void on_exit_free_group(tend_proc *p, int err, const struct tend_exit *ex, void *ud) {
        (void)p, (void)err, (void)ex;
        struct exit_order *o = ud;
        o->exits++;
        o->f->g = tend_group_free(o->f->g); /* while its look at cgroup.events is owed */
}

static void on_exit_remove_group(tend_proc *p, int err, const struct tend_exit *ex, void *ud) {
        (void)p, (void)err, (void)ex;
        struct exit_order *o = ud;
        o->exits++;
        o->empty_seen_at_exit = o->f->empty_calls;
        o->removed = tend_group_remove_if_empty(o->f->g);
}

/* A cgroup group with one child whose exit callback is cb; the child is ended with SIGTERM
 * and the loop run until cb has run. */
static void end_child_with(struct fx *f, struct exit_order *o, tend_exit_cb cb) {
        new_group(f, TEND_GROUP_REQUIRE_CGROUP, NULL);
        o->f = f;
        snprintf(o->path, sizeof o->path, "%s", tend_group_path(f->g));
        tend_proc *p = NULL;
        spawn_helper(f, "sleep-forever", NULL, &p);
        tend_proc_on_exit(p, cb, o);
        assert_int_equal(tend_proc_signal(p, SIGTERM), 0);
        uint64_t end = tend_now_usec() + WAIT_USEC;
        while (!o->exits) {
                if (tend_now_usec() > end)
                        fail_msg("no exit callback");
                assert_true(tend_loop_run_once(f->loop, 200u * 1000u) >= 0);
        }
}

/* Freed from the exit callback: the owed look finds it gone (no use after free; ASan) and
 * no empty event is delivered for it. */
static void test_cgroup_free_in_exit_callback(void **state) {
        struct fx *f = *state;
        struct exit_order o = { 0 };
        end_child_with(f, &o, on_exit_free_group);
        assert_null(f->g);
        assert_int_equal(tend_loop_run_once(f->loop, 0) >= 0, 1);
        assert_int_equal(f->empty_calls, 0);
        struct stat st;
        assert_int_equal(stat(o.path, &st), -1); /* empty: removed by the free */
}

/* `tend run`'s end: the exit callback removes the empty cgroup. The empty event still comes,
 * once, after the exit callback and from the loop. */
static void test_cgroup_removed_in_exit_callback(void **state) {
        struct fx *f = *state;
        struct exit_order o = { 0 };
        end_child_with(f, &o, on_exit_remove_group);
        assert_int_equal(o.removed, 1);
        assert_int_equal(o.empty_seen_at_exit, 0);
        run_until(f, &f->empty_calls);
        (void)tend_loop_run_once(f->loop, 0);
        assert_int_equal(f->empty_calls, 1);
        struct stat st;
        assert_int_equal(stat(o.path, &st), -1);
        assert_true(tend_group_empty(f->g));
}

/* A grandchild keeps the group populated past the child's exit: the look after the round
 * finds it and watches cgroup.events, and the empty event comes when it ends. */
static void test_cgroup_exit_then_leftover_ends(void **state) {
        struct fx *f = *state;
        new_group(f, TEND_GROUP_REQUIRE_CGROUP, NULL);
        tend_proc *p = NULL;
        pid_t g = spawn_helper(f, "escape", NULL, &p);
        hold_pidfd(f, g);
        assert_int_equal(wait_proc(f, p).code, 0);
        (void)tend_loop_run_once(f->loop, 0);
        assert_int_equal(f->empty_calls, 0);
        assert_false(tend_group_empty(f->g));
        assert_int_equal(tend_group_remove_if_empty(f->g), 0); /* EBUSY: still populated */
        assert_int_equal(pidfd_kill(f->pidfds[0]), 0);
        run_until(f, &f->empty_calls);
        assert_int_equal(f->empty_calls, 1);
}

/* Within one round of the loop, an empty answer from cgroup.events serves later questions
 * (a supervised service's restart asks three times), until something is spawned into the
 * group; outside the loop's dispatch every question reads. */
unsigned long group_events_reads(void); /* lib/internal.h */

struct round_check {
        struct fx *f;
        int exits;
        unsigned long at_exit, after_two, after_spawn;
        bool e1, e2, e3;
        tend_proc *again;
};

static void on_exit_ask_again(tend_proc *p, int err, const struct tend_exit *ex, void *ud) {
        (void)p, (void)err, (void)ex;
        struct round_check *c = ud;
        c->exits++;
        c->at_exit = group_events_reads();
        c->e1 = tend_group_empty(c->f->g);
        c->e2 = tend_group_empty(c->f->g);
        c->after_two = group_events_reads();
        /* A child spawned in whose handle goes at once: no live handle stands for it, so
         * only the spawn itself can have made the group forget that it was empty. */
        struct fx *f = c->f;
        pid_t pid = spawn_helper(f, "sleep-forever", NULL, &c->again);
        hold_pidfd(f, pid);
        f->n_procs--; /* the fixture must not free it again */
        c->again = tend_proc_free(c->again);
        c->e3 = tend_group_empty(f->g);
        c->after_spawn = group_events_reads();
}

static void test_cgroup_empty_answer_lasts_the_round(void **state) {
        struct fx *f = *state;
        new_group(f, TEND_GROUP_REQUIRE_CGROUP, NULL);
        struct round_check c = { .f = f };
        tend_proc *p = NULL;
        spawn_helper(f, "sleep-forever", NULL, &p);
        tend_proc_on_exit(p, on_exit_ask_again, &c);
        assert_int_equal(tend_proc_signal(p, SIGKILL), 0);
        uint64_t end = tend_now_usec() + WAIT_USEC;
        while (!c.exits) {
                if (tend_now_usec() > end)
                        fail_msg("no exit callback");
                assert_true(tend_loop_run_once(f->loop, 200u * 1000u) >= 0);
        }
        assert_true(c.e1);
        assert_true(c.e2);
        assert_int_equal(c.after_two - c.at_exit, 1); /* one read for both */
        assert_false(c.e3);                           /* the spawn forgot the answer */
        assert_int_equal(c.after_spawn - c.after_two, 1);
        assert_int_equal(tend_group_members(f->g, NULL, 0), 1);

        /* Its end comes through the cgroup.events watch set up after the round. */
        assert_int_equal(pidfd_kill(f->pidfds[0]), 0);
        run_until(f, &f->empty_calls);
        unsigned long before = group_events_reads();
        assert_true(tend_group_empty(f->g));
        assert_true(tend_group_empty(f->g));
        assert_int_equal(group_events_reads() - before, 2); /* outside a round: each reads */
}

/* tend_group_stop (ladder.c) waits for the group through its empty listeners: a member that
 * ignores TERM takes the ladder to its KILL step; the stop callback frees the group. */
struct stop_result {
        struct fx *f;
        int calls, step;
};

static void on_group_stopped(tend_group *g, int step, void *userdata) {
        struct stop_result *r = userdata;
        assert_ptr_equal(g, r->f->g);
        r->calls++;
        r->step = step;
        r->f->g = tend_group_free(g);
}

static void stop_ladder_scenario(struct fx *f) {
        tend_proc *a = NULL, *b = NULL;
        spawn_helper(f, "sleep-forever", NULL, &a);
        spawn_helper(f, "ignore-term", NULL, &b);
        struct tend_ladder ladder;
        assert_int_equal(tend_ladder_parse("TERM/200ms,KILL", &ladder), 0);
        struct stop_result r = { .f = f, .step = -1 };
        assert_int_equal(tend_group_stop(f->g, &ladder, on_group_stopped, &r), 0);
        run_until(f, &r.calls);
        assert_int_equal(r.calls, 1);
        assert_int_equal(r.step, 1);
        assert_null(f->g);
        assert_int_equal(wait_proc(f, a).signo, SIGTERM);
        assert_int_equal(wait_proc(f, b).signo, SIGKILL);
}

static void test_cgroup_stop_ladder(void **state) {
        struct fx *f = *state;
        new_group(f, TEND_GROUP_REQUIRE_CGROUP, "stop");
        stop_ladder_scenario(f);
}

static void test_pgroup_stop_ladder(void **state) {
        struct fx *f = *state;
        new_group(f, TEND_GROUP_NO_CGROUP, "stop");
        stop_ladder_scenario(f);
}

/* fds of this process that are files of the group's cgroup (its directory, cgroup.events). */
static int cgroup_fds(const char *path) {
        DIR *d = opendir("/proc/self/fd");
        assert_non_null(d);
        size_t n = strlen(path);
        int found = 0;
        struct dirent *de;
        while ((de = readdir(d))) {
                char link[300], target[4096];
                snprintf(link, sizeof link, "/proc/self/fd/%s", de->d_name);
                ssize_t len = readlink(link, target, sizeof target - 1);
                if (len < 0)
                        continue;
                target[len] = '\0';
                if (strncmp(target, path, n) == 0 && (target[n] == '\0' || target[n] == '/'))
                        found++;
        }
        closedir(d);
        return found;
}

/* A supervisor of thousands of cgroup groups must fit its fd limit: while a live handle of
 * ours is in the group, the group holds no fd of its own (the handle's pidfd tells of its
 * end). Once the last handle has ended with a leftover still in the group, cgroup.events is
 * watched — one fd — until the leftover is gone: the empty event still comes, once. */
static void test_cgroup_no_fd_while_a_handle_lives(void **state) {
        struct fx *f = *state;
        new_group(f, TEND_GROUP_REQUIRE_CGROUP, "fds");
        char path[4096];
        snprintf(path, sizeof path, "%s", tend_group_path(f->g));
        int base = count_fds();
        assert_int_equal(cgroup_fds(path), 0);

        tend_proc *sleeper = NULL, *escaper = NULL;
        spawn_helper(f, "sleep-forever", NULL, &sleeper);
        assert_int_equal(count_fds(), base + 1); /* its pidfd */
        assert_int_equal(cgroup_fds(path), 0);

        /* escape leaves a setsid()ed grandchild behind and exits; the sleeper still stands for
         * the group. */
        pid_t left = spawn_helper(f, "escape", NULL, &escaper);
        assert_int_equal(wait_proc(f, escaper).code, 0);
        (void)tend_loop_run_once(f->loop, 0);
        assert_int_equal(count_fds(), base + 1);
        assert_int_equal(cgroup_fds(path), 0);

        /* The last handle ends: the leftover is waited for through cgroup.events. */
        assert_int_equal(tend_proc_signal(sleeper, SIGKILL), 0);
        assert_int_equal(wait_proc(f, sleeper).signo, SIGKILL);
        (void)tend_loop_run_once(f->loop, 0);
        assert_int_equal(f->empty_calls, 0);
        assert_false(tend_group_empty(f->g));
        assert_int_equal(cgroup_fds(path), 1);
        pid_t pids[4];
        assert_int_equal(tend_group_members(f->g, pids, 4), 1);
        assert_int_equal(pids[0], left);

        hold_pidfd(f, left);
        assert_int_equal(tend_group_kill(f->g), 0);
        run_until(f, &f->empty_calls);
        assert_int_equal(f->empty_calls, 1);
        assert_true(pidfd_ended(f->pidfds[0], 5000));
        assert_int_equal(cgroup_fds(path), 0);

        /* Used again: a new handle, no fd; its end with nothing left is reported at once,
         * through the loop (the handle was collected outside it, by tend_proc_poll). */
        tend_proc *again = NULL;
        spawn_helper(f, "sleep-forever", NULL, &again);
        assert_int_equal(cgroup_fds(path), 0);
        assert_int_equal(tend_proc_signal(again, SIGKILL), 0);
        assert_int_equal(wait_proc(f, again).signo, SIGKILL);
        run_until_count(f, 2);
        assert_int_equal(f->empty_calls, 2);
        assert_int_equal(cgroup_fds(path), 0);
}

static void test_flags_conflict(void **state) {
        struct fx *f = *state;
        tend_group *g = NULL;
        assert_int_equal(tend_group_new(f->loop, NULL,
                                        TEND_GROUP_NO_CGROUP | TEND_GROUP_REQUIRE_CGROUP, &g),
                         -EINVAL);
        assert_null(g);
        assert_null(tend_group_free(NULL));
}

/* /proc/PID/stat puts comm in parentheses and comm may hold ") (": the fields are found after
 * the last ')'. A member whose name is "a) (b" must still be seen (PGROUP reads every field
 * it needs from there). */
static void test_pgroup_odd_comm(void **state) {
        struct fx *f = *state;
        snprintf(f->tmpdir, sizeof f->tmpdir, "/tmp/tend-test-group-XXXXXX");
        assert_non_null(mkdtemp(f->tmpdir));
        char link[128], helper[4096];
        snprintf(link, sizeof link, "%s/a) (b", f->tmpdir);
        assert_non_null(realpath(helper_path(), helper));
        assert_int_equal(symlink(helper, link), 0);

        new_group(f, TEND_GROUP_NO_CGROUP, "odd");
        tend_proc *p = NULL;
        pid_t pid = spawn_helper_as(f, link, "sleep-forever", NULL, &p, NULL, 0);
        char comm[64] = "", path[64];
        snprintf(path, sizeof path, "/proc/%d/comm", (int)pid);
        FILE *fp = fopen(path, "re");
        assert_non_null(fp);
        assert_non_null(fgets(comm, sizeof comm, fp));
        fclose(fp);
        assert_string_equal(comm, "a) (b\n");

        pid_t pids[4];
        assert_int_equal(tend_group_members(f->g, pids, 4), 1);
        assert_int_equal(pids[0], pid);
        assert_int_equal(tend_group_signal(f->g, 0), 1);
        assert_int_equal(tend_group_kill(f->g), 0);
        struct tend_exit ex = wait_proc(f, p);
        assert_int_equal(ex.signo, SIGKILL);
        run_until(f, &f->empty_calls);
}

/* The fallback is automatic: without NO_CGROUP or REQUIRE_CGROUP the group is a cgroup when it
 * can be, a process group otherwise; either way it works. */
static void test_default_kind(void **state) {
        struct fx *f = *state;
        new_group(f, 0, "default");
        enum tend_group_kind k = tend_group_kind(f->g);
        assert_true(k == TEND_GROUP_CGROUP || k == TEND_GROUP_PGROUP);
        assert_true((k == TEND_GROUP_CGROUP) == (tend_group_path(f->g) != NULL));
        tend_proc *p = NULL;
        spawn_helper(f, "sleep-forever", NULL, &p);
        assert_int_equal(tend_group_members(f->g, NULL, 0), 1);
        assert_int_equal(tend_group_kill(f->g), 0);
        wait_proc(f, p);
        run_until(f, &f->empty_calls);
}

/* Many process-group groups in one loop: a SIGCHLD costs one walk of /proc for all of them,
 * not one per populated group, and each group still learns exactly when it empties. */
static void on_empty_count(tend_group *g, void *userdata) {
        (*(int *)userdata)++;
}

static void run_until_walk(struct fx *f, unsigned long after) {
        uint64_t end = tend_now_usec() + WAIT_USEC;
        while (group_proc_walks() == after) {
                if (tend_now_usec() > end)
                        fail_msg("timed out waiting for a walk of /proc");
                assert_true(tend_loop_run_once(f->loop, 200u * 1000u) >= 0);
        }
}

static void test_pgroup_many_share_one_walk(void **state) {
        struct fx *f = *state;
        enum { N = MAX_PROCS };
        tend_group *g[N];
        int empty[N] = { 0 };
        tend_proc *p[N];
        for (int i = 0; i < N; i++) {
                assert_int_equal(tend_group_new(f->loop, "many", TEND_GROUP_NO_CGROUP, &g[i]), 0);
                tend_group_on_empty(g[i], on_empty_count, &empty[i]);
                f->g = g[i];
                /* The last one: a chain of two descendants in its process group. */
                spawn_helper(f, i == N - 1 ? "fork-tree" : "sleep-forever",
                             i == N - 1 ? "2" : NULL, &p[i]);
        }
        f->g = NULL;

        unsigned long before = group_proc_walks();
        assert_int_equal(tend_proc_signal(p[3], SIGKILL), 0);
        run_until(f, &empty[3]);
        unsigned long walks = group_proc_walks() - before;
        assert_true(walks >= 1);
        assert_true(walks <= 2); /* one per SIGCHLD; per group it would be N - 1 or more */
        for (int i = 0; i < N; i++)
                assert_int_equal(empty[i], i == 3);

        /* Two at once. */
        assert_int_equal(tend_proc_signal(p[0], SIGKILL), 0);
        assert_int_equal(tend_proc_signal(p[5], SIGKILL), 0);
        run_until(f, &empty[0]);
        run_until(f, &empty[5]);
        for (int i = 0; i < N; i++)
                assert_int_equal(empty[i], i == 0 || i == 3 || i == 5);

        /* The chain's top process ends; its descendants keep the group populated. */
        before = group_proc_walks();
        assert_int_equal(tend_proc_signal(p[N - 1], SIGKILL), 0);
        wait_proc(f, p[N - 1]);
        run_until_walk(f, before);
        assert_int_equal(empty[N - 1], 0);
        assert_true(tend_group_members(g[N - 1], NULL, 0) >= 1);
        assert_int_equal(tend_group_kill(g[N - 1]), 0);
        run_until(f, &empty[N - 1]);

        for (int i = 0; i < N; i++) {
                (void)tend_proc_signal(p[i], SIGKILL);
                wait_proc(f, p[i]);
        }
        for (int i = 0; i < N; i++)
                if (!empty[i])
                        run_until(f, &empty[i]);
        for (int i = 0; i < N; i++) {
                assert_int_equal(empty[i], 1);
                tend_group_free(g[i]);
        }
}

/* A walk of /proc that misses a live member (seen on 6.18: a service's leftover, reparented to
 * us, absent from the walk taken as its shell exited) must not announce the group empty: the
 * event would never come again, and a stop ladder waiting for it would wait forever. */
extern pid_t group_walk_hides; /* lib/internal.h */

static void test_pgroup_walk_miss_not_announced(void **state) {
        struct fx *f = *state;
        new_group(f, TEND_GROUP_NO_CGROUP, "miss");
        tend_proc *stays = NULL, *goes = NULL;
        pid_t s = spawn_helper(f, "sleep-forever", NULL, &stays);
        (void)spawn_helper(f, "sleep-forever", NULL, &goes);
        group_walk_hides = s;
        unsigned long before = group_proc_walks();
        assert_int_equal(tend_proc_signal(goes, SIGKILL), 0);
        wait_proc(f, goes);
        run_until_walk(f, before); /* the SIGCHLD's walk, which does not see s */
        assert_int_equal(f->empty_calls, 0);
        assert_false(tend_group_empty(f->g));
        group_walk_hides = 0;
        assert_int_equal(tend_proc_signal(stays, SIGKILL), 0);
        wait_proc(f, stays);
        run_until(f, &f->empty_calls);
        assert_int_equal(f->empty_calls, 1);
}

/* A process-group group beside a cgroup group in the same process: each spawns a child that
 * double-forks and calls setsid(), so both grandchildren come to us through the subreaper as
 * children we did not spawn. The process-group group claims its own (in the cgroup we are in)
 * and not the other's (still in the other group's leaf): our cgroup's path is read when that
 * question first comes up, not when the group is made. */
static void test_pgroup_beside_cgroup_claims_only_its_orphans(void **state) {
        struct fx *f = *state;
        new_group(f, TEND_GROUP_REQUIRE_CGROUP, "beside");
        tend_group *cg = f->g;
        tend_proc *in_cg = NULL, *in_pg = NULL;
        pid_t cg_orphan = spawn_helper(f, "escape", NULL, &in_cg);
        hold_pidfd(f, cg_orphan);
        assert_int_equal(wait_proc(f, in_cg).code, 0);

        tend_group *pg = NULL;
        assert_int_equal(tend_group_new(f->loop, "beside", TEND_GROUP_NO_CGROUP, &pg), 0);
        assert_int_equal(tend_group_kind(pg), TEND_GROUP_PGROUP);
        f->g = pg; /* spawn_helper spawns into f->g */
        pid_t pg_orphan = spawn_helper(f, "escape", NULL, &in_pg);
        hold_pidfd(f, pg_orphan);
        assert_int_equal(wait_proc(f, in_pg).code, 0);
        f->g = cg;
        char own[4096], where[4096];
        own_cgroup(own, sizeof own);
        cgroup_of(pg_orphan, where, sizeof where);
        assert_string_equal(where, own);
        cgroup_of(cg_orphan, where, sizeof where);
        assert_string_not_equal(where, own);

        pid_t pids[8];
        int n = tend_group_members(pg, pids, 8);
        assert_int_equal(n, 1);
        assert_int_equal(pids[0], pg_orphan);
        n = tend_group_members(cg, pids, 8);
        assert_int_equal(n, 1);
        assert_int_equal(pids[0], cg_orphan);

        assert_int_equal(tend_group_kill(pg), 0);
        assert_true(pidfd_ended(f->pidfds[1], 5000));
        assert_int_equal(kill(cg_orphan, 0), 0); /* the other group's is untouched */
        (void)tend_loop_run_once(f->loop, 0);
        pg = tend_group_free(pg);
        assert_null(pg);
        /* The teardown kills f->g (cg) and reaps both through the held pidfds. */
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
static const struct CMUnitTest tests[] = {
        T(test_cgroup_created_and_removed),
        T(test_cgroup_escape_kill_empty),
        T(test_pgroup_escape_kill_empty),
        T(test_pgroup_escape_kill_empty_walk),
        T(test_pgroup_walk_miss_not_announced),
        T(test_cgroup_reuse),
        T(test_cgroup_kill_then_reuse),
        T(test_pgroup_kill_then_reuse),
        T(test_pgroup_reuse),
        T(test_cgroup_nested),
        T(test_cgroup_free_moves_members_out),
        T(test_cgroup_empty),
        T(test_cgroup_remove_if_empty),
        T(test_cgroup_remove_if_empty_owes_event),
        T(test_pgroup_remove_if_empty),
        T(test_pgroup_empty),
        T(test_cgroup_zombies),
        T(test_pgroup_zombies),
        T(test_cgroup_free_in_on_empty),
        T(test_cgroup_free_in_exit_callback),
        T(test_cgroup_removed_in_exit_callback),
        T(test_cgroup_exit_then_leftover_ends),
        T(test_cgroup_empty_answer_lasts_the_round),
        T(test_pgroup_free_in_on_empty),
        T(test_cgroup_stop_ladder),
        T(test_cgroup_no_fd_while_a_handle_lives),
        T(test_pgroup_stop_ladder),
        T(test_flags_conflict),
        T(test_pgroup_odd_comm),
        T(test_pgroup_many_share_one_walk),
        T(test_pgroup_beside_cgroup_claims_only_its_orphans),
        T(test_default_kind),
};

TEND_TEST_MAIN(tests)
