/* loop.c — the event loop: one epoll fd, one timerfd carrying a heap of timers, one signalfd.
 *
 * Nothing here polls: the loop sleeps in epoll_wait until the kernel has something for it.
 * Handles freed from inside a callback are only unlinked at once and released at the end of
 * the iteration, because epoll may already have handed us an event that points at them. */
#include "internal.h"

#include <assert.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* What an epoll event points at. */
enum source_kind { SOURCE_WATCH = 1, SOURCE_TIMERFD, SOURCE_SIGNALFD };

struct tend_watch {
        enum source_kind kind; /* first member: epoll data points here */
        int fd;
        uint32_t events;
        bool dead;
        tend_loop *loop;
        tend_watch_cb cb;
        /* 40 bytes in all (a 48-byte malloc chunk, not 64): a supervisor holds a watch per
         * service. A dead watch is never called again, so its userdata's room links it. */
        union {
                void *userdata;
                tend_watch *next_dead;
        };
};

struct tend_timer {
        tend_loop *loop;
        uint64_t deadline;
        size_t heap_index; /* SIZE_MAX when not in the heap */
        tend_timer_cb cb;
        void *userdata;
};

struct tend_signal {
        tend_loop *loop;
        int signo;
        bool dead;
        tend_signal_cb cb;
        void *userdata;
        tend_signal *next;      /* list of handlers for this signo */
        tend_signal *next_dead;
};

struct sigchld_hook {
        loop_sigchld_hook fn;
        void *userdata;
};

/* Processes by pid, so the orphan reaper can tell ours from orphans. Chained hash, chained
 * through the handles themselves (proc_hash_next): a supervisor registers one per service,
 * and an entry of its own would cost 40 bytes and a malloc that can fail. */

struct tend_loop {
        int epfd;
        enum source_kind timer_source;
        enum source_kind signal_source;
        int timerfd;
        int sigfd;

        tend_timer **heap;
        size_t heap_len, heap_cap, n_timers; /* cap >= n_timers: start never allocates */
        uint64_t armed_deadline; /* what the timerfd is set to; 0: disarmed */

        sigset_t original_mask;  /* the thread's mask when the loop was made */
        sigset_t signal_mask;    /* signals the loop has blocked and reads */
        tend_signal *signals[_NSIG];
        tend_signal *internal_sigchld;

        size_t active_watches;
        bool stop;
        int dispatch_depth;
        uint32_t round;          /* rounds of dispatch so far (loop_round) */
        tend_watch *dead_watches;
        tend_signal *dead_signals;

        tend_proc **procs;
        size_t procs_buckets, procs_count;

        tend_orphan_cb orphan_cb;
        void *orphan_userdata;
        struct sigchld_hook *hooks;
        size_t n_hooks, cap_hooks;
        bool hooks_running;
        size_t refs; /* work in progress that no watch or timer stands for (loop_ref) */
        struct after_dispatch {
                void (*fn)(void *arg);
                void *arg;
        } *after;     /* loop_after_dispatch(), run at the end of the round */
        size_t n_after, cap_after;
};

TEND_PUBLIC uint64_t tend_now_usec(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* ---- creation ---------------------------------------------------------------------- */

TEND_PUBLIC int tend_loop_new(tend_loop **ret_loop) {
        tend_loop *l = calloc(1, sizeof *l);
        if (!l)
                return -ENOMEM;
        l->epfd = l->timerfd = l->sigfd = -1;
        l->timer_source = SOURCE_TIMERFD;
        l->signal_source = SOURCE_SIGNALFD;
        int r;

        pthread_sigmask(SIG_SETMASK, NULL, &l->original_mask);
        sigemptyset(&l->signal_mask);

        l->epfd = epoll_create1(EPOLL_CLOEXEC);
        if (l->epfd < 0)
                goto fail_errno;
        /* The timerfd comes with the first timer (timers_init): a loop that never has one
         * (`tend run` without --timeout) saves its three system calls. */
        l->procs_buckets = 64;
        l->procs = calloc(l->procs_buckets, sizeof *l->procs);
        if (!l->procs) {
                r = -ENOMEM;
                goto fail;
        }
        *ret_loop = l;
        return 0;
fail_errno:
        r = -errno;
fail:
        io_close(l->timerfd);
        io_close(l->epfd);
        free(l->procs);
        free(l);
        return r;
}

static bool signal_unlink(tend_signal *s);
static void signal_release(tend_signal *s);

static void release_dead(tend_loop *l) {
        while (l->dead_watches) {
                tend_watch *w = l->dead_watches;
                l->dead_watches = w->next_dead;
                free(w);
        }
        while (l->dead_signals) {
                tend_signal *s = l->dead_signals;
                l->dead_signals = s->next_dead;
                free(s);
        }
}

TEND_PUBLIC tend_loop *tend_loop_free(tend_loop *l) {
        if (!l)
                return NULL;
        /* Restore the signals we blocked, leaving the rest of the mask as the caller has it:
         * one call for all of them, and none to the signalfd, which is closed anyway. */
        sigset_t unblock;
        sigemptyset(&unblock);
        bool any = false;
        for (int s = 1; s < _NSIG; s++)
                if (sigismember(&l->signal_mask, s) == 1 &&
                    sigismember(&l->original_mask, s) != 1) {
                        sigaddset(&unblock, s);
                        any = true;
                }
        if (l->internal_sigchld) {
                (void)signal_unlink(l->internal_sigchld);
                signal_release(l->internal_sigchld);
                l->internal_sigchld = NULL;
        }
        release_dead(l);
        if (any)
                pthread_sigmask(SIG_UNBLOCK, &unblock, NULL);
        io_close(l->sigfd);
        io_close(l->timerfd);
        io_close(l->epfd);
        for (size_t i = 0; i < l->procs_buckets; i++)
                while (l->procs[i]) {
                        tend_proc *p = l->procs[i];
                        l->procs[i] = *proc_hash_next(p);
                        *proc_hash_next(p) = NULL;
                }
        free(l->procs);
        free(l->heap);
        free(l->hooks);
        free(l->after);
        free(l);
        return NULL;
}

TEND_PUBLIC int tend_loop_fd(const tend_loop *l) {
        return l->epfd;
}

const sigset_t *loop_original_mask(const tend_loop *l) {
        return &l->original_mask;
}

/* ---- watches ----------------------------------------------------------------------- */

TEND_PUBLIC int tend_watch_new(tend_loop *l, int fd, uint32_t events, tend_watch_cb cb,
                               void *userdata, tend_watch **ret_watch) {
        if (fd < 0 || !cb)
                return -EINVAL;
        tend_watch *w = calloc(1, sizeof *w);
        if (!w)
                return -ENOMEM;
        *w = (tend_watch){ .kind = SOURCE_WATCH, .loop = l, .fd = fd, .events = events,
                           .cb = cb, .userdata = userdata };
        struct epoll_event ev = { .events = events, .data.ptr = w };
        if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
                int r = -errno;
                free(w);
                return r;
        }
        if (events)
                l->active_watches++;
        *ret_watch = w;
        return 0;
}

TEND_PUBLIC int tend_watch_set_events(tend_watch *w, uint32_t events) {
        if (w->dead)
                return -EINVAL;
        if (events == w->events)
                return 0;
        struct epoll_event ev = { .events = events, .data.ptr = w };
        if (epoll_ctl(w->loop->epfd, EPOLL_CTL_MOD, w->fd, &ev) < 0)
                return -errno;
        if (w->events && !events)
                w->loop->active_watches--;
        else if (!w->events && events)
                w->loop->active_watches++;
        w->events = events;
        return 0;
}

TEND_PUBLIC tend_watch *tend_watch_free(tend_watch *w) {
        if (!w)
                return NULL;
        tend_loop *l = w->loop;
        /* The fd may already be closed by its owner (epoll then dropped it by itself). */
        (void)epoll_ctl(l->epfd, EPOLL_CTL_DEL, w->fd, NULL);
        if (w->events)
                l->active_watches--;
        w->dead = true;
        w->events = 0;
        if (l->dispatch_depth > 0) {
                w->next_dead = l->dead_watches;
                l->dead_watches = w;
        } else {
                free(w);
        }
        return NULL;
}

/* ---- timers: a binary min-heap on deadline, one timerfd armed for the earliest ---------- */

static void heap_swap(tend_loop *l, size_t a, size_t b) {
        tend_timer *t = l->heap[a];
        l->heap[a] = l->heap[b];
        l->heap[b] = t;
        l->heap[a]->heap_index = a;
        l->heap[b]->heap_index = b;
}

static void heap_up(tend_loop *l, size_t i) {
        while (i > 0) {
                size_t parent = (i - 1) / 2;
                if (l->heap[parent]->deadline <= l->heap[i]->deadline)
                        break;
                heap_swap(l, i, parent);
                i = parent;
        }
}

static void heap_down(tend_loop *l, size_t i) {
        for (;;) {
                size_t left = 2 * i + 1, right = left + 1, min = i;
                if (left < l->heap_len && l->heap[left]->deadline < l->heap[min]->deadline)
                        min = left;
                if (right < l->heap_len && l->heap[right]->deadline < l->heap[min]->deadline)
                        min = right;
                if (min == i)
                        break;
                heap_swap(l, i, min);
                i = min;
        }
}

static void heap_remove(tend_loop *l, tend_timer *t) {
        size_t i = t->heap_index;
        assert(i < l->heap_len && l->heap[i] == t);
        l->heap_len--;
        if (i != l->heap_len) {
                l->heap[i] = l->heap[l->heap_len];
                l->heap[i]->heap_index = i;
                heap_down(l, i);
                heap_up(l, i);
        }
        t->heap_index = SIZE_MAX;
}

/* Point the timerfd at the earliest deadline; touch it only when that changes. */
static void timers_rearm(tend_loop *l) {
        uint64_t want = l->heap_len ? l->heap[0]->deadline : 0;
        if (want == l->armed_deadline)
                return;
        struct itimerspec its = { 0 };
        if (want) {
                /* 0 would disarm: a deadline already passed still has to fire. */
                its.it_value.tv_sec = (time_t)(want / 1000000u);
                its.it_value.tv_nsec = (long)(want % 1000000u) * 1000;
                if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0)
                        its.it_value.tv_nsec = 1;
        }
        if (timerfd_settime(l->timerfd, TFD_TIMER_ABSTIME, &its, NULL) == 0)
                l->armed_deadline = want;
}

static int timers_init(tend_loop *l) {
        int fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
        if (fd < 0)
                return -errno;
        struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &l->timer_source };
        if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
                int r = -errno;
                io_close(fd);
                return r;
        }
        l->timerfd = fd;
        return 0;
}

TEND_PUBLIC int tend_timer_new(tend_loop *l, tend_timer_cb cb, void *userdata,
                               tend_timer **ret_timer) {
        if (!cb)
                return -EINVAL;
        if (l->timerfd < 0) {
                int r = timers_init(l);
                if (r < 0)
                        return r;
        }
        if (l->n_timers == l->heap_cap) {
                size_t cap = l->heap_cap ? l->heap_cap * 2 : 16;
                tend_timer **h = realloc(l->heap, cap * sizeof *h);
                if (!h)
                        return -ENOMEM;
                l->heap = h;
                l->heap_cap = cap;
        }
        tend_timer *t = calloc(1, sizeof *t);
        if (!t)
                return -ENOMEM;
        l->n_timers++;
        *t = (tend_timer){ .loop = l, .heap_index = SIZE_MAX, .cb = cb, .userdata = userdata };
        *ret_timer = t;
        return 0;
}

TEND_PUBLIC void tend_timer_start(tend_timer *t, uint64_t delay_usec) {
        tend_loop *l = t->loop;
        if (t->heap_index != SIZE_MAX)
                heap_remove(l, t);
        uint64_t now = tend_now_usec();
        t->deadline = delay_usec > UINT64_MAX - now ? UINT64_MAX : now + delay_usec;
        if (t->deadline == 0)
                t->deadline = 1;
        t->heap_index = l->heap_len;
        l->heap[l->heap_len++] = t;
        heap_up(l, t->heap_index);
        if (l->dispatch_depth == 0 || t->heap_index == 0)
                timers_rearm(l);
}

TEND_PUBLIC void tend_timer_stop(tend_timer *t) {
        if (t->heap_index == SIZE_MAX)
                return;
        heap_remove(t->loop, t);
        timers_rearm(t->loop);
}

TEND_PUBLIC bool tend_timer_active(const tend_timer *t) {
        return t->heap_index != SIZE_MAX;
}

TEND_PUBLIC tend_timer *tend_timer_free(tend_timer *t) {
        if (!t)
                return NULL;
        tend_timer_stop(t);
        t->loop->n_timers--;
        free(t);
        return NULL;
}

static void timers_dispatch(tend_loop *l) {
        uint64_t expirations;
        (void)io_read(l->timerfd, &expirations, sizeof expirations);
        l->armed_deadline = 0; /* fired: an absolute timer is spent */
        uint64_t now = tend_now_usec();
        /* A timer restarted from its own callback gets a deadline after `now`, so this ends. */
        while (l->heap_len && l->heap[0]->deadline <= now) {
                tend_timer *t = l->heap[0];
                heap_remove(l, t);
                t->cb(t, t->userdata);
        }
        timers_rearm(l);
}

/* ---- signals ------------------------------------------------------------------------- */

static int signalfd_update(tend_loop *l) {
        int fd = signalfd(l->sigfd, &l->signal_mask, SFD_CLOEXEC | SFD_NONBLOCK);
        if (fd < 0)
                return -errno;
        if (l->sigfd < 0) {
                struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &l->signal_source };
                if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
                        int r = -errno;
                        io_close(fd);
                        return r;
                }
                l->sigfd = fd;
        }
        return 0;
}

/* One change of the mask and one of the signalfd for all n signals: `tend run` forwards 8,
 * and a call of each per signal, at the start and again at the end, was a visible part of its
 * overhead over a trivial command (BENCHMARKS.md, benchmark 2). */
TEND_PUBLIC int tend_signals_new(tend_loop *l, const int *signos, size_t n, tend_signal_cb cb,
                                 void *userdata, tend_signal **ret_signals) {
        if (!l || (n && (!signos || !ret_signals)) || !cb)
                return -EINVAL;
        for (size_t i = 0; i < n; i++)
                if (signos[i] <= 0 || signos[i] >= _NSIG || signos[i] == SIGKILL ||
                    signos[i] == SIGSTOP)
                        return -EINVAL;
        tend_signal **made = calloc(n ? n : 1, sizeof *made);
        if (!made)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                made[i] = calloc(1, sizeof *made[i]);
                if (!made[i]) {
                        for (size_t k = 0; k < i; k++)
                                free(made[k]);
                        free(made);
                        return -ENOMEM;
                }
                *made[i] = (tend_signal){ .loop = l, .signo = signos[i], .cb = cb,
                                          .userdata = userdata };
        }
        sigset_t added;
        sigemptyset(&added);
        bool any = false;
        for (size_t i = 0; i < n; i++)
                if (sigismember(&l->signal_mask, signos[i]) != 1) {
                        sigaddset(&added, signos[i]);
                        sigaddset(&l->signal_mask, signos[i]);
                        any = true;
                }
        if (any) {
                /* Block first: a signal arriving between the two calls stays pending and the
                 * signalfd reads it. */
                pthread_sigmask(SIG_BLOCK, &added, NULL);
                int r = signalfd_update(l);
                if (r < 0) {
                        sigset_t unblock;
                        sigemptyset(&unblock);
                        for (int s = 1; s < _NSIG; s++)
                                if (sigismember(&added, s) == 1) {
                                        sigdelset(&l->signal_mask, s);
                                        if (sigismember(&l->original_mask, s) != 1)
                                                sigaddset(&unblock, s);
                                }
                        pthread_sigmask(SIG_UNBLOCK, &unblock, NULL);
                        for (size_t i = 0; i < n; i++)
                                free(made[i]);
                        free(made);
                        return r;
                }
        }
        for (size_t i = 0; i < n; i++) {
                tend_signal *s = made[i];
                s->next = l->signals[s->signo];
                l->signals[s->signo] = s;
                ret_signals[i] = s;
        }
        free(made);
        return 0;
}

TEND_PUBLIC int tend_signal_new(tend_loop *l, int signo, tend_signal_cb cb, void *userdata,
                                tend_signal **ret_signal) {
        return tend_signals_new(l, &signo, 1, cb, userdata, ret_signal);
}

/* Unlink s; true when it was the last handler of its signal (which then leaves the mask). */
static bool signal_unlink(tend_signal *s) {
        tend_loop *l = s->loop;
        for (tend_signal **pp = &l->signals[s->signo]; *pp; pp = &(*pp)->next)
                if (*pp == s) {
                        *pp = s->next;
                        break;
                }
        s->dead = true;
        if (l->signals[s->signo])
                return false;
        sigdelset(&l->signal_mask, s->signo);
        return true;
}

static void signal_release(tend_signal *s) {
        tend_loop *l = s->loop;
        if (l->dispatch_depth > 0) {
                s->next_dead = l->dead_signals;
                l->dead_signals = s;
        } else {
                free(s);
        }
}

TEND_PUBLIC void tend_signals_free(tend_signal **signals, size_t n) {
        tend_loop *l = NULL;
        sigset_t unblock;
        sigemptyset(&unblock);
        bool changed = false;
        for (size_t i = 0; i < n; i++) {
                tend_signal *s = signals[i];
                if (!s)
                        continue;
                if (l && s->loop != l) {
                        /* Another loop's handle: on its own (the batch is per loop). */
                        signals[i] = tend_signal_free(s);
                        continue;
                }
                l = s->loop;
                if (signal_unlink(s)) {
                        changed = true;
                        if (sigismember(&l->original_mask, s->signo) != 1)
                                sigaddset(&unblock, s->signo);
                }
                signal_release(s);
                signals[i] = NULL;
        }
        if (!changed)
                return;
        /* The signalfd first, so that a signal arriving now is handled by its default action
         * (or the application's handler) rather than read and dropped. */
        (void)signalfd_update(l);
        pthread_sigmask(SIG_UNBLOCK, &unblock, NULL);
}

TEND_PUBLIC tend_signal *tend_signal_free(tend_signal *s) {
        tend_signals_free(&s, 1);
        return NULL;
}

static void signals_dispatch(tend_loop *l) {
        struct signalfd_siginfo info[16];
        for (;;) {
                ssize_t n = io_read(l->sigfd, info, sizeof info);
                if (n <= 0)
                        return;
                for (size_t i = 0; i < (size_t)n / sizeof info[0]; i++) {
                        int signo = (int)info[i].ssi_signo;
                        if (signo <= 0 || signo >= _NSIG)
                                continue;
                        /* The next pointer is read before the call: a handler may free
                         * itself (it is only unlinked; memory lives until the iteration ends). */
                        for (tend_signal *s = l->signals[signo], *next; s; s = next) {
                                next = s->next;
                                if (!s->dead)
                                        s->cb(s, &info[i], s->userdata);
                        }
                }
        }
}

/* ---- processes and orphans --------------------------------------------------------- */

static size_t proc_bucket(const tend_loop *l, pid_t pid) {
        return ((size_t)pid * 2654435761u) & (l->procs_buckets - 1);
}

static void procs_grow(tend_loop *l) {
        size_t nb = l->procs_buckets * 2;
        tend_proc **nt = calloc(nb, sizeof *nt);
        if (!nt)
                return; /* a fuller table is slower, not wrong */
        tend_proc **old = l->procs;
        size_t ob = l->procs_buckets;
        l->procs = nt;
        l->procs_buckets = nb;
        for (size_t i = 0; i < ob; i++)
                while (old[i]) {
                        tend_proc *p = old[i];
                        old[i] = *proc_hash_next(p);
                        size_t b = proc_bucket(l, tend_proc_pid(p));
                        *proc_hash_next(p) = nt[b];
                        nt[b] = p;
                }
        free(old);
}

void loop_proc_add(tend_loop *l, tend_proc *p) {
        size_t b = proc_bucket(l, tend_proc_pid(p));
        *proc_hash_next(p) = l->procs[b];
        l->procs[b] = p;
        if (++l->procs_count > l->procs_buckets * 2)
                procs_grow(l);
}

void loop_proc_remove(tend_loop *l, tend_proc *p) {
        for (tend_proc **pp = &l->procs[proc_bucket(l, tend_proc_pid(p))]; *pp;
             pp = proc_hash_next(*pp))
                if (*pp == p) {
                        *pp = *proc_hash_next(p);
                        *proc_hash_next(p) = NULL;
                        l->procs_count--;
                        return;
                }
}

void loop_proc_foreach(tend_loop *l, void (*fn)(tend_proc *p, void *userdata),
                      void *userdata) {
        for (size_t b = 0; b < l->procs_buckets; b++)
                for (tend_proc *p = l->procs[b]; p; p = *proc_hash_next(p))
                        fn(p, userdata);
}

tend_proc *loop_proc_find(tend_loop *l, pid_t pid) {
        for (tend_proc *p = l->procs[proc_bucket(l, pid)]; p; p = *proc_hash_next(p))
                if (tend_proc_pid(p) == pid)
                        return p;
        return NULL;
}

int loop_add_sigchld_hook(tend_loop *l, loop_sigchld_hook fn, void *userdata) {
        if (l->n_hooks == l->cap_hooks) {
                size_t cap = l->cap_hooks ? l->cap_hooks * 2 : 4;
                struct sigchld_hook *h = realloc(l->hooks, cap * sizeof *h);
                if (!h)
                        return -ENOMEM;
                l->hooks = h;
                l->cap_hooks = cap;
        }
        l->hooks[l->n_hooks++] = (struct sigchld_hook){ fn, userdata };
        return 0;
}

void loop_remove_sigchld_hook(tend_loop *l, loop_sigchld_hook fn, void *userdata) {
        for (size_t i = 0; i < l->n_hooks; i++)
                if (l->hooks[i].fn == fn && l->hooks[i].userdata == userdata) {
                        if (l->hooks_running) {
                                /* Shifting now would skip the next hook of this round. */
                                l->hooks[i].fn = NULL;
                                return;
                        }
                        memmove(&l->hooks[i], &l->hooks[i + 1],
                                (l->n_hooks - i - 1) * sizeof l->hooks[0]);
                        l->n_hooks--;
                        return;
                }
}

/* SIGCHLD coalesces (FACTS: 50 exits gave one record), so this loops until no zombie is
 * left. WNOWAIT first: a zombie that is one of our handles is reaped through its pidfd, so
 * its status reaches its handle and nothing else. */
static void reap_orphans(tend_signal *s, const struct signalfd_siginfo *info, void *userdata) {
        tend_loop *l = userdata;
        for (;;) {
                siginfo_t si;
                memset(&si, 0, sizeof si);
                if (waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT | __WALL) < 0)
                        break; /* ECHILD: no children at all */
                if (si.si_pid == 0)
                        break;
                pid_t pid = si.si_pid;
                tend_proc *p = loop_proc_find(l, pid);
                if (p) {
                        proc_handle_exit(p);
                        if (loop_proc_find(l, pid) != p)
                                continue;
                        /* The handle could not reap it; fall through rather than spin. */
                }
                memset(&si, 0, sizeof si);
                if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | __WALL) < 0)
                        continue;
                if (si.si_pid == 0)
                        continue;
                int status = si.si_code == CLD_EXITED ? (si.si_status & 0xff) << 8
                                                      : (si.si_status & 0x7f) |
                                                                (si.si_code == CLD_DUMPED ? 0x80 : 0);
                if (l->orphan_cb)
                        l->orphan_cb(pid, status, l->orphan_userdata);
        }
        /* Hooks may add or remove hooks: walk by index against the live count, skip the
         * ones removed meanwhile, and compact afterwards. */
        l->hooks_running = true;
        for (size_t i = 0; i < l->n_hooks; i++)
                if (l->hooks[i].fn)
                        l->hooks[i].fn(l->hooks[i].userdata);
        l->hooks_running = false;
        size_t k = 0;
        for (size_t i = 0; i < l->n_hooks; i++)
                if (l->hooks[i].fn)
                        l->hooks[k++] = l->hooks[i];
        l->n_hooks = k;
}

TEND_PUBLIC int tend_loop_reap_orphans(tend_loop *l, tend_orphan_cb cb, void *userdata) {
        l->orphan_cb = cb;
        l->orphan_userdata = userdata;
        if (l->internal_sigchld)
                return 0;
        int r = tend_signal_new(l, SIGCHLD, reap_orphans, l, &l->internal_sigchld);
        if (r < 0)
                return r;
        /* Zombies from before this call produced their SIGCHLD while it was not blocked. */
        reap_orphans(l->internal_sigchld, NULL, l);
        return 0;
}

/* ---- running ----------------------------------------------------------------------- */

void loop_ref(tend_loop *l) {
        l->refs++;
}

void loop_unref(tend_loop *l) {
        if (l->refs > 0)
                l->refs--;
}

uint32_t loop_round(const tend_loop *l) {
        return l->dispatch_depth > 0 ? l->round : 0;
}

int loop_after_dispatch(tend_loop *l, void (*fn)(void *arg), void *arg) {
        if (l->dispatch_depth == 0)
                return -EAGAIN;
        if (l->n_after == l->cap_after) {
                size_t cap = l->cap_after ? l->cap_after * 2 : 8;
                struct after_dispatch *n = realloc(l->after, cap * sizeof *n);
                if (!n)
                        return -ENOMEM;
                l->after = n;
                l->cap_after = cap;
        }
        l->after[l->n_after++] = (struct after_dispatch){ .fn = fn, .arg = arg };
        return 0;
}

/* The end of the outermost round: what its callbacks left for after them. An entry may add
 * more (run in the same pass) and may free what others point to: their owners keep such
 * memory until their entry has run (see group.c's dispatching count). */
static void run_after_dispatch(tend_loop *l) {
        for (size_t i = 0; i < l->n_after; i++) {
                struct after_dispatch a = l->after[i]; /* fn may grow (move) the array */
                a.fn(a.arg);
        }
        l->n_after = 0;
}

static bool loop_alive(const tend_loop *l) {
        return l->active_watches > 0 || l->heap_len > 0 || l->procs_count > 0 || l->refs > 0;
}

TEND_PUBLIC int tend_loop_run_once(tend_loop *l, uint64_t timeout_usec) {
        struct epoll_event events[64];
        int timeout_ms;
        if (timeout_usec == UINT64_MAX)
                timeout_ms = -1;
        else if (timeout_usec / 1000u >= INT32_MAX)
                timeout_ms = INT32_MAX;
        else
                timeout_ms = (int)((timeout_usec + 999u) / 1000u);
        int n;
        for (;;) {
                n = epoll_wait(l->epfd, events, (int)ARRAY_SIZE(events), timeout_ms);
                if (n >= 0)
                        break;
                if (errno != EINTR)
                        return -errno;
                /* A signal handler of the application ran; its wait is simply resumed.
                 * (A bounded wait restarts with the full timeout: callers that need a
                 * precise deadline use a timer.) */
        }
        l->dispatch_depth++;
        if (l->dispatch_depth == 1 && ++l->round == 0)
                l->round = 1; /* 0 means "not dispatching" */
        for (int i = 0; i < n; i++) {
                enum source_kind *kind = events[i].data.ptr;
                if (*kind == SOURCE_TIMERFD) {
                        timers_dispatch(l);
                } else if (*kind == SOURCE_SIGNALFD) {
                        signals_dispatch(l);
                } else {
                        tend_watch *w = (tend_watch *)kind;
                        if (!w->dead)
                                w->cb(w, w->fd, events[i].events, w->userdata);
                }
        }
        if (l->dispatch_depth == 1)
                run_after_dispatch(l);
        l->dispatch_depth--;
        if (l->dispatch_depth == 0) {
                release_dead(l);
                timers_rearm(l);
        }
        return n;
}

TEND_PUBLIC int tend_loop_run(tend_loop *l) {
        l->stop = false;
        while (!l->stop && loop_alive(l)) {
                int r = tend_loop_run_once(l, UINT64_MAX);
                if (r < 0)
                        return r;
        }
        l->stop = false;
        return 0;
}

TEND_PUBLIC void tend_loop_stop(tend_loop *l) {
        l->stop = true;
}
