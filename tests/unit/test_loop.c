/* test_loop.c — the event loop on its own: timers (order, restart, stop, freed or started from
 * a callback), fd watches (level-triggered, paused, freed by another watch of the same
 * batch), signals through the signalfd (raise, kill, two handlers, the mask given back), the
 * non-blocking run_once, the embeddable loop fd and tend_loop_run's end.
 *
 * Every wait is on an event (the loop, a pipe, poll on the loop fd) and bounded by the
 * harness alarm. */
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sys/epoll.h>

#include "harness.h"
#include "tend.h"
#include "unit_util.h"

static int setup(void **state) {
        tend_loop *loop = NULL;
        test_alarm(30);
        if (tend_loop_new(&loop) < 0)
                return -1;
        *state = loop;
        return 0;
}

static int teardown(void **state) {
        tend_loop_free(*state);
        alarm(0);
        return 0;
}

/* ---- timers ------------------------------------------------------------------------------ */

#define N_TIMERS 64

struct timed {
        tend_timer *t;
        uint64_t lo, hi; /* the deadline lies in [lo, hi]: now before and after start */
        uint64_t fired_at;
        int order;       /* 1-based position in the firing order */
        int *counter;
};

static void on_timed(tend_timer *t, void *userdata) {
        struct timed *x = userdata;
        assert_ptr_equal(t, x->t);
        assert_int_equal(x->order, 0);
        x->fired_at = tend_now_usec();
        x->order = ++*x->counter;
        assert_false(tend_timer_active(t));
}

/* Many timers started in a scrambled order of delays (some equal, some zero) fire in the
 * order of their deadlines, none early, each once. */
static void timers_fire_in_deadline_order(void **state) {
        tend_loop *loop = *state;
        struct timed x[N_TIMERS];
        int fired = 0;
        for (int i = 0; i < N_TIMERS; i++) {
                /* 0..40 ms, scrambled, with repeats */
                uint64_t delay = (uint64_t)((i * 37) % 41) * 1000u;
                x[i] = (struct timed){ .counter = &fired };
                assert_int_equal(tend_timer_new(loop, on_timed, &x[i], &x[i].t), 0);
                assert_false(tend_timer_active(x[i].t));
                x[i].lo = tend_now_usec() + delay;
                tend_timer_start(x[i].t, delay);
                x[i].hi = tend_now_usec() + delay;
                assert_true(tend_timer_active(x[i].t));
        }
        ut_run_until(loop, &fired, N_TIMERS);
        for (int i = 0; i < N_TIMERS; i++) {
                assert_true(x[i].order > 0);
                if (x[i].fired_at < x[i].lo)
                        fail_msg("timer %d fired %llu us early", i,
                                 (unsigned long long)(x[i].lo - x[i].fired_at));
                for (int j = 0; j < N_TIMERS; j++)
                        if (x[i].hi < x[j].lo && x[i].order > x[j].order)
                                fail_msg("timer %d (deadline <= %llu) fired after timer %d "
                                         "(deadline >= %llu)",
                                         i, (unsigned long long)x[i].hi, j,
                                         (unsigned long long)x[j].lo);
        }
        /* Nothing fires twice: the loop has nothing left and returns at once. */
        assert_int_equal(tend_loop_run(loop), 0);
        assert_int_equal(fired, N_TIMERS);
        for (int i = 0; i < N_TIMERS; i++)
                tend_timer_free(x[i].t);
}

struct counted {
        tend_timer *t;
        int calls;
        int repeat;     /* restart from the callback this many times */
        uint64_t delay;
};

static void on_counted(tend_timer *t, void *userdata) {
        struct counted *c = userdata;
        c->calls++;
        if (c->calls <= c->repeat)
                tend_timer_start(t, c->delay);
}

/* start on a running timer re-arms it: a far deadline replaced by a near one fires once, at
 * the near one; a near one replaced by a far one does not fire at the near one. */
static void timer_restart_rearms(void **state) {
        tend_loop *loop = *state;
        struct counted a = { 0 }, b = { 0 }, marker = { 0 };
        assert_int_equal(tend_timer_new(loop, on_counted, &a, &a.t), 0);
        assert_int_equal(tend_timer_new(loop, on_counted, &b, &b.t), 0);
        assert_int_equal(tend_timer_new(loop, on_counted, &marker, &marker.t), 0);

        uint64_t t0 = tend_now_usec();
        tend_timer_start(a.t, 3600u * 1000000u);
        tend_timer_start(a.t, 1000u);
        tend_timer_start(b.t, 1000u);
        tend_timer_start(b.t, 3600u * 1000000u);
        tend_timer_start(marker.t, 50u * 1000u);
        ut_run_until(loop, &marker.calls, 1);
        assert_true(tend_now_usec() - t0 >= 50u * 1000u);
        assert_int_equal(a.calls, 1);
        assert_int_equal(b.calls, 0);
        assert_false(tend_timer_active(a.t));
        assert_true(tend_timer_active(b.t));

        /* A timer restarted from its own callback runs again (a periodic timer). */
        a.repeat = 3;
        a.calls = 0;
        a.delay = 1000u;
        tend_timer_start(a.t, 0);
        ut_run_until(loop, &a.calls, 4);
        assert_false(tend_timer_active(a.t));
        (void)tend_loop_run_once(loop, 0);
        assert_int_equal(a.calls, 4);

        tend_timer_free(a.t);
        tend_timer_free(b.t);
        tend_timer_free(marker.t);
}

/* A stopped timer never fires; stop on an idle timer is harmless; a stopped timer can be
 * started again. */
static void timer_stop(void **state) {
        tend_loop *loop = *state;
        struct counted a = { 0 }, b = { 0 };
        assert_int_equal(tend_timer_new(loop, on_counted, &a, &a.t), 0);
        assert_int_equal(tend_timer_new(loop, on_counted, &b, &b.t), 0);
        tend_timer_stop(a.t); /* never started */
        tend_timer_start(a.t, 1000u);
        tend_timer_start(b.t, 30u * 1000u);
        tend_timer_stop(a.t);
        tend_timer_stop(a.t);
        assert_false(tend_timer_active(a.t));
        ut_run_until(loop, &b.calls, 1);
        assert_int_equal(a.calls, 0);

        /* The earliest timer stopped: the next one still fires at its time. */
        tend_timer_start(a.t, 1000u);
        tend_timer_start(b.t, 20u * 1000u);
        tend_timer_stop(a.t);
        ut_run_until(loop, &b.calls, 2);
        assert_int_equal(a.calls, 0);
        /* Nothing active any more: run returns. */
        assert_int_equal(tend_loop_run(loop), 0);

        tend_timer_start(a.t, 0);
        ut_run_until(loop, &a.calls, 1);
        tend_timer_free(a.t);
        tend_timer_free(b.t);
}

struct self_free {
        tend_timer *t;
        struct self_free *other; /* free that one's timer too, or NULL */
        int *freed;
};

static void on_self_free(tend_timer *t, void *userdata) {
        struct self_free *s = userdata;
        assert_ptr_equal(t, s->t);
        if (s->other && s->other->t)
                s->other->t = tend_timer_free(s->other->t);
        s->t = tend_timer_free(t);
        ++*s->freed;
}

/* A timer freed from its own callback, and one freed from another's callback while both were
 * due in the same dispatch: nothing fires after its free (ASan checks the memory). */
static void timer_freed_from_callback(void **state) {
        tend_loop *loop = *state;
        int freed = 0;
        struct self_free s[4] = { { 0 } };
        for (int i = 0; i < 4; i++) {
                s[i].freed = &freed;
                assert_int_equal(tend_timer_new(loop, on_self_free, &s[i], &s[i].t), 0);
        }
        /* s[0] and s[1] are due at once, so one dispatch handles both; whichever runs first
         * frees the other, which must then not run. */
        s[0].other = &s[1];
        s[1].other = &s[0];
        tend_timer_start(s[0].t, 0);
        tend_timer_start(s[1].t, 0);
        tend_timer_start(s[2].t, 2000u);
        tend_timer_start(s[3].t, 4000u);
        assert_int_equal(tend_loop_run(loop), 0);
        assert_int_equal(freed, 3);
        for (int i = 0; i < 4; i++)
                assert_null(s[i].t);
}

struct spawner {
        tend_loop *loop;
        tend_timer *child;
        int parent_calls, child_calls;
        uint64_t child_at;
};

static void on_child_timer(tend_timer *t, void *userdata) {
        struct spawner *s = userdata;
        s->child_calls++;
        s->child_at = tend_now_usec();
}

static void on_parent_timer(tend_timer *t, void *userdata) {
        struct spawner *s = userdata;
        s->parent_calls++;
        /* Make and start a new timer from inside the dispatch; with zero delay it is due at
         * once and must not be lost (nor must a later one). */
        assert_int_equal(tend_timer_new(s->loop, on_child_timer, s, &s->child), 0);
        tend_timer_start(s->child, s->parent_calls == 1 ? 0 : 10u * 1000u);
}

static void timer_started_from_callback(void **state) {
        tend_loop *loop = *state;
        struct spawner s = { .loop = loop };
        tend_timer *parent;
        assert_int_equal(tend_timer_new(loop, on_parent_timer, &s, &parent), 0);

        tend_timer_start(parent, 1000u);
        assert_int_equal(tend_loop_run(loop), 0); /* ends when both have fired */
        assert_int_equal(s.parent_calls, 1);
        assert_int_equal(s.child_calls, 1);
        s.child = tend_timer_free(s.child);

        /* Second round: the new timer has a deadline later than anything else pending. */
        uint64_t t0 = tend_now_usec();
        tend_timer_start(parent, 1000u);
        assert_int_equal(tend_loop_run(loop), 0);
        assert_int_equal(s.parent_calls, 2);
        assert_int_equal(s.child_calls, 2);
        assert_true(s.child_at - t0 >= 11u * 1000u);
        s.child = tend_timer_free(s.child);
        tend_timer_free(parent);
}

/* Many timers made and freed: the heap grows and the loop stays consistent. */
static void timer_many_created_and_freed(void **state) {
        tend_loop *loop = *state;
        enum { N = 1000 };
        static struct counted c[N];
        memset(c, 0, sizeof c);
        for (int i = 0; i < N; i++) {
                assert_int_equal(tend_timer_new(loop, on_counted, &c[i], &c[i].t), 0);
                tend_timer_start(c[i].t, (uint64_t)(N - i) * 10u);
        }
        /* Free every third while armed. */
        int want = 0;
        for (int i = 0; i < N; i++) {
                if (i % 3 == 0)
                        c[i].t = tend_timer_free(c[i].t);
                else
                        want++;
        }
        assert_int_equal(tend_loop_run(loop), 0);
        int got = 0;
        for (int i = 0; i < N; i++) {
                got += c[i].calls;
                assert_int_equal(c[i].calls, i % 3 == 0 ? 0 : 1);
                tend_timer_free(c[i].t);
        }
        assert_int_equal(got, want);
}

/* ---- watches ----------------------------------------------------------------------------- */

struct piped {
        int fds[2];
        tend_watch *w;
        int calls;
        uint32_t revents;
        char got[64];
        size_t len;
        bool drain;               /* read what is there in the callback */
        struct piped *free_other; /* free that one's watch (and close its fds) */
};

static void on_piped(tend_watch *w, int fd, uint32_t revents, void *userdata) {
        struct piped *p = userdata;
        assert_ptr_equal(w, p->w);
        assert_int_equal(fd, p->fds[0]);
        p->calls++;
        p->revents = revents;
        if (p->drain) {
                ssize_t n = read(fd, p->got + p->len, sizeof p->got - 1 - p->len);
                assert_true(n >= 0);
                p->len += (size_t)n;
                p->got[p->len] = '\0';
        }
        if (p->free_other && p->free_other->w) {
                struct piped *o = p->free_other;
                o->w = tend_watch_free(o->w);
                close(o->fds[0]);
                close(o->fds[1]);
                o->fds[0] = o->fds[1] = -1;
        }
}

static void piped_open(struct piped *p) {
        assert_int_equal(pipe2(p->fds, O_CLOEXEC | O_NONBLOCK), 0);
}

static void piped_close(struct piped *p) {
        p->w = tend_watch_free(p->w);
        if (p->fds[0] >= 0)
                close(p->fds[0]);
        if (p->fds[1] >= 0)
                close(p->fds[1]);
}

/* A readable pipe calls its watch with EPOLLIN; level-triggered: it is called again while
 * data is left; quiet once drained. */
static void watch_pipe_readable(void **state) {
        tend_loop *loop = *state;
        struct piped p = { .drain = false };
        piped_open(&p);
        assert_int_equal(tend_watch_new(loop, p.fds[0], EPOLLIN, on_piped, &p, &p.w), 0);
        assert_int_equal(tend_loop_run_once(loop, 0), 0);
        assert_int_equal(p.calls, 0);

        assert_int_equal(write(p.fds[1], "hello", 5), 5);
        assert_int_equal(tend_loop_run_once(loop, UINT64_MAX), 1);
        assert_int_equal(p.calls, 1);
        assert_true(p.revents & EPOLLIN);
        /* Not read: level-triggered, it comes again. */
        assert_int_equal(tend_loop_run_once(loop, UINT64_MAX), 1);
        assert_int_equal(p.calls, 2);

        p.drain = true;
        assert_int_equal(tend_loop_run_once(loop, UINT64_MAX), 1);
        assert_string_equal(p.got, "hello");
        assert_int_equal(tend_loop_run_once(loop, 0), 0);
        assert_int_equal(p.calls, 3);

        /* The writer closes: EPOLLHUP (with or without EPOLLIN) wakes the watch. */
        close(p.fds[1]);
        p.fds[1] = -1;
        assert_int_equal(tend_loop_run_once(loop, UINT64_MAX), 1);
        assert_true(p.revents & EPOLLHUP);
        piped_close(&p);

        /* Bad arguments. */
        tend_watch *w = NULL;
        assert_int_equal(tend_watch_new(loop, -1, EPOLLIN, on_piped, &p, &w), -EINVAL);
        assert_int_equal(tend_watch_new(loop, 0, EPOLLIN, NULL, &p, &w), -EINVAL);
        assert_null(w);
        assert_null(tend_watch_free(NULL));
}

/* set_events(0) pauses a watch: data waits, no call, and the loop does not count it as
 * something that can wake it; set_events(EPOLLIN) resumes it. */
static void watch_pause_resume(void **state) {
        tend_loop *loop = *state;
        struct piped p = { .drain = true };
        piped_open(&p);
        assert_int_equal(tend_watch_new(loop, p.fds[0], EPOLLIN, on_piped, &p, &p.w), 0);
        assert_int_equal(tend_watch_set_events(p.w, 0), 0);
        assert_int_equal(write(p.fds[1], "x", 1), 1);
        assert_int_equal(tend_loop_run_once(loop, 0), 0);
        assert_int_equal(tend_loop_run_once(loop, 20u * 1000u), 0);
        assert_int_equal(p.calls, 0);
        /* Paused: nothing is active, so run returns at once instead of waiting forever. */
        assert_int_equal(tend_loop_run(loop), 0);
        assert_int_equal(p.calls, 0);

        assert_int_equal(tend_watch_set_events(p.w, EPOLLIN), 0);
        assert_int_equal(tend_loop_run_once(loop, UINT64_MAX), 1);
        assert_int_equal(p.calls, 1);
        assert_string_equal(p.got, "x");
        /* Setting the same events again is a no-op; pausing twice is too. */
        assert_int_equal(tend_watch_set_events(p.w, EPOLLIN), 0);
        assert_int_equal(tend_watch_set_events(p.w, 0), 0);
        assert_int_equal(tend_watch_set_events(p.w, 0), 0);
        /* A watch made paused is not active either. */
        struct piped q = { .drain = true };
        piped_open(&q);
        assert_int_equal(tend_watch_new(loop, q.fds[0], 0, on_piped, &q, &q.w), 0);
        assert_int_equal(write(q.fds[1], "y", 1), 1);
        assert_int_equal(tend_loop_run(loop), 0);
        assert_int_equal(q.calls, 0);
        piped_close(&q);
        piped_close(&p);
}

/* Two watches ready in the same epoll batch; whichever runs first frees the other (and
 * closes its fd): the other is not called. */
static void watch_freed_by_other_in_same_batch(void **state) {
        tend_loop *loop = *state;
        struct piped a = { .drain = true }, b = { .drain = true };
        piped_open(&a);
        piped_open(&b);
        a.free_other = &b;
        b.free_other = &a;
        assert_int_equal(tend_watch_new(loop, a.fds[0], EPOLLIN, on_piped, &a, &a.w), 0);
        assert_int_equal(tend_watch_new(loop, b.fds[0], EPOLLIN, on_piped, &b, &b.w), 0);
        assert_int_equal(write(a.fds[1], "a", 1), 1);
        assert_int_equal(write(b.fds[1], "b", 1), 1);
        /* Both are reported by the one epoll_wait. */
        assert_int_equal(tend_loop_run_once(loop, UINT64_MAX), 2);
        assert_int_equal(a.calls + b.calls, 1);
        struct piped *alive = a.calls ? &a : &b;
        struct piped *gone = a.calls ? &b : &a;
        assert_null(gone->w);
        assert_non_null(alive->w);
        assert_int_equal(tend_loop_run_once(loop, 0), 0);
        piped_close(alive);
}

struct self_free_watch {
        int fds[2];
        tend_watch *w;
        int calls;
};

static void on_watch_self_free(tend_watch *w, int fd, uint32_t revents, void *userdata) {
        struct self_free_watch *s = userdata;
        s->calls++;
        s->w = tend_watch_free(w);
}

/* A watch freeing itself in its callback ends tend_loop_run (nothing is left). */
static void watch_free_self_ends_run(void **state) {
        tend_loop *loop = *state;
        struct self_free_watch s = { .calls = 0 };
        assert_int_equal(pipe2(s.fds, O_CLOEXEC), 0);
        assert_int_equal(tend_watch_new(loop, s.fds[0], EPOLLIN, on_watch_self_free, &s, &s.w),
                         0);
        assert_int_equal(write(s.fds[1], "z", 1), 1);
        assert_int_equal(tend_loop_run(loop), 0);
        assert_int_equal(s.calls, 1);
        assert_null(s.w);
        close(s.fds[0]);
        close(s.fds[1]);
}

/* ---- signals ----------------------------------------------------------------------------- */

static bool blocked(int signo) {
        sigset_t cur;
        assert_int_equal(pthread_sigmask(SIG_SETMASK, NULL, &cur), 0);
        return sigismember(&cur, signo) == 1;
}

struct sig_seen {
        tend_signal *s;
        int calls;
        uint32_t last_signo;
        uint32_t last_pid;
        int32_t last_code;
};

static void on_sig(tend_signal *s, const struct signalfd_siginfo *info, void *userdata) {
        struct sig_seen *x = userdata;
        assert_ptr_equal(s, x->s);
        x->calls++;
        x->last_signo = info->ssi_signo;
        x->last_pid = info->ssi_pid;
        x->last_code = info->ssi_code;
}

/* SIGUSR1 raised with raise() (thread-directed) and with kill(getpid()) (process-directed)
 * arrives through the loop, with its sender; the mask is given back when the handler goes. */
static void signal_delivered_through_loop(void **state) {
        tend_loop *loop = *state;
        assert_false(blocked(SIGUSR1));
        struct sig_seen x = { 0 };
        assert_int_equal(tend_signal_new(loop, SIGUSR1, on_sig, &x, &x.s), 0);
        assert_true(blocked(SIGUSR1));

        assert_int_equal(raise(SIGUSR1), 0);
        ut_run_until(loop, &x.calls, 1);
        assert_int_equal(x.last_signo, SIGUSR1);
        assert_int_equal(x.last_pid, (uint32_t)getpid());
        assert_int_equal(x.last_code, SI_TKILL);

        assert_int_equal(kill(getpid(), SIGUSR1), 0);
        ut_run_until(loop, &x.calls, 2);
        assert_int_equal(x.last_signo, SIGUSR1);
        assert_int_equal(x.last_code, SI_USER);
        assert_int_equal(x.last_pid, (uint32_t)getpid());

        /* A signal is counted once: nothing more after it was read. */
        assert_int_equal(tend_loop_run_once(loop, 0), 0);
        assert_int_equal(x.calls, 2);

        x.s = tend_signal_free(x.s);
        assert_false(blocked(SIGUSR1));

        /* Bad numbers. */
        tend_signal *s = NULL;
        assert_int_equal(tend_signal_new(loop, 0, on_sig, &x, &s), -EINVAL);
        assert_int_equal(tend_signal_new(loop, SIGKILL, on_sig, &x, &s), -EINVAL);
        assert_int_equal(tend_signal_new(loop, SIGSTOP, on_sig, &x, &s), -EINVAL);
        assert_int_equal(tend_signal_new(loop, _NSIG, on_sig, &x, &s), -EINVAL);
        assert_int_equal(tend_signal_new(loop, SIGUSR1, NULL, &x, &s), -EINVAL);
        assert_null(s);
        assert_null(tend_signal_free(NULL));
}

/* Two handlers for one signal: each is called once per signal. Freeing one keeps the signal
 * blocked for the other; freeing the last unblocks it. */
static void signal_two_handlers(void **state) {
        tend_loop *loop = *state;
        struct sig_seen a = { 0 }, b = { 0 };
        assert_int_equal(tend_signal_new(loop, SIGUSR1, on_sig, &a, &a.s), 0);
        assert_int_equal(tend_signal_new(loop, SIGUSR1, on_sig, &b, &b.s), 0);
        assert_int_equal(raise(SIGUSR1), 0);
        ut_run_until(loop, &a.calls, 1);
        ut_run_until(loop, &b.calls, 1);
        assert_int_equal(tend_loop_run_once(loop, 0), 0);
        assert_int_equal(a.calls, 1);
        assert_int_equal(b.calls, 1);

        a.s = tend_signal_free(a.s);
        assert_true(blocked(SIGUSR1));
        assert_int_equal(kill(getpid(), SIGUSR1), 0);
        ut_run_until(loop, &b.calls, 2);
        assert_int_equal(a.calls, 1);

        b.s = tend_signal_free(b.s);
        assert_false(blocked(SIGUSR1));
}

struct sig_free_other {
        tend_signal *s;
        struct sig_free_other *other;
        int calls;
};

static void on_sig_free_other(tend_signal *s, const struct signalfd_siginfo *info,
                              void *userdata) {
        struct sig_free_other *x = userdata;
        x->calls++;
        if (x->other->s)
                x->other->s = tend_signal_free(x->other->s);
        x->s = tend_signal_free(x->s);
}

/* A handler that frees itself and the other handler of the same signal, from inside the
 * dispatch: the other is not called (ASan checks nothing is touched after its free). */
static void signal_freed_from_handler(void **state) {
        tend_loop *loop = *state;
        struct sig_free_other a = { 0 }, b = { 0 };
        a.other = &b;
        b.other = &a;
        assert_int_equal(tend_signal_new(loop, SIGUSR2, on_sig_free_other, &a, &a.s), 0);
        assert_int_equal(tend_signal_new(loop, SIGUSR2, on_sig_free_other, &b, &b.s), 0);
        assert_int_equal(raise(SIGUSR2), 0);
        int total = 0;
        uint64_t end = tend_now_usec() + UT_WAIT_USEC;
        while ((total = a.calls + b.calls) == 0 && tend_now_usec() < end)
                assert_true(tend_loop_run_once(loop, 500u * 1000u) >= 0);
        assert_int_equal(a.calls + b.calls, 1);
        assert_null(a.s);
        assert_null(b.s);
        assert_false(blocked(SIGUSR2));
}

struct batch_seen {
        tend_signal *s[3];
        int calls[_NSIG];
        int total;
};

static void on_batch_sig(tend_signal *s, const struct signalfd_siginfo *info, void *userdata) {
        struct batch_seen *x = userdata;
        int signo = (int)info->ssi_signo;
        assert_true(signo > 0 && signo < _NSIG);
        /* Each handle gets its own signal: s[i] was made for the i-th number. */
        static const int order[] = { SIGUSR1, SIGUSR2, SIGHUP };
        bool mine = false;
        for (int i = 0; i < 3; i++)
                if (order[i] == signo)
                        mine = s == x->s[i];
        assert_true(mine);
        x->calls[signo]++;
        x->total++;
}

/* tend_signals_new() blocks all its signals in one go and each handle gets its own signal;
 * a bad number anywhere in the list makes none and leaves the mask alone;
 * tend_signals_free() unblocks what no other handler still needs. (`tend run` forwards its
 * eight signals this way.) */
static void signal_batch(void **state) {
        tend_loop *loop = *state;
        static const int signos[] = { SIGUSR1, SIGUSR2, SIGHUP };
        assert_false(blocked(SIGUSR1) || blocked(SIGUSR2) || blocked(SIGHUP));

        tend_signal *bad[2] = { NULL, NULL };
        static const int with_kill[] = { SIGUSR1, SIGKILL };
        struct batch_seen x = { 0 };
        assert_int_equal(tend_signals_new(loop, with_kill, 2, on_batch_sig, &x, bad), -EINVAL);
        assert_null(bad[0]);
        assert_null(bad[1]);
        assert_false(blocked(SIGUSR1));
        assert_int_equal(tend_signals_new(loop, signos, 3, NULL, &x, x.s), -EINVAL);

        assert_int_equal(tend_signals_new(loop, signos, 3, on_batch_sig, &x, x.s), 0);
        assert_true(blocked(SIGUSR1) && blocked(SIGUSR2) && blocked(SIGHUP));
        /* A second handler for one of them, made the usual way. */
        struct sig_seen other = { 0 };
        assert_int_equal(tend_signal_new(loop, SIGUSR1, on_sig, &other, &other.s), 0);

        assert_int_equal(raise(SIGUSR1), 0);
        assert_int_equal(raise(SIGUSR2), 0);
        assert_int_equal(kill(getpid(), SIGHUP), 0);
        ut_run_until(loop, &x.total, 3);
        ut_run_until(loop, &other.calls, 1);
        assert_int_equal(tend_loop_run_once(loop, 0), 0);
        assert_int_equal(x.calls[SIGUSR1], 1);
        assert_int_equal(x.calls[SIGUSR2], 1);
        assert_int_equal(x.calls[SIGHUP], 1);
        assert_int_equal(other.calls, 1);

        tend_signals_free(x.s, 3);
        assert_null(x.s[0]);
        assert_null(x.s[1]);
        assert_null(x.s[2]);
        assert_true(blocked(SIGUSR1)); /* the other handler still needs it */
        assert_false(blocked(SIGUSR2) || blocked(SIGHUP));
        assert_int_equal(raise(SIGUSR1), 0);
        ut_run_until(loop, &other.calls, 2);
        assert_int_equal(x.total, 3);
        other.s = tend_signal_free(other.s);
        assert_false(blocked(SIGUSR1));

        tend_signal *none[2] = { NULL, NULL };
        tend_signals_free(none, 2); /* NULL entries are skipped */
        assert_int_equal(tend_signals_new(loop, signos, 0, on_batch_sig, &x, NULL), 0);
}

/* The timerfd comes with the first timer: a loop that has run without one still fires a
 * timer made afterwards. */
static void timer_made_after_running(void **state) {
        tend_loop *loop = *state;
        assert_int_equal(tend_loop_run_once(loop, 0), 0);
        int fired = 0;
        struct timed x = { .counter = &fired };
        assert_int_equal(tend_timer_new(loop, on_timed, &x, &x.t), 0);
        tend_timer_start(x.t, 1000u);
        ut_run_until(loop, &fired, 1);
        assert_int_equal(x.order, 1);
        tend_timer_free(x.t);
}

static void on_chld_orphan(pid_t pid, int status, void *userdata) {
}

/* The mask is given back: a signal the caller had blocked before the loop existed stays
 * blocked after the handler goes; one the loop blocked is unblocked after its handler is
 * freed, and SIGCHLD blocked by orphan reaping is unblocked by tend_loop_free. */
static void signal_mask_restored(void **state) {
        tend_loop *loop = *state;
        assert_null(tend_loop_free(loop));
        *state = NULL;

        sigset_t usr2, before, after;
        sigemptyset(&usr2);
        sigaddset(&usr2, SIGUSR2);
        assert_int_equal(pthread_sigmask(SIG_BLOCK, &usr2, &before), 0);
        assert_false(sigismember(&before, SIGCHLD) == 1);
        assert_false(sigismember(&before, SIGUSR1) == 1);

        assert_int_equal(tend_loop_new(&loop), 0);
        *state = loop;
        struct sig_seen a = { 0 }, b = { 0 };
        assert_int_equal(tend_signal_new(loop, SIGUSR2, on_sig, &a, &a.s), 0);
        assert_int_equal(tend_signal_new(loop, SIGUSR1, on_sig, &b, &b.s), 0);
        assert_int_equal(tend_loop_reap_orphans(loop, on_chld_orphan, NULL), 0);
        assert_true(blocked(SIGUSR1) && blocked(SIGUSR2) && blocked(SIGCHLD));

        a.s = tend_signal_free(a.s);
        b.s = tend_signal_free(b.s);
        assert_true(blocked(SIGUSR2)); /* the caller's own block */
        assert_false(blocked(SIGUSR1));
        assert_true(blocked(SIGCHLD)); /* the orphan reaper still holds it */

        *state = tend_loop_free(loop);
        assert_true(blocked(SIGUSR2));
        assert_false(blocked(SIGCHLD));
        assert_false(blocked(SIGUSR1));

        /* The whole mask is as it was, save the caller's own SIGUSR2. */
        assert_int_equal(pthread_sigmask(SIG_SETMASK, &before, &after), 0);
        sigdelset(&after, SIGUSR2);
        for (int s = 1; s < _NSIG; s++)
                if ((sigismember(&after, s) == 1) != (sigismember(&before, s) == 1))
                        fail_msg("signal %d: blocked %d before, %d after", s,
                                 sigismember(&before, s), sigismember(&after, s));
        assert_false(blocked(SIGUSR2));
        assert_int_equal(tend_loop_new(&loop), 0);
        *state = loop;
}

/* Two loops in two threads are independent: each blocks and reads its own thread's signal. */
struct thread_loop {
        int signo;
        int calls;
        int result;
};

static void on_thread_sig(tend_signal *s, const struct signalfd_siginfo *info, void *userdata) {
        struct thread_loop *t = userdata;
        if ((int)info->ssi_signo == t->signo)
                t->calls++;
}

static void *thread_loop_main(void *arg) {
        struct thread_loop *t = arg;
        tend_loop *loop = NULL;
        tend_signal *s = NULL;
        t->result = -1;
        if (tend_loop_new(&loop) < 0)
                return NULL;
        if (tend_signal_new(loop, t->signo, on_thread_sig, t, &s) == 0) {
                /* Thread-directed: only this thread's signalfd can read it. */
                pthread_kill(pthread_self(), t->signo);
                while (t->calls == 0)
                        if (tend_loop_run_once(loop, 5u * 1000000u) <= 0)
                                break;
                t->result = t->calls == 1 ? 0 : -2;
                tend_signal_free(s);
        }
        tend_loop_free(loop);
        return NULL;
}

static void signal_loops_in_threads(void **state) {
        struct thread_loop a = { .signo = SIGUSR1 }, b = { .signo = SIGUSR2 };
        pthread_t ta, tb;
        assert_int_equal(pthread_create(&ta, NULL, thread_loop_main, &a), 0);
        assert_int_equal(pthread_create(&tb, NULL, thread_loop_main, &b), 0);
        assert_int_equal(pthread_join(ta, NULL), 0);
        assert_int_equal(pthread_join(tb, NULL), 0);
        assert_int_equal(a.result, 0);
        assert_int_equal(b.result, 0);
        assert_false(blocked(SIGUSR1));
        assert_false(blocked(SIGUSR2));
}

/* ---- running ----------------------------------------------------------------------------- */

/* run_once with a zero timeout returns at once even with a far timer pending. */
static void run_once_zero_timeout(void **state) {
        tend_loop *loop = *state;
        struct counted c = { 0 };
        assert_int_equal(tend_timer_new(loop, on_counted, &c, &c.t), 0);
        tend_timer_start(c.t, 3600u * 1000000u);
        uint64_t t0 = tend_now_usec();
        for (int i = 0; i < 100; i++)
                assert_int_equal(tend_loop_run_once(loop, 0), 0);
        assert_true(tend_now_usec() - t0 < 1000u * 1000u);
        assert_int_equal(c.calls, 0);
        /* A bounded wait with nothing due returns after about the timeout, with 0. */
        t0 = tend_now_usec();
        assert_int_equal(tend_loop_run_once(loop, 20u * 1000u), 0);
        assert_true(tend_now_usec() - t0 >= 19u * 1000u);
        tend_timer_free(c.t);
}

/* The loop fd, embedded in poll(): not readable while nothing is due, readable once a timer
 * has expired; run_once(0) then dispatches it and the fd is quiet again. */
static void loop_fd_embeds_in_poll(void **state) {
        tend_loop *loop = *state;
        int fd = tend_loop_fd(loop);
        assert_true(fd >= 0);
        assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
        struct counted c = { 0 };
        assert_int_equal(tend_timer_new(loop, on_counted, &c, &c.t), 0);
        tend_timer_start(c.t, 3600u * 1000000u);
        struct pollfd pfd = { .fd = fd, .events = POLLIN };
        assert_int_equal(poll(&pfd, 1, 0), 0);

        tend_timer_start(c.t, 5u * 1000u);
        assert_int_equal(poll(&pfd, 1, 10000), 1);
        assert_true(pfd.revents & POLLIN);
        assert_int_equal(c.calls, 0);
        assert_int_equal(tend_loop_run_once(loop, 0), 1);
        assert_int_equal(c.calls, 1);
        assert_int_equal(poll(&pfd, 1, 0), 0);

        /* A watch's fd becoming readable also makes the loop fd readable. */
        struct piped p = { .drain = true };
        piped_open(&p);
        assert_int_equal(tend_watch_new(loop, p.fds[0], EPOLLIN, on_piped, &p, &p.w), 0);
        assert_int_equal(poll(&pfd, 1, 0), 0);
        assert_int_equal(write(p.fds[1], "q", 1), 1);
        assert_int_equal(poll(&pfd, 1, 10000), 1);
        assert_int_equal(tend_loop_run_once(loop, 0), 1);
        assert_int_equal(p.calls, 1);
        piped_close(&p);

        /* And a signal. */
        struct sig_seen x = { 0 };
        assert_int_equal(tend_signal_new(loop, SIGUSR1, on_sig, &x, &x.s), 0);
        assert_int_equal(poll(&pfd, 1, 0), 0);
        assert_int_equal(raise(SIGUSR1), 0);
        assert_int_equal(poll(&pfd, 1, 10000), 1);
        assert_int_equal(tend_loop_run_once(loop, 0), 1);
        assert_int_equal(x.calls, 1);
        x.s = tend_signal_free(x.s);
        tend_timer_free(c.t);
}

/* tend_loop_run returns when nothing is left: at once on an empty loop, after the last timer,
 * and after the last process has exited; tend_loop_stop ends it early. */
static void on_stop_timer(tend_timer *t, void *userdata) {
        tend_loop_stop(userdata);
}

static void on_exit_count(tend_proc *p, int err, const struct tend_exit *ex, void *userdata) {
        int *n = userdata;
        assert_int_equal(err, 0);
        assert_int_equal(ex->code, 5);
        ++*n;
}

static void run_returns_when_nothing_active(void **state) {
        tend_loop *loop = *state;
        assert_int_equal(tend_loop_run(loop), 0);

        struct counted c = { 0 };
        assert_int_equal(tend_timer_new(loop, on_counted, &c, &c.t), 0);
        tend_timer_start(c.t, 2000u);
        assert_int_equal(tend_loop_run(loop), 0);
        assert_int_equal(c.calls, 1);
        /* An idle timer (made, not started) keeps nothing alive. */
        assert_int_equal(tend_loop_run(loop), 0);
        tend_timer_free(c.t);

        /* A process keeps the loop alive until its exit is handled. */
        int exits = 0;
        struct tend_spawn_opts o = { .argv = UT_ARGV(helper_path(), "exit", "5") };
        tend_proc *p = ut_spawn(loop, &o);
        tend_proc_on_exit(p, on_exit_count, &exits);
        assert_int_equal(tend_loop_run(loop), 0);
        assert_int_equal(exits, 1);
        assert_true(tend_proc_exited(p));
        tend_proc_free(p);

        /* tend_loop_stop from a callback ends run although a watch is still active. */
        struct piped q = { .drain = false };
        piped_open(&q);
        assert_int_equal(tend_watch_new(loop, q.fds[0], EPOLLIN, on_piped, &q, &q.w), 0);
        tend_timer *stopper;
        assert_int_equal(tend_timer_new(loop, on_stop_timer, loop, &stopper), 0);
        tend_timer_start(stopper, 1000u);
        assert_int_equal(tend_loop_run(loop), 0);
        assert_int_equal(q.calls, 0);
        /* The stop is spent: a later run works as usual (and stops again when asked). */
        tend_timer_start(stopper, 1000u);
        assert_int_equal(tend_loop_run(loop), 0);
        tend_timer_free(stopper);
        piped_close(&q);
        ut_assert_no_children();
}

/* ---- after the round (an internal hook of the library, lib/internal.h) ------------------ */

int loop_after_dispatch(tend_loop *loop, void (*fn)(void *arg), void *arg);

struct after_round {
        tend_loop *loop;
        char log[16];
        size_t n;
};

static void after_second(void *arg) {
        struct after_round *a = arg;
        a->log[a->n++] = 'B';
}

static void after_first(void *arg) {
        struct after_round *a = arg;
        a->log[a->n++] = 'A';
        /* Queued from the queue: still run in this round's pass. */
        assert_int_equal(loop_after_dispatch(a->loop, after_second, a), 0);
}

static void on_readable_queue(tend_watch *w, int fd, uint32_t ev, void *ud) {
        (void)w, (void)ev;
        struct after_round *a = ud;
        char c;
        assert_int_equal(read(fd, &c, 1), 1);
        a->log[a->n++] = c;
        if (c == 'x')
                assert_int_equal(loop_after_dispatch(a->loop, after_first, a), 0);
}

/* What a callback leaves for after the round runs once every callback of the events of that
 * epoll_wait has run, before run_once returns; outside a dispatch nothing is queued. */
static void after_dispatch_runs_after_the_round(void **state) {
        tend_loop *loop = *state;
        struct after_round a = { .loop = loop };
        assert_int_equal(loop_after_dispatch(loop, after_first, &a), -EAGAIN);
        int p1[2], p2[2];
        assert_int_equal(pipe2(p1, O_CLOEXEC), 0);
        assert_int_equal(pipe2(p2, O_CLOEXEC), 0);
        tend_watch *w1 = NULL, *w2 = NULL;
        assert_int_equal(tend_watch_new(loop, p1[0], EPOLLIN, on_readable_queue, &a, &w1), 0);
        assert_int_equal(tend_watch_new(loop, p2[0], EPOLLIN, on_readable_queue, &a, &w2), 0);
        assert_int_equal(write(p1[1], "x", 1), 1);
        assert_int_equal(write(p2[1], "y", 1), 1);
        assert_int_equal(tend_loop_run_once(loop, 5u * 1000u * 1000u), 2);
        a.log[a.n] = '\0';
        /* The two watches in either order, then the queue in its order. */
        assert_true(!strcmp(a.log, "xyAB") || !strcmp(a.log, "yxAB"));
        assert_int_equal(tend_loop_run_once(loop, 0), 0);
        assert_int_equal(a.n, 4); /* nothing runs twice */
        tend_watch_free(w1);
        tend_watch_free(w2);
        close(p1[0]), close(p1[1]), close(p2[0]), close(p2[1]);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
static const struct CMUnitTest tests[] = {
        T(timers_fire_in_deadline_order),
        T(timer_restart_rearms),
        T(timer_stop),
        T(timer_freed_from_callback),
        T(timer_started_from_callback),
        T(timer_many_created_and_freed),
        T(watch_pipe_readable),
        T(watch_pause_resume),
        T(watch_freed_by_other_in_same_batch),
        T(watch_free_self_ends_run),
        T(signal_delivered_through_loop),
        T(signal_two_handlers),
        T(signal_freed_from_handler),
        T(signal_mask_restored),
        T(signal_batch),
        T(timer_made_after_running),
        T(signal_loops_in_threads),
        T(run_once_zero_timeout),
        T(loop_fd_embeds_in_poll),
        T(run_returns_when_nothing_active),
        T(after_dispatch_runs_after_the_round),
};

TEND_TEST_MAIN(tests)
