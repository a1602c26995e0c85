/* test_proc.c — the process handle: the exit status (once, the same every time), signals that
 * cannot hit a recycled pid, statuses stolen by a waitpid(-1) elsewhere in the process
 * (recovered through PIDFD_INFO_EXIT, or reported lost, never made up), 10,000 children
 * exiting at once, resource use, and orphan reaping beside our own children (DESIGN §1
 * items 3–6). */
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <sys/wait.h>

#include "harness.h"
#include "tend.h"
#include "unit_util.h"

struct fx {
        tend_loop *loop;
        bool subreaper;
};

static int setup(void **state) {
        struct fx *f = calloc(1, sizeof *f);
        if (!f)
                return -1;
        test_alarm(50);
        if (tend_loop_new(&f->loop) < 0)
                return -1;
        *state = f;
        return 0;
}

static int teardown(void **state) {
        struct fx *f = *state;
        tend_loop_free(f->loop);
        if (f->subreaper)
                (void)prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0);
        free(f);
        alarm(0);
        return 0;
}

/* PIDFD_INFO_EXIT (Linux 6.15) lets the status of a child reaped by someone else be read back
 * from its pidfd. */
static bool kernel_has_pidfd_info_exit(void) {
        struct utsname u;
        int major = 0, minor = 0;
        if (uname(&u) < 0 || sscanf(u.release, "%d.%d", &major, &minor) != 2)
                return false;
        return major > 6 || (major == 6 && minor >= 15);
}

static bool same_exit(const struct tend_exit *a, const struct tend_exit *b) {
        return a->code == b->code && a->signo == b->signo && a->core == b->core &&
               a->recovered == b->recovered && a->wait_status == b->wait_status &&
               a->start_usec == b->start_usec && a->end_usec == b->end_usec &&
               memcmp(&a->rusage, &b->rusage, sizeof a->rusage) == 0;
}

/* ---- the status -------------------------------------------------------------------------- */

struct exit_seen {
        int calls;
        int err;
        struct tend_exit ex;
        tend_proc *p;
        bool free_in_callback;
};

static void on_exit_seen(tend_proc *p, int err, const struct tend_exit *ex, void *userdata) {
        struct exit_seen *s = userdata;
        assert_ptr_equal(p, s->p);
        s->calls++;
        s->err = err;
        if (ex)
                s->ex = *ex;
        assert_true(tend_proc_exited(p));
        assert_int_equal(tend_proc_pidfd(p), -1);
        if (s->free_in_callback)
                s->p = tend_proc_free(p);
}

/* The exit callback gets the exit code, or the signal; it runs once. */
static void exit_callback_status(void **state) {
        struct fx *f = *state;
        struct exit_seen a = { 0 }, b = { 0 }, c = { 0 };
        struct tend_spawn_opts o = { .argv = UT_ARGV(helper_path(), "exit", "7") };
        a.p = ut_spawn(f->loop, &o);
        tend_proc_on_exit(a.p, on_exit_seen, &a);
        o.argv = UT_ARGV(helper_path(), "signal", "USR1");
        b.p = ut_spawn(f->loop, &o);
        tend_proc_on_exit(b.p, on_exit_seen, &b);
        o.argv = UT_ARGV(helper_path(), "exit", "0");
        c.p = ut_spawn(f->loop, &o);
        c.free_in_callback = true; /* "free it from here if you like" */
        tend_proc_on_exit(c.p, on_exit_seen, &c);

        assert_int_equal(tend_loop_run(f->loop), 0);
        assert_int_equal(a.calls, 1);
        assert_int_equal(a.err, 0);
        assert_int_equal(a.ex.code, 7);
        assert_int_equal(a.ex.signo, 0);
        assert_false(a.ex.recovered);
        assert_int_equal(b.calls, 1);
        assert_int_equal(b.err, 0);
        assert_int_equal(b.ex.signo, SIGUSR1);
        assert_int_equal(b.ex.code, 0);
        assert_true(WIFSIGNALED(b.ex.wait_status));
        assert_int_equal(c.calls, 1);
        assert_null(c.p);

        /* Once more through the loop: nothing is called again. */
        assert_int_equal(tend_loop_run_once(f->loop, 0), 0);
        assert_int_equal(a.calls + b.calls + c.calls, 3);
        tend_proc_free(a.p);
        tend_proc_free(b.p);
        ut_assert_no_children();
}

/* After the reap, wait and poll give the same result every time; signalling gives ESRCH and
 * no system call reaches any process. */
static void wait_poll_repeatable(void **state) {
        struct fx *f = *state;
        struct exit_seen s = { 0 };
        struct tend_spawn_opts o = { .argv = UT_ARGV(helper_path(), "exit", "33") };
        s.p = ut_spawn(f->loop, &o);
        tend_proc_on_exit(s.p, on_exit_seen, &s);
        assert_true(tend_proc_pidfd(s.p) >= 0);
        assert_true(tend_proc_pid(s.p) > 0);
        assert_null(tend_proc_group(s.p));
        ut_run_until(f->loop, &s.calls, 1);

        struct tend_exit e1, e2, e3;
        assert_int_equal(tend_proc_wait(s.p, &e1), 0);
        assert_int_equal(tend_proc_poll(s.p, &e2), 0);
        assert_int_equal(tend_proc_wait(s.p, &e3), 0);
        assert_true(same_exit(&e1, &s.ex));
        assert_true(same_exit(&e2, &s.ex));
        assert_true(same_exit(&e3, &s.ex));
        assert_int_equal(e1.code, 33);
        assert_int_equal(tend_proc_poll(s.p, NULL), 0);
        assert_int_equal(tend_proc_signal(s.p, SIGKILL), -ESRCH);
        assert_int_equal(tend_proc_signal(s.p, 0), -ESRCH);
        assert_int_equal(tend_proc_pidfd(s.p), -1);
        assert_true(tend_proc_exited(s.p));
        tend_proc_free(s.p);

        /* Collected with wait (no loop): the same again, and the loop stays quiet. */
        struct exit_seen t = { 0 };
        t.p = ut_spawn(f->loop, &o);
        tend_proc_on_exit(t.p, on_exit_seen, &t);
        assert_int_equal(tend_proc_wait(t.p, &e1), 0);
        assert_int_equal(e1.code, 33);
        assert_int_equal(tend_proc_poll(t.p, &e2), 0);
        assert_true(same_exit(&e1, &e2));
        assert_int_equal(tend_loop_run(f->loop), 0);
        assert_true(t.calls <= 1);
        assert_int_equal(tend_proc_wait(t.p, &e3), 0);
        assert_true(same_exit(&e1, &e3));
        tend_proc_free(t.p);
        ut_assert_no_children();
}

/* A running process: poll says EAGAIN and takes nothing; signal 0 probes; a real signal ends
 * it and then signalling is refused. */
static void poll_running_and_signal(void **state) {
        struct fx *f = *state;
        ut_setup_ready_env();
        struct tend_spawn_opts o = { .argv = UT_ARGV(helper_path(), "sleep-forever") };
        tend_proc *p = NULL;
        pid_t pid = ut_spawn_ready(f->loop, &o, &p, NULL, 0);
        assert_int_equal(pid, tend_proc_pid(p));
        struct tend_exit ex;
        memset(&ex, 0x5a, sizeof ex);
        struct tend_exit untouched = ex;
        assert_int_equal(tend_proc_poll(p, &ex), -EAGAIN);
        assert_memory_equal(&ex, &untouched, sizeof ex);
        assert_false(tend_proc_exited(p));
        assert_int_equal(tend_proc_signal(p, 0), 0);
        assert_int_equal(tend_proc_signal(p, -1), -EINVAL);
        assert_int_equal(tend_proc_signal(p, SIGTERM), 0);
        assert_int_equal(ut_wait_loop(f->loop, p, &ex), 0);
        assert_int_equal(ex.signo, SIGTERM);
        assert_int_equal(tend_proc_signal(p, SIGTERM), -ESRCH);
        assert_null(tend_proc_free(p));
        assert_null(tend_proc_free(NULL));
        ut_assert_no_children();
}

/* Freeing the handle of a running process neither kills it nor leaves the loop waiting. */
static void free_running_handle(void **state) {
        struct fx *f = *state;
        ut_setup_ready_env();
        struct tend_spawn_opts o = { .argv = UT_ARGV(helper_path(), "sleep-forever") };
        tend_proc *p = NULL;
        pid_t pid = ut_spawn_ready(f->loop, &o, &p, NULL, 0);
        int fd = ut_pidfd_open(pid);
        assert_true(fd >= 0);
        tend_proc_free(p);
        assert_int_equal(tend_loop_run(f->loop), 0); /* nothing keeps it alive */
        assert_false(ut_pidfd_ended(fd, 0));
        ut_pidfd_kill_close(fd);
        ut_assert_no_children();
}

/* SIGCHLD set to SIG_IGN makes the kernel reap children by itself: the status is still
 * known, from the pidfd (Linux 6.15), or reported lost — never invented. */
static void status_with_sigchld_ignored(void **state) {
        struct fx *f = *state;
        struct sigaction ign = { .sa_handler = SIG_IGN }, old;
        sigemptyset(&ign.sa_mask);
        assert_int_equal(sigaction(SIGCHLD, &ign, &old), 0);
        struct exit_seen s = { 0 };
        struct tend_spawn_opts o = { .argv = UT_ARGV(helper_path(), "exit", "5") };
        s.p = ut_spawn(f->loop, &o);
        tend_proc_on_exit(s.p, on_exit_seen, &s);
        ut_run_until(f->loop, &s.calls, 1);
        sigaction(SIGCHLD, &old, NULL);
        if (kernel_has_pidfd_info_exit()) {
                assert_int_equal(s.err, 0);
                assert_true(s.ex.recovered);
                assert_int_equal(s.ex.code, 5);
                assert_int_equal(s.ex.signo, 0);
        } else {
                assert_int_equal(s.err, -TEND_ESTATUSLOST);
        }
        struct tend_exit ex;
        assert_int_equal(tend_proc_poll(s.p, &ex), s.err);
        tend_proc_free(s.p);
}

/* ---- recycled pids ----------------------------------------------------------------------- */

/* Make the next process get pid want, by setting ns_last_pid (under its flock, as CRIU does)
 * and spawning at once. Returns the handle if it got that pid; otherwise kills and frees what
 * it made and returns NULL. */
static tend_proc *spawn_at_pid(struct fx *f, pid_t want, int *ret_err) {
        int fd = open("/proc/sys/kernel/ns_last_pid", O_RDWR | O_CLOEXEC);
        if (fd < 0) {
                *ret_err = errno;
                return NULL;
        }
        if (flock(fd, LOCK_EX) < 0) {
                *ret_err = errno;
                close(fd);
                return NULL;
        }
        char text[32];
        int len = snprintf(text, sizeof text, "%d", (int)want - 1);
        tend_proc *p = NULL;
        if (write(fd, text, (size_t)len) != len) {
                *ret_err = errno;
        } else {
                struct tend_spawn_opts o = { .argv = UT_ARGV(helper_path(), "sleep-forever") };
                p = ut_spawn(f->loop, &o);
        }
        flock(fd, LOCK_UN);
        close(fd);
        if (p && tend_proc_pid(p) != want) {
                struct tend_exit ex;
                assert_int_equal(tend_proc_signal(p, SIGKILL), 0);
                assert_int_equal(tend_proc_wait(p, &ex), 0);
                p = tend_proc_free(p);
                *ret_err = EAGAIN;
        }
        return p;
}

/* Forced pid reuse: after the reap, the pid belongs to a new process; signalling the old
 * handle returns ESRCH and the new process is untouched. */
static void recycled_pid_not_signalled(void **state) {
        struct fx *f = *state;
        skip_unless_root();
        tend_proc *old = NULL, *fresh = NULL;
        pid_t pid = 0;
        int err = 0;
        for (int attempt = 0; attempt < 20 && !fresh; attempt++) {
                struct tend_spawn_opts o = { .argv = UT_ARGV(helper_path(), "exit", "0") };
                old = ut_spawn(f->loop, &o);
                pid = tend_proc_pid(old);
                struct tend_exit ex;
                assert_int_equal(tend_proc_wait(old, &ex), 0);
                fresh = spawn_at_pid(f, pid, &err);
                if (!fresh) {
                        old = tend_proc_free(old);
                        if (err != EAGAIN)
                                break; /* not allowed to set ns_last_pid: no point retrying */
                }
        }
        if (!fresh)
                skip_with_reason("could not force pid reuse (%s)",
                                 err == EAGAIN ? "other processes took the pid each time"
                                               : strerror(err));
        assert_int_equal(tend_proc_pid(fresh), pid);
        assert_int_equal(tend_proc_pid(old), pid); /* the same number, another process */

        assert_int_equal(tend_proc_signal(old, SIGKILL), -ESRCH);
        assert_int_equal(tend_proc_signal(old, 0), -ESRCH);
        /* The new one was not hit: still running, and answering signal 0. */
        struct pollfd pfd = { .fd = tend_proc_pidfd(fresh), .events = POLLIN };
        assert_int_equal(poll(&pfd, 1, 0), 0);
        struct tend_exit ex;
        assert_int_equal(tend_proc_poll(fresh, &ex), -EAGAIN);
        assert_int_equal(kill(pid, 0), 0);

        assert_int_equal(tend_proc_signal(fresh, SIGKILL), 0);
        assert_int_equal(ut_wait_loop(f->loop, fresh, &ex), 0);
        assert_int_equal(ex.signo, SIGKILL);
        tend_proc_free(fresh);
        tend_proc_free(old);
        ut_assert_no_children();
}

/* ---- stolen statuses --------------------------------------------------------------------- */

#define STEAL_N 64

struct thief {
        int n;
        pid_t pids[4 * STEAL_N];
        int status[4 * STEAL_N];
        int ready[2]; /* the thief writes one byte when it is about to wait */
};

/* Another part of the program that reaps whatever child it can: waitpid(-1) until there is
 * no child left at all. */
static void *thief_main(void *arg) {
        struct thief *t = arg;
        (void)!write(t->ready[1], "x", 1);
        for (;;) {
                int status;
                pid_t pid = waitpid(-1, &status, __WALL);
                if (pid < 0) {
                        if (errno == EINTR)
                                continue;
                        break; /* ECHILD: nothing left */
                }
                if (t->n < (int)(sizeof t->pids / sizeof t->pids[0])) {
                        t->pids[t->n] = pid;
                        t->status[t->n] = status;
                        t->n++;
                }
        }
        return NULL;
}

static void start_thief(struct thief *t, pthread_t *th) {
        memset(t, 0, sizeof *t);
        assert_int_equal(pipe2(t->ready, O_CLOEXEC), 0);
        assert_int_equal(pthread_create(th, NULL, thief_main, t), 0);
        char c;
        assert_int_equal(read(t->ready[0], &c, 1), 1);
        close(t->ready[0]);
        close(t->ready[1]);
}

struct kid {
        tend_proc *p;
        int want;
        int calls;
        int err;
        struct tend_exit ex;
        int *done;
};

static void on_kid_exit(tend_proc *p, int err, const struct tend_exit *ex, void *userdata) {
        struct kid *k = userdata;
        k->calls++;
        k->err = err;
        if (ex)
                k->ex = *ex;
        else
                memset(&k->ex, 0, sizeof k->ex);
        ++*k->done;
}

/* n children `helper wait-eof CODE` that all block on one pipe; returns its write end. */
static int spawn_waiters(struct fx *f, struct kid *kids, int n, int *done) {
        int gate[2];
        assert_int_equal(pipe2(gate, O_CLOEXEC), 0);
        for (int i = 0; i < n; i++) {
                char code[8];
                snprintf(code, sizeof code, "%d", i % 256);
                struct tend_spawn_opts o = { .argv = UT_ARGV(helper_path(), "wait-eof", code) };
                o.stdio[0] = (struct tend_stdio){ .kind = TEND_STDIO_FD, .fd = gate[0] };
                o.stdio[1].kind = TEND_STDIO_NULL;
                kids[i] = (struct kid){ .want = i % 256, .done = done };
                kids[i].p = ut_spawn(f->loop, &o);
                tend_proc_on_exit(kids[i].p, on_kid_exit, &kids[i]);
        }
        close(gate[0]);
        return gate[1];
}

/* Check one result: either the right status (recovered or not) or reported lost; never a
 * wrong code. Returns 1 if recovered, 0 if reaped by us, -1 if lost. */
static int check_kid(const struct kid *k, int i) {
        if (k->calls != 1)
                fail_msg("child %d: %d exit callbacks", i, k->calls);
        if (k->err == -TEND_ESTATUSLOST)
                return -1;
        if (k->err != 0)
                fail_msg("child %d: error %s", i, tend_strerror(k->err));
        if (k->ex.signo != 0 || k->ex.code != k->want)
                fail_msg("child %d: exit %d signal %d, expected exit %d (recovered %d)", i,
                         k->ex.code, k->ex.signo, k->want, k->ex.recovered);
        if (!WIFEXITED(k->ex.wait_status) || WEXITSTATUS(k->ex.wait_status) != k->want)
                fail_msg("child %d: wait status 0x%x", i, k->ex.wait_status);
        if (k->ex.recovered) {
                static const struct rusage zero;
                if (memcmp(&k->ex.rusage, &zero, sizeof zero) != 0)
                        fail_msg("child %d: recovered status with rusage", i);
        }
        return k->ex.recovered ? 1 : 0;
}

/* The thief takes every status before the loop even looks: each one is recovered from the
 * pidfd, exactly (Linux >= 6.15), or reported as lost. */
static void stolen_status_recovered(void **state) {
        struct fx *f = *state;
        static struct kid kids[STEAL_N];
        int done = 0;
        int gate = spawn_waiters(f, kids, STEAL_N, &done);
        struct thief t;
        pthread_t th;
        start_thief(&t, &th);
        close(gate); /* all exit now */
        assert_int_equal(pthread_join(th, NULL), 0);
        assert_int_equal(t.n, STEAL_N); /* the thief really got all of them */

        ut_run_until(f->loop, &done, STEAL_N);
        bool info_exit = kernel_has_pidfd_info_exit();
        for (int i = 0; i < STEAL_N; i++) {
                int r = check_kid(&kids[i], i);
                if (info_exit && r != 1)
                        fail_msg("child %d: not recovered (%d) on a kernel with "
                                 "PIDFD_INFO_EXIT", i, r);
                if (!info_exit && r != -1)
                        fail_msg("child %d: status %d without PIDFD_INFO_EXIT", i, r);
                /* The thief saw the same status. */
                bool found = false;
                for (int j = 0; j < t.n; j++)
                        if (t.pids[j] == tend_proc_pid(kids[i].p)) {
                                found = true;
                                assert_true(WIFEXITED(t.status[j]));
                                assert_int_equal(WEXITSTATUS(t.status[j]), kids[i].want);
                        }
                assert_true(found);
                struct tend_exit again;
                int rr = tend_proc_poll(kids[i].p, &again);
                assert_int_equal(rr, kids[i].err);
                if (rr == 0)
                        assert_true(same_exit(&again, &kids[i].ex));
                tend_proc_free(kids[i].p);
        }
        ut_assert_no_children();
}

/* The thief races with the loop: each child's status comes from whichever reaped it, and is
 * right; none is made up. Then the same with blocking tend_proc_wait(). */
static void stolen_status_racing(void **state) {
        struct fx *f = *state;
        static struct kid kids[STEAL_N];
        bool info_exit = kernel_has_pidfd_info_exit();
        for (int round = 0; round < 2; round++) {
                int done = 0;
                int gate = spawn_waiters(f, kids, STEAL_N, &done);
                struct thief t;
                pthread_t th;
                start_thief(&t, &th);
                close(gate);
                if (round == 0) {
                        ut_run_until(f->loop, &done, STEAL_N);
                } else {
                        for (int i = 0; i < STEAL_N; i++) {
                                struct tend_exit ex;
                                int r = tend_proc_wait(kids[i].p, &ex);
                                kids[i].calls = 1;
                                kids[i].err = r;
                                if (r == 0)
                                        kids[i].ex = ex;
                        }
                }
                assert_int_equal(pthread_join(th, NULL), 0);
                int stolen = 0, lost = 0;
                for (int i = 0; i < STEAL_N; i++) {
                        int r = check_kid(&kids[i], i);
                        stolen += r == 1;
                        lost += r == -1;
                        if (info_exit && r == -1)
                                fail_msg("round %d child %d: status lost on a kernel with "
                                         "PIDFD_INFO_EXIT",
                                         round, i);
                        tend_proc_free(kids[i].p);
                }
                /* Every child was reaped by exactly one side. */
                assert_int_equal(t.n, stolen + lost);
                printf("round %d: %d of %d statuses stolen and recovered, %d lost\n", round,
                       stolen, STEAL_N, lost);
        }
        ut_assert_no_children();
}

/* ---- many exits at once ------------------------------------------------------------------ */

#if defined(__SANITIZE_ADDRESS__)
#define TEND_TEST_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TEND_TEST_SANITIZED 1
#endif
#endif

/* 10,000 children exit at the same instant: every exit callback runs, once, with that child's
 * own code. Under the sanitizers each helper process carries ASan's runtime (some MiB of
 * private memory each), so the storm is 1,000 children there. */
#ifdef TEND_TEST_SANITIZED
#define STORM_N 1000
#else
#define STORM_N 10000
#endif

static void storm_of_exits(void **state) {
        struct fx *f = *state;
        test_alarm(58);
        struct rlimit rl;
        assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
        rlim_t need = STORM_N + 256;
        if (rl.rlim_max < need) {
                struct rlimit up = { need, need };
                if (setrlimit(RLIMIT_NOFILE, &up) < 0)
                        skip_with_reason("RLIMIT_NOFILE hard limit %llu < %llu and cannot be "
                                         "raised: %s",
                                         (unsigned long long)rl.rlim_max,
                                         (unsigned long long)need, strerror(errno));
        } else if (rl.rlim_cur < need) {
                struct rlimit up = { need, rl.rlim_max };
                assert_int_equal(setrlimit(RLIMIT_NOFILE, &up), 0);
        }

        struct kid *kids = calloc(STORM_N, sizeof *kids);
        assert_non_null(kids);
        int done = 0;
        uint64_t t0 = tend_now_usec();
        int gate = spawn_waiters(f, kids, STORM_N, &done);
        uint64_t t1 = tend_now_usec();
        close(gate);
        ut_run_until(f->loop, &done, STORM_N);
        uint64_t t2 = tend_now_usec();
        for (int i = 0; i < STORM_N; i++) {
                if (check_kid(&kids[i], i) != 0)
                        fail_msg("child %d: status not reaped by us", i);
                tend_proc_free(kids[i].p);
        }
        free(kids);
        assert_int_equal(tend_loop_run_once(f->loop, 0), 0);
        printf("%d children: spawned in %llu ms, all exits handled %llu ms after release\n",
               STORM_N, (unsigned long long)(t1 - t0) / 1000, (unsigned long long)(t2 - t1) / 1000);
        setrlimit(RLIMIT_NOFILE, &rl);
        ut_assert_no_children();
}

/* ---- resource use and times -------------------------------------------------------------- */

static void rusage_and_times(void **state) {
        struct fx *f = *state;
        uint64_t before = tend_now_usec();
        struct tend_spawn_opts o = { .argv = UT_ARGV(helper_path(), "burn", "200") };
        tend_proc *p = ut_spawn(f->loop, &o);
        uint64_t spawned = tend_now_usec();
        struct tend_exit ex;
        assert_int_equal(ut_wait_loop(f->loop, p, &ex), 0);
        uint64_t after = tend_now_usec();
        assert_int_equal(ex.code, 0);
        uint64_t utime = (uint64_t)ex.rusage.ru_utime.tv_sec * 1000000u +
                         (uint64_t)ex.rusage.ru_utime.tv_usec;
        uint64_t stime = (uint64_t)ex.rusage.ru_stime.tv_sec * 1000000u +
                         (uint64_t)ex.rusage.ru_stime.tv_usec;
        if (utime < 100000u)
                fail_msg("user time %llu us for 200 ms of burning", (unsigned long long)utime);
        assert_true(utime + stime >= 190000u);
        assert_true(ex.rusage.ru_maxrss > 0);
        assert_true(ex.start_usec >= before && ex.start_usec <= spawned);
        assert_true(ex.end_usec >= ex.start_usec + 190000u);
        assert_true(ex.end_usec <= after);
        tend_proc_free(p);

        /* Max RSS follows what the child touched. */
        o.argv = UT_ARGV(helper_path(), "alloc", "64");
        p = ut_spawn(f->loop, &o);
        assert_int_equal(tend_proc_wait(p, &ex), 0);
        assert_int_equal(ex.code, 0);
        assert_true(ex.rusage.ru_maxrss >= 64 * 1024);
        tend_proc_free(p);
}

/* ---- orphans ----------------------------------------------------------------------------- */

struct orphans {
        int calls;
        pid_t pids[64];
        int status[64];
        pid_t forbidden[2];
};

static void on_orphan(pid_t pid, int wait_status, void *userdata) {
        struct orphans *o = userdata;
        for (int i = 0; i < 2; i++)
                if (pid == o->forbidden[i])
                        fail_msg("the orphan reaper took our own child %d", (int)pid);
        assert_true(o->calls < 64);
        o->pids[o->calls] = pid;
        o->status[o->calls] = wait_status;
        o->calls++;
}

/* As a subreaper with orphan reaping on, 20 orphans dying at once are each reaped and
 * reported, while a process spawned through the library at the same time still gets its own
 * status through its handle. */
static void orphans_reaped(void **state) {
        struct fx *f = *state;
        assert_int_equal(prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), 0);
        f->subreaper = true;
        struct orphans orph = { 0 };
        assert_int_equal(tend_loop_reap_orphans(f->loop, on_orphan, &orph), 0);
        assert_int_equal(tend_loop_reap_orphans(f->loop, on_orphan, &orph), 0); /* idempotent */

        struct exit_seen h = { 0 }, own = { 0 };
        struct tend_spawn_opts o = { .argv = UT_ARGV(helper_path(), "orphans", "20", "7") };
        o.stdio[0].kind = TEND_STDIO_NULL;
        o.stdio[1].kind = TEND_STDIO_PIPE;
        h.p = ut_spawn(f->loop, &o);
        tend_proc_on_exit(h.p, on_exit_seen, &h);
        struct tend_spawn_opts o2 = { .argv = UT_ARGV(helper_path(), "exit", "42") };
        own.p = ut_spawn(f->loop, &o2);
        tend_proc_on_exit(own.p, on_exit_seen, &own);
        orph.forbidden[0] = tend_proc_pid(h.p);
        orph.forbidden[1] = tend_proc_pid(own.p);

        /* "orphans: PID...\n" (the orphans keep the pipe open until they die: read the line,
         * not to EOF). */
        int fd = tend_proc_stdio_fd(h.p, 1);
        char line[1024];
        size_t len = 0;
        while (len < sizeof line - 1 && (len == 0 || line[len - 1] != '\n')) {
                ssize_t n = read(fd, line + len, sizeof line - 1 - len);
                if (n < 0 && errno == EINTR)
                        continue;
                assert_true(n > 0);
                len += (size_t)n;
        }
        line[len] = '\0';
        pid_t listed[20];
        int nl = 0;
        char *tok = strtok(line + strlen("orphans:"), " \n");
        while (tok && nl < 20) {
                listed[nl++] = (pid_t)atoi(tok);
                tok = strtok(NULL, " \n");
        }
        assert_int_equal(nl, 20);

        ut_run_until(f->loop, &orph.calls, 20);
        ut_run_until(f->loop, &h.calls, 1);
        ut_run_until(f->loop, &own.calls, 1);
        assert_int_equal(own.err, 0);
        assert_int_equal(own.ex.code, 42);
        assert_false(own.ex.recovered);
        assert_int_equal(h.err, 0);
        assert_int_equal(h.ex.code, 0);
        for (int i = 0; i < 20; i++) {
                int found = -1;
                for (int j = 0; j < orph.calls; j++)
                        if (orph.pids[j] == listed[i])
                                found = j;
                if (found < 0)
                        fail_msg("orphan %d (pid %d) was not reported", i, (int)listed[i]);
                assert_true(WIFEXITED(orph.status[found]));
                assert_int_equal(WEXITSTATUS(orph.status[found]), (7 + i) % 256);
        }
        assert_int_equal(orph.calls, 20);
        assert_int_equal(tend_loop_run_once(f->loop, 0), 0);
        tend_proc_free(h.p);
        tend_proc_free(own.p);
        ut_assert_no_children();
}

/* Zombies that were there before orphan reaping was turned on are reaped when it is. */
static void orphans_reaped_from_before(void **state) {
        struct fx *f = *state;
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0)
                _exit(17);
        int fd = ut_pidfd_open(pid);
        assert_true(fd >= 0);
        assert_true(ut_pidfd_ended(fd, 10000)); /* a zombie now */
        close(fd);
        struct orphans orph = { 0 };
        assert_int_equal(tend_loop_reap_orphans(f->loop, on_orphan, &orph), 0);
        assert_int_equal(orph.calls, 1);
        assert_int_equal(orph.pids[0], pid);
        assert_int_equal(WEXITSTATUS(orph.status[0]), 17);
        ut_assert_no_children();
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
static const struct CMUnitTest tests[] = {
        T(exit_callback_status),
        T(wait_poll_repeatable),
        T(poll_running_and_signal),
        T(free_running_handle),
        T(status_with_sigchld_ignored),
        T(recycled_pid_not_signalled),
        T(stolen_status_recovered),
        T(stolen_status_racing),
        T(storm_of_exits),
        T(rusage_and_times),
        T(orphans_reaped),
        T(orphans_reaped_from_before),
};

TEND_TEST_MAIN(tests)
