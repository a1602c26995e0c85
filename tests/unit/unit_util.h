/* unit_util.h — small helpers shared by the unit tests that start processes through libtend
 * (test_loop, test_spawn, test_proc, test_capture, test_ladder).
 *
 * Everything here waits on events — a pipe's EOF, a pidfd, the loop — with the harness's
 * alarm as the bound; nothing sleeps. All functions are static inline so a test program that
 * uses only some of them still builds with -Werror.
 *
 * Include after harness.h and tend.h. */
#ifndef TEND_TEST_UNIT_UTIL_H
#define TEND_TEST_UNIT_UTIL_H

#include <fcntl.h>
#include <poll.h>
#include <sys/syscall.h>
#include <sys/wait.h>

/* The fd number where helpers get the write end of their ready pipe (HELPER_READY_FD). */
#define UT_READY_FD 3
/* How long a loop-driven wait may take before the test fails with a message (the alarm is
 * the last resort). */
#define UT_WAIT_USEC (20u * 1000u * 1000u)

/* A NULL-terminated argv from a list of strings. */
#define UT_ARGV(...) ((const char *const[]){ __VA_ARGS__, NULL })

static inline int ut_pidfd_open(pid_t pid) {
        return (int)syscall(SYS_pidfd_open, pid, 0);
}

static inline int ut_pidfd_signal(int fd, int signo) {
        return (int)syscall(SYS_pidfd_send_signal, fd, signo, NULL, 0);
}

/* Has the process behind the pidfd ended (zombie or reaped)? Waits at most timeout_ms. */
static inline bool ut_pidfd_ended(int fd, int timeout_ms) {
        struct pollfd p = { .fd = fd, .events = POLLIN };
        int r;
        do
                r = poll(&p, 1, timeout_ms);
        while (r < 0 && errno == EINTR);
        return r == 1;
}

/* Kill the process behind a pidfd we hold on a non-child (or a child not spawned through the
 * library), reap it if it is ours, and close the fd. */
static inline void ut_pidfd_kill_close(int fd) {
        siginfo_t si;
        if (fd < 0)
                return;
        (void)ut_pidfd_signal(fd, SIGKILL);
        (void)ut_pidfd_ended(fd, 10000);
        /* ECHILD when it is not our child: then whoever is its parent reaps it. */
        (void)waitid((idtype_t)P_PIDFD, (id_t)fd, &si, WEXITED | WNOHANG | __WALL);
        close(fd);
}

/* Run the loop until *flag (an int or a counter) reaches want; fail after UT_WAIT_USEC. */
static inline void ut_run_until(tend_loop *loop, const int *flag, int want) {
        uint64_t end = tend_now_usec() + UT_WAIT_USEC;
        while (*flag < want) {
                if (tend_now_usec() > end)
                        fail_msg("timed out waiting for the loop (%d of %d)", *flag, want);
                int r = tend_loop_run_once(loop, 500u * 1000u);
                if (r < 0)
                        fail_msg("tend_loop_run_once: %s", tend_strerror(r));
        }
}

/* Wait for p through the loop (its exit event) and return the result of tend_proc_poll(). */
static inline int ut_wait_loop(tend_loop *loop, tend_proc *p, struct tend_exit *ex) {
        uint64_t end = tend_now_usec() + UT_WAIT_USEC;
        int r;
        while ((r = tend_proc_poll(p, ex)) == -EAGAIN) {
                if (tend_now_usec() > end)
                        fail_msg("process %d did not end", (int)tend_proc_pid(p));
                int n = tend_loop_run_once(loop, 500u * 1000u);
                if (n < 0)
                        fail_msg("tend_loop_run_once: %s", tend_strerror(n));
        }
        return r;
}

/* tend_spawn() that fails the test with the errno and the step. */
static inline tend_proc *ut_spawn(tend_loop *loop, const struct tend_spawn_opts *o) {
        tend_proc *p = NULL;
        enum tend_spawn_step step = TEND_STEP_NONE;
        int r = tend_spawn(loop, o, &p, &step);
        if (r < 0)
                fail_msg("tend_spawn %s: %s at step %s", o->argv[0], tend_strerror(r),
                         tend_spawn_step_name(step));
        assert_non_null(p);
        return p;
}

/* Read fd until EOF into buf (NUL-terminated); fails if more than size-1 bytes come. Returns
 * the length. */
static inline size_t ut_read_all(int fd, char *buf, size_t size) {
        size_t len = 0;
        for (;;) {
                ssize_t n = read(fd, buf + len, size - 1 - len);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0 && errno == EIO)
                        break; /* a pty master once the slave side is gone */
                if (n < 0)
                        fail_msg("read: %s", strerror(errno));
                if (n == 0)
                        break;
                len += (size_t)n;
                if (len == size - 1) {
                        char extra;
                        if (read(fd, &extra, 1) > 0)
                                fail_msg("more output than the %zu bytes expected", size - 1);
                        break;
                }
        }
        buf[len] = '\0';
        return len;
}

/* Spawn o (its stdout made a pipe if it was left to INHERIT), read stdout to EOF into out,
 * wait, free the handle. Returns the exit through ex. */
static inline void ut_run_output(tend_loop *loop, const struct tend_spawn_opts *o_in, char *out,
                                 size_t size, struct tend_exit *ex) {
        struct tend_spawn_opts o = *o_in;
        if (o.stdio[1].kind == TEND_STDIO_INHERIT)
                o.stdio[1].kind = TEND_STDIO_PIPE;
        tend_proc *p = ut_spawn(loop, &o);
        int fd = tend_proc_take_stdio_fd(p, 1);
        assert_true(fd >= 0);
        ut_read_all(fd, out, size);
        close(fd);
        assert_int_equal(tend_proc_wait(p, ex), 0);
        tend_proc_free(p);
}

/* Run `helper ARGS...` with default options; stdout to out; returns the exit code (fails if
 * it died by a signal). */
#define ut_helper_output(loop, out, size, ...)                                               \
        ut_helper_output_((loop), (out), (size), UT_ARGV(helper_path(), __VA_ARGS__))
static inline int ut_helper_output_(tend_loop *loop, char *out, size_t size,
                                    const char *const *argv) {
        struct tend_spawn_opts o = { .argv = argv };
        struct tend_exit ex;
        o.stdio[0].kind = TEND_STDIO_NULL;
        ut_run_output(loop, &o, out, size, &ex);
        if (ex.signo)
                fail_msg("%s %s died by signal %d", argv[0], argv[1], ex.signo);
        return ex.code;
}

/* Spawn o with a ready pipe mapped at UT_READY_FD (HELPER_READY_FD is set in the child's
 * environment by the caller: ut_setup_ready_env()), wait for "ready <pid>..." and return the
 * pid it reported; the rest of the line goes to extra (if not NULL). */
static inline pid_t ut_spawn_ready(tend_loop *loop, const struct tend_spawn_opts *o_in,
                                   tend_proc **ret_proc, char *extra, size_t extra_size) {
        int p[2];
        assert_int_equal(pipe2(p, O_CLOEXEC), 0);
        struct tend_spawn_opts o = *o_in;
        struct tend_fd_map maps[8];
        assert_true(o.n_fds < 8);
        for (size_t i = 0; i < o.n_fds; i++)
                maps[i] = o.fds[i];
        maps[o.n_fds] = (struct tend_fd_map){ .parent_fd = p[1], .child_fd = UT_READY_FD };
        o.fds = maps;
        o.n_fds++;
        tend_proc *proc = NULL;
        enum tend_spawn_step step = TEND_STEP_NONE;
        int r = tend_spawn(loop, &o, &proc, &step);
        close(p[1]);
        if (r < 0) {
                close(p[0]);
                fail_msg("tend_spawn %s: %s at step %s", o.argv[0], tend_strerror(r),
                         tend_spawn_step_name(step));
        }
        *ret_proc = proc;
        char line[4096]; /* as large as helper_read_ready's own buffer */
        pid_t pid = helper_read_ready(p[0], line, sizeof line);
        close(p[0]);
        if (pid <= 0)
                fail_msg("no ready report from %s (got '%s')", o.argv[1] ? o.argv[1] : "",
                         line);
        if (extra) {
                int off = 0;
                int dummy;
                if (sscanf(line, "ready %d%n", &dummy, &off) < 1)
                        off = 0;
                snprintf(extra, extra_size, "%s", line + off);
        }
        return pid;
}

static inline void ut_setup_ready_env(void) {
        if (setenv("HELPER_READY_FD", "3", 1) < 0)
                fail_msg("setenv: %s", strerror(errno));
}

/* No child of ours is left, not even a zombie. */
static inline void ut_assert_no_children(void) {
        siginfo_t si;
        memset(&si, 0, sizeof si);
        int r = waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT | __WALL);
        if (r == 0 && si.si_pid != 0)
                fail_msg("a child is left: pid %d (code %d status %d)", (int)si.si_pid,
                         si.si_code, si.si_status);
        if (r < 0 && errno != ECHILD)
                fail_msg("waitid: %s", strerror(errno));
        /* Running children do not show up in a WEXITED wait: look in /proc as well. */
        char path[64];
        snprintf(path, sizeof path, "/proc/%d/task/%d/children", (int)getpid(), (int)getpid());
        FILE *f = fopen(path, "re");
        if (f) {
                int pid;
                if (fscanf(f, "%d", &pid) == 1) {
                        fclose(f);
                        fail_msg("a child is left running: pid %d", pid);
                }
                fclose(f);
        }
}

/* A new directory for temporary files: below the test session's root ($TEND_TEST_SESSION,
 * removed with the session) when there is one, else in /tmp. The test removes what it made. */
static inline void ut_mkdtemp(char *buf, size_t size, const char *tag) {
        const char *root = getenv("TEND_TEST_SESSION");
        int n = snprintf(buf, size, "%s/tend-test-%s-XXXXXX", root && *root ? root : "/tmp", tag);
        if (n < 0 || (size_t)n >= size)
                fail_msg("temporary path too long");
        if (!mkdtemp(buf))
                fail_msg("mkdtemp %s: %s", buf, strerror(errno));
}

/* Write text to path (created with mode) or fail. */
static inline void ut_write_file(const char *path, const char *text, mode_t mode) {
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
        if (fd < 0)
                fail_msg("open %s: %s", path, strerror(errno));
        size_t len = strlen(text);
        if (write(fd, text, len) != (ssize_t)len)
                fail_msg("write %s: %s", path, strerror(errno));
        close(fd);
}

#endif
