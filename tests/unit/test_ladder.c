/* test_ladder.c — the small languages (durations, signal names, ladders) and the stop ladder
 * itself: which step ends a child that dies on TERM, ignores TERM, or blocks TERM and QUIT; a
 * stopped child gets SIGCONT after each signal; with a group, an escaped grandchild is stopped
 * too; tend_group_stop on leftovers (DESIGN §1 items 7 and 8). */
#include <fcntl.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#include "harness.h"
#include "tend.h"
#include "unit_util.h"

struct fx {
        tend_loop *loop;
        tend_group *group;
        tend_proc *procs[8];
        size_t n_procs;
        int pidfds[8];
        size_t n_pidfds;
        bool subreaper;
};

static int setup(void **state) {
        struct fx *f = calloc(1, sizeof *f);
        if (!f)
                return -1;
        test_alarm(40);
        if (tend_loop_new(&f->loop) < 0)
                return -1;
        *state = f;
        return 0;
}

static int teardown(void **state) {
        struct fx *f = *state;
        if (f->group)
                (void)tend_group_kill(f->group);
        for (size_t i = 0; i < f->n_pidfds; i++)
                ut_pidfd_kill_close(f->pidfds[i]);
        for (size_t i = 0; i < f->n_procs; i++) {
                struct tend_exit ex;
                (void)tend_proc_signal(f->procs[i], SIGKILL);
                (void)tend_proc_wait(f->procs[i], &ex);
                tend_proc_free(f->procs[i]);
        }
        f->group = tend_group_free(f->group);
        tend_loop_free(f->loop);
        if (f->subreaper)
                (void)prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0);
        free(f);
        alarm(0);
        return 0;
}

/* ---- durations --------------------------------------------------------------------------- */

static void duration_parse(void **state) {
        static const struct {
                const char *text;
                uint64_t usec;
        } good[] = {
                { "500ms", 500000 },       { "1.5s", 1500000 },      { "2m", 120000000 },
                { "0", 0 },                { "10", 10000000 },       { "0.1s", 100000 },
                { "250us", 250 },          { "1h", 3600000000ull },  { "1min", 60000000 },
                { "0.5", 500000 },         { "0ms", 0 },             { "007s", 7000000 },
                { "1.0000001s", 1000000 }, /* below a microsecond: dropped */
                { "1.25ms", 1250 },
        };
        for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
                uint64_t v = 12345;
                int r = tend_parse_duration(good[i].text, &v);
                if (r != 0 || v != good[i].usec)
                        fail_msg("'%s': r=%d value %llu, expected %llu", good[i].text, r,
                                 (unsigned long long)v, (unsigned long long)good[i].usec);
        }
        static const char *const bad[] = { "", "abc", "5x", "-1s", "s", "1.", ".5", "1 s",
                                           " 1s", "1s ", "1.5.2s", "1e3", "ms", "+1s", "1ss",
                                           "1.s" };
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
                uint64_t v = 12345;
                int r = tend_parse_duration(bad[i], &v);
                if (r != -TEND_EPARSE)
                        fail_msg("'%s': got %d, expected -TEND_EPARSE", bad[i], r);
                assert_int_equal(v, 12345); /* untouched */
        }
        uint64_t v = 12345;
        assert_int_equal(tend_parse_duration(NULL, &v), -TEND_EPARSE);
        static const char *const huge[] = { "99999999999999999999999", "18446744073709551616us",
                                            "18446744073709552s", "5124095576030432h",
                                            "18446744073709551615.9ms" };
        for (size_t i = 0; i < sizeof huge / sizeof huge[0]; i++) {
                int r = tend_parse_duration(huge[i], &v);
                if (r != -ERANGE)
                        fail_msg("'%s': got %d, expected -ERANGE", huge[i], r);
                assert_int_equal(v, 12345);
        }
        /* The largest that fits. */
        assert_int_equal(tend_parse_duration("18446744073709551615us", &v), 0);
        assert_int_equal(v, UINT64_MAX);
        assert_string_equal(tend_strerror(-TEND_EPARSE), tend_strerror(TEND_EPARSE));
}

/* ---- signal names ------------------------------------------------------------------------ */

static void signal_names(void **state) {
        static const struct {
                const char *name;
                int signo;
        } good[] = {
                { "TERM", SIGTERM }, { "SIGTERM", SIGTERM }, { "term", SIGTERM },
                { "15", SIGTERM },   { "sigkill", SIGKILL }, { "Kill", SIGKILL },
                { "HUP", SIGHUP },   { "USR1", SIGUSR1 },    { "CHLD", SIGCHLD },
                { "WINCH", SIGWINCH }, { "IOT", SIGABRT },   { "POLL", SIGIO },
                { "1", 1 },          { "64", 64 },
        };
        for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
                int r = tend_signal_from_name(good[i].name);
                if (r != good[i].signo)
                        fail_msg("'%s': got %d, expected %d", good[i].name, r, good[i].signo);
        }
        assert_int_equal(tend_signal_from_name("RTMIN"), SIGRTMIN);
        assert_int_equal(tend_signal_from_name("RTMIN+2"), SIGRTMIN + 2);
        assert_int_equal(tend_signal_from_name("SIGRTMAX-1"), SIGRTMAX - 1);
        assert_int_equal(tend_signal_from_name("RTMAX"), SIGRTMAX);
        static const char *const bad[] = { "", "FOO", "0", "65", "15x", "-1", "SIG", "RTMIN-1",
                                           "RTMAX+1", "RTMIN+99", "TERM ", "SIG15" };
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
                int r = tend_signal_from_name(bad[i]);
                if (r != -EINVAL)
                        fail_msg("'%s': got %d, expected -EINVAL", bad[i], r);
        }
        assert_int_equal(tend_signal_from_name(NULL), -EINVAL);

        assert_string_equal(tend_signal_name(SIGTERM), "TERM");
        assert_string_equal(tend_signal_name(SIGKILL), "KILL");
        assert_string_equal(tend_signal_name(SIGQUIT), "QUIT");
        /* Every number has a name that reads back as the same number. */
        for (int s = 1; s < _NSIG; s++) {
                const char *name = tend_signal_name(s);
                assert_non_null(name);
                if (tend_signal_from_name(name) != s)
                        fail_msg("signal %d is named '%s', which reads back as %d", s, name,
                                 tend_signal_from_name(name));
        }
        assert_non_null(tend_signal_name(0));
        assert_non_null(tend_signal_name(-1));
        assert_non_null(tend_signal_name(1000));
}

/* ---- ladder text ------------------------------------------------------------------------- */

static void ladder_text(void **state) {
        struct tend_ladder l, d;
        char buf[256];
        assert_int_equal(tend_ladder_parse("TERM/5s,QUIT/5s,KILL", &l), 0);
        tend_ladder_default(&d);
        assert_int_equal(l.n, 3);
        assert_int_equal(d.n, 3);
        for (size_t i = 0; i < 3; i++) {
                assert_int_equal(l.step[i].signo, d.step[i].signo);
                assert_int_equal(l.step[i].wait_usec, d.step[i].wait_usec);
        }
        assert_int_equal(l.step[0].signo, SIGTERM);
        assert_int_equal(l.step[0].wait_usec, 5000000);
        assert_int_equal(l.step[1].signo, SIGQUIT);
        assert_int_equal(l.step[2].signo, SIGKILL);
        tend_ladder_format(&d, buf, sizeof buf);
        assert_string_equal(buf, "TERM/5s,QUIT/5s,KILL");

        /* Round trips, in canonical form. */
        static const struct {
                const char *in, *out;
        } trips[] = {
                { "TERM/5s,QUIT/5s,KILL", "TERM/5s,QUIT/5s,KILL" },
                { "KILL", "KILL" },
                { "INT/500ms,KILL/1s", "INT/500ms,KILL/1s" },
                { "15/1.5s,9", "TERM/1500ms,KILL" },
                { "sigterm/100us,hup/2m,KILL", "TERM/100us,HUP/120s,KILL" },
                { "TERM/0,KILL", "TERM/0s,KILL" },
                { "RTMIN/1s,KILL", NULL }, /* a number, whatever SIGRTMIN is */
        };
        for (size_t i = 0; i < sizeof trips / sizeof trips[0]; i++) {
                assert_int_equal(tend_ladder_parse(trips[i].in, &l), 0);
                tend_ladder_format(&l, buf, sizeof buf);
                if (trips[i].out)
                        assert_string_equal(buf, trips[i].out);
                /* And the text reads back as the same ladder. */
                struct tend_ladder again;
                assert_int_equal(tend_ladder_parse(buf, &again), 0);
                assert_int_equal(again.n, l.n);
                for (size_t k = 0; k < l.n; k++) {
                        assert_int_equal(again.step[k].signo, l.step[k].signo);
                        assert_int_equal(again.step[k].wait_usec, l.step[k].wait_usec);
                }
        }

        /* Errors, and the output left untouched. */
        static const char *const bad[] = {
                "", "TERM,KILL", "FOO/1s,KILL", "TERM/xs,KILL", "TERM/1s,", ",KILL",
                "TERM/1s,,KILL", "TERM/", "TERM/-1s,KILL", "/1s,KILL",
                "HUP/1s,HUP/1s,HUP/1s,HUP/1s,HUP/1s,HUP/1s,HUP/1s,HUP/1s,KILL", /* 9 steps */
                "TERM/1s/2s,KILL",
        };
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
                memset(&l, 0x5a, sizeof l);
                struct tend_ladder before = l;
                int r = tend_ladder_parse(bad[i], &l);
                if (r != -TEND_EPARSE)
                        fail_msg("'%s': got %d, expected -TEND_EPARSE", bad[i], r);
                assert_memory_equal(&l, &before, sizeof l);
        }
        assert_int_equal(tend_ladder_parse(NULL, &l), -TEND_EPARSE);
        /* Eight steps is the maximum, and fine. */
        assert_int_equal(tend_ladder_parse("HUP/1s,HUP/1s,HUP/1s,HUP/1s,HUP/1s,HUP/1s,HUP/1s,KILL",
                                           &l),
                         0);
        assert_int_equal(l.n, TEND_LADDER_MAX);

        /* A short buffer is always terminated; size 0 writes nothing. */
        tend_ladder_default(&d);
        for (size_t size = 1; size < 24; size++) {
                memset(buf, 'x', sizeof buf);
                tend_ladder_format(&d, buf, size);
                assert_true(memchr(buf, '\0', size) != NULL);
                assert_int_equal(buf[size], 'x');
                assert_memory_equal(buf, "TERM/5s,QUIT/5s,KILL", strlen(buf));
        }
        buf[0] = 'x';
        tend_ladder_format(&d, buf, 0);
        assert_int_equal(buf[0], 'x');
}

/* ---- the ladder on processes ------------------------------------------------------------- */

struct stopped {
        int stop_calls, exit_calls;
        int step;
        int stop_order, exit_order; /* 1 = called first */
        struct tend_exit ex;
};

static void on_stop(tend_proc *p, int step, void *userdata) {
        struct stopped *s = userdata;
        s->stop_calls++;
        s->step = step;
        s->stop_order = s->stop_calls + s->exit_calls;
        assert_int_equal(tend_proc_stop_step(p), step);
}

static void on_exit_stop(tend_proc *p, int err, const struct tend_exit *ex, void *userdata) {
        struct stopped *s = userdata;
        assert_int_equal(err, 0);
        s->exit_calls++;
        s->ex = *ex;
        s->exit_order = s->stop_calls + s->exit_calls;
}

/* Spawn `helper mode`, wait until it reports ready; RLIMIT_CORE 0 so a QUIT leaves no core. */
static tend_proc *spawn_ready(struct fx *f, const char *mode, tend_group *g, pid_t *ret_pid) {
        static const struct tend_rlimit nocore = { RLIMIT_CORE, { 0, 0 } };
        struct tend_spawn_opts o = { .argv = UT_ARGV(helper_path(), mode), .rlimits = &nocore,
                                     .n_rlimits = 1, .group = g };
        o.stdio[0].kind = TEND_STDIO_NULL;
        tend_proc *p = NULL;
        pid_t pid = ut_spawn_ready(f->loop, &o, &p, NULL, 0);
        assert_true(f->n_procs < 8);
        f->procs[f->n_procs++] = p;
        if (ret_pid)
                *ret_pid = pid;
        return p;
}

static void run_ladder(struct fx *f, tend_proc *p, const char *text, struct stopped *s) {
        struct tend_ladder l;
        assert_int_equal(tend_ladder_parse(text, &l), 0);
        tend_proc_on_exit(p, on_exit_stop, s);
        assert_int_equal(tend_proc_stop_step(p), -1);
        assert_int_equal(tend_proc_stop(p, &l, NULL, on_stop, s), 0);
        ut_run_until(f->loop, &s->stop_calls, 1);
        ut_run_until(f->loop, &s->exit_calls, 1);
        assert_int_equal(s->stop_calls, 1);
        assert_int_equal(s->exit_calls, 1);
        /* "When p exits, this callback runs before p's exit callback." */
        assert_int_equal(s->stop_order, 1);
        assert_int_equal(s->exit_order, 2);
}

/* A child that dies on TERM ends at step 0. */
static void stop_plain_child_step0(void **state) {
        struct fx *f = *state;
        ut_setup_ready_env();
        tend_proc *p = spawn_ready(f, "sleep-forever", NULL, NULL);
        struct stopped s = { 0 };
        uint64_t t0 = tend_now_usec();
        run_ladder(f, p, "TERM/5s,QUIT/5s,KILL", &s);
        assert_int_equal(s.step, 0);
        assert_int_equal(s.ex.signo, SIGTERM);
        assert_true(tend_now_usec() - t0 < 4u * 1000000u); /* did not wait for the timer */
        assert_int_equal(tend_loop_run(f->loop), 0);       /* the ladder's timer is gone */
}

/* A child that ignores TERM dies of QUIT: step 1, after the 200 ms wait. */
static void stop_ignore_term_step1(void **state) {
        struct fx *f = *state;
        ut_setup_ready_env();
        tend_proc *p = spawn_ready(f, "ignore-term", NULL, NULL);
        struct stopped s = { 0 };
        uint64_t t0 = tend_now_usec();
        run_ladder(f, p, "TERM/200ms,QUIT/200ms,KILL", &s);
        uint64_t took = tend_now_usec() - t0;
        assert_int_equal(s.step, 1);
        assert_int_equal(s.ex.signo, SIGQUIT);
        assert_true(took >= 200u * 1000u);
        assert_true(took < 5u * 1000000u);
}

/* A child that blocks TERM and QUIT is killed: step 2. */
static void stop_block_term_quit_step2(void **state) {
        struct fx *f = *state;
        ut_setup_ready_env();
        tend_proc *p = spawn_ready(f, "block-term-quit", NULL, NULL);
        struct stopped s = { 0 };
        uint64_t t0 = tend_now_usec();
        run_ladder(f, p, "TERM/100ms,QUIT/100ms,KILL", &s);
        assert_int_equal(s.step, 2);
        assert_int_equal(s.ex.signo, SIGKILL);
        assert_true(tend_now_usec() - t0 >= 200u * 1000u);
}

/* A stopped child acts on the signal because SIGCONT follows it: step 0, dead of TERM. */
static void stop_stopped_child_gets_cont(void **state) {
        struct fx *f = *state;
        ut_setup_ready_env();
        tend_proc *p = spawn_ready(f, "stop-self", NULL, NULL);
        /* Wait until it has really stopped (the report comes just before the raise). */
        siginfo_t si;
        memset(&si, 0, sizeof si);
        assert_int_equal(waitid((idtype_t)P_PIDFD, (id_t)tend_proc_pidfd(p), &si,
                                WSTOPPED | WNOWAIT),
                         0);
        assert_int_equal(si.si_code, CLD_STOPPED);
        struct stopped s = { 0 };
        run_ladder(f, p, "TERM/5s,KILL", &s);
        assert_int_equal(s.step, 0);
        assert_int_equal(s.ex.signo, SIGTERM);
}

/* A ladder on a process that already exited ends at once; a ladder may be restarted; bad
 * ladders are refused. */
static void stop_edge_cases(void **state) {
        struct fx *f = *state;
        ut_setup_ready_env();
        struct tend_ladder l;
        tend_ladder_default(&l);

        struct tend_spawn_opts o = { .argv = UT_ARGV(helper_path(), "exit", "4") };
        tend_proc *done = ut_spawn(f->loop, &o);
        f->procs[f->n_procs++] = done;
        struct tend_exit ex;
        assert_int_equal(tend_proc_wait(done, &ex), 0);
        struct stopped s = { 0 };
        assert_int_equal(tend_proc_stop(done, &l, NULL, on_stop, &s), 0);
        assert_int_equal(s.stop_calls, 1);
        assert_int_equal(s.step, 0);

        tend_proc *p = spawn_ready(f, "block-term-quit", NULL, NULL);
        struct tend_ladder bad = { 0 };
        assert_int_equal(tend_proc_stop(p, &bad, NULL, on_stop, &s), -EINVAL);
        bad.n = TEND_LADDER_MAX + 1;
        assert_int_equal(tend_proc_stop(p, &bad, NULL, on_stop, &s), -EINVAL);
        assert_int_equal(tend_proc_stop(p, NULL, NULL, on_stop, &s), -EINVAL);
        assert_int_equal(tend_proc_stop_step(p), -1);

        /* A slow ladder, restarted with a fast one: the fast one ends it. */
        struct stopped s1 = { 0 }, s2 = { 0 };
        assert_int_equal(tend_proc_stop(p, &l, NULL, on_stop, &s1), 0);
        assert_int_equal(tend_proc_stop_step(p), 0);
        struct tend_ladder fast;
        assert_int_equal(tend_ladder_parse("TERM/10ms,KILL", &fast), 0);
        tend_proc_on_exit(p, on_exit_stop, &s2);
        uint64_t t0 = tend_now_usec();
        assert_int_equal(tend_proc_stop(p, &fast, NULL, on_stop, &s2), 0);
        ut_run_until(f->loop, &s2.exit_calls, 1);
        assert_true(tend_now_usec() - t0 < 4u * 1000000u);
        assert_int_equal(s2.stop_calls, 1);
        assert_int_equal(s2.step, 1);
        assert_int_equal(s1.stop_calls, 0); /* the replaced ladder says nothing */
        assert_int_equal(s2.ex.signo, SIGKILL);
}

/* ---- groups ------------------------------------------------------------------------------ */

static void make_group(struct fx *f, unsigned flags) {
        /* Escaped descendants come back to us; the loop reaps them. */
        assert_int_equal(prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), 0);
        f->subreaper = true;
        assert_int_equal(tend_loop_reap_orphans(f->loop, NULL, NULL), 0);
        int r = tend_group_new(f->loop, "ladder", flags, &f->group);
        if (r < 0 && (flags & TEND_GROUP_REQUIRE_CGROUP))
                skip_with_reason("no writable cgroup v2 hierarchy here: %s", tend_strerror(r));
        assert_int_equal(r, 0);
}

/* `helper escape` in the group: its grandchild double-forks and calls setsid(); returns a
 * pidfd on it (held by the fixture) after the middle process has exited. */
static int spawn_escaped(struct fx *f) {
        struct tend_spawn_opts o = { .argv = UT_ARGV(helper_path(), "escape"),
                                     .group = f->group };
        o.stdio[0].kind = TEND_STDIO_NULL;
        tend_proc *p = NULL;
        pid_t pid = ut_spawn_ready(f->loop, &o, &p, NULL, 0);
        f->procs[f->n_procs++] = p;
        int fd = ut_pidfd_open(pid);
        assert_true(fd >= 0);
        f->pidfds[f->n_pidfds++] = fd;
        struct tend_exit ex;
        assert_int_equal(ut_wait_loop(f->loop, p, &ex), 0);
        assert_int_equal(ex.code, 0);
        assert_int_equal(getsid(pid), pid); /* really escaped its session */
        return fd;
}

/* tend_proc_stop with the group stops the main process and an escaped grandchild. */
static void group_stop_scenario(struct fx *f) {
        ut_setup_ready_env();
        int grandchild = spawn_escaped(f);
        tend_proc *p = spawn_ready(f, "sleep-forever", f->group, NULL);
        assert_true(tend_group_members(f->group, NULL, 0) >= 2);
        struct tend_ladder l;
        assert_int_equal(tend_ladder_parse("TERM/2s,KILL", &l), 0);
        struct stopped s = { 0 };
        tend_proc_on_exit(p, on_exit_stop, &s);
        assert_int_equal(tend_proc_stop(p, &l, f->group, on_stop, &s), 0);
        ut_run_until(f->loop, &s.stop_calls, 1);
        ut_run_until(f->loop, &s.exit_calls, 1);
        assert_int_equal(s.step, 0);
        assert_int_equal(s.ex.signo, SIGTERM);
        /* The ladder ended only once the group was empty: the escaped one is gone too. */
        assert_true(tend_group_empty(f->group));
        assert_true(ut_pidfd_ended(grandchild, 5000));
}

static void stop_with_cgroup_kills_escaped(void **state) {
        struct fx *f = *state;
        make_group(f, TEND_GROUP_REQUIRE_CGROUP);
        assert_int_equal(tend_group_kind(f->group), TEND_GROUP_CGROUP);
        group_stop_scenario(f);
}

static void stop_with_pgroup_kills_escaped(void **state) {
        struct fx *f = *state;
        make_group(f, TEND_GROUP_NO_CGROUP);
        assert_int_equal(tend_group_kind(f->group), TEND_GROUP_PGROUP);
        group_stop_scenario(f);
}

struct group_stopped {
        int calls;
        int step;
        tend_group *g;
};

static void on_group_stop(tend_group *g, int step, void *userdata) {
        struct group_stopped *s = userdata;
        assert_ptr_equal(g, s->g);
        s->calls++;
        s->step = step;
}

/* Leftovers after the main child is gone: an escaped daemon (dies on TERM) and a process
 * that ignores TERM (whose handle was dropped). tend_group_stop ends when the group is
 * empty, at the step that emptied it. */
static void leftovers_scenario(struct fx *f) {
        ut_setup_ready_env();
        int escaped = spawn_escaped(f);
        struct tend_ladder l;
        assert_int_equal(tend_ladder_parse("TERM/5s,KILL", &l), 0);
        struct group_stopped s = { .g = f->group };
        assert_int_equal(tend_group_stop(f->group, &l, on_group_stop, &s), 0);
        ut_run_until(f->loop, &s.calls, 1);
        assert_int_equal(s.step, 0);
        assert_true(ut_pidfd_ended(escaped, 5000));
        assert_true(tend_group_empty(f->group));

        /* One that ignores TERM: only the second step ends it. */
        pid_t stubborn = 0;
        tend_proc *p = spawn_ready(f, "ignore-term", f->group, &stubborn);
        int fd = ut_pidfd_open(stubborn);
        assert_true(fd >= 0);
        f->pidfds[f->n_pidfds++] = fd;
        /* Drop the handle: now it is a leftover the orphan reaper will reap. */
        f->procs[--f->n_procs] = NULL;
        tend_proc_free(p);
        assert_int_equal(tend_ladder_parse("TERM/200ms,KILL", &l), 0);
        struct group_stopped s2 = { .g = f->group };
        uint64_t t0 = tend_now_usec();
        assert_int_equal(tend_group_stop(f->group, &l, on_group_stop, &s2), 0);
        ut_run_until(f->loop, &s2.calls, 1);
        assert_int_equal(s2.step, 1);
        assert_true(tend_now_usec() - t0 >= 200u * 1000u);
        assert_true(ut_pidfd_ended(fd, 5000));
        assert_true(tend_group_empty(f->group));

        /* An empty group: the ladder ends at once. */
        struct group_stopped s3 = { .g = f->group };
        assert_int_equal(tend_group_stop(f->group, &l, on_group_stop, &s3), 0);
        ut_run_until(f->loop, &s3.calls, 1);
        assert_int_equal(s3.step, 0);
}

static void group_stop_leftovers_cgroup(void **state) {
        struct fx *f = *state;
        make_group(f, TEND_GROUP_REQUIRE_CGROUP);
        leftovers_scenario(f);
}

static void group_stop_leftovers_pgroup(void **state) {
        struct fx *f = *state;
        make_group(f, TEND_GROUP_NO_CGROUP);
        leftovers_scenario(f);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
static const struct CMUnitTest tests[] = {
        T(duration_parse),
        T(signal_names),
        T(ladder_text),
        T(stop_plain_child_step0),
        T(stop_ignore_term_step1),
        T(stop_block_term_quit_step2),
        T(stop_stopped_child_gets_cont),
        T(stop_edge_cases),
        T(stop_with_cgroup_kills_escaped),
        T(stop_with_pgroup_kills_escaped),
        T(group_stop_leftovers_cgroup),
        T(group_stop_leftovers_pgroup),
};

TEND_TEST_MAIN(tests)
