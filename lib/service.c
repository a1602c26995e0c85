/* service.c — the life of a supervised service as a table of state x event (see service.h).
 *
 * Pure: no I/O, no clock, no allocation. Everything it knows comes in svc_input and the
 * policy; everything it wants done goes out in svc_step.actions. That is what lets the unit
 * tests drive years of crash loops in microseconds with a made-up clock.
 *
 * Restart policy (DESIGN §1.15). A failure — the main process exiting when it should not,
 * a failed or timed-out start, a watchdog timeout — leads through `stopping` (what is left
 * of the group is stopped, post-stop runs) to `backoff`, whose delay doubles from
 * restart-delay up to restart-delay-max, less a random part of up to restart-jitter so that
 * services that crashed together do not restart together. A run that stayed ready for
 * restart-reset-after resets the doubling and the start limit. The start limit counts
 * failures in a window that opens at the first one: the failure that makes COUNT within
 * INTERVAL sends the service to `failed` with the reason, never to a silent stop. */
#include "service.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- names -------------------------------------------------------------------------- */

const char *svc_state_name(enum svc_state s) {
        static const char *const names[] = {
                [SVC_STOPPED] = "stopped",   [SVC_STARTING] = "starting",
                [SVC_RUNNING] = "running",   [SVC_STOPPING] = "stopping",
                [SVC_BACKOFF] = "backoff",   [SVC_FAILED] = "failed",
                [SVC_RELOADING] = "reloading",
        };
        return (unsigned)s < SVC_STATE_COUNT ? names[s] : "unknown";
}

const char *svc_phase_name(enum svc_phase p) {
        static const char *const names[] = {
                [SVC_PHASE_NONE] = "",
                [SVC_PHASE_WAIT_DEPS] = "waiting-for-dependencies",
                [SVC_PHASE_PRE_START] = "pre-start",
                [SVC_PHASE_START] = "waiting-for-ready",
                [SVC_PHASE_POST_START] = "post-start",
                [SVC_PHASE_WAIT_DEPENDENTS] = "waiting-for-dependents",
                [SVC_PHASE_PRE_STOP] = "pre-stop",
                [SVC_PHASE_KILL] = "stopping-processes",
                [SVC_PHASE_POST_STOP] = "post-stop",
        };
        return (unsigned)p < SVC_PHASE_COUNT ? names[p] : "unknown";
}

/* ---- policy and backoff ------------------------------------------------------------- */

void svc_policy_default(struct svc_policy *p) {
        memset(p, 0, sizeof *p);
        p->restart = SVC_RESTART_ON_FAILURE;
        p->restart_delay = 100 * 1000;
        p->restart_delay_max = 30 * 1000 * 1000;
        p->jitter_ppm = 100 * 1000; /* 10 % */
        p->reset_after = 60ull * 1000 * 1000;
        p->start_limit_count = 10;
        p->start_limit_interval = 60ull * 1000 * 1000;
        p->ready_timeout = 90ull * 1000 * 1000;
        for (int i = 0; i < SVC_HOOK_COUNT; i++)
                p->hook_timeout[i] = 30ull * 1000 * 1000;
}

uint64_t svc_backoff_base(const struct svc_policy *p, unsigned level) {
        uint64_t d = p->restart_delay;
        uint64_t max = p->restart_delay_max > d ? p->restart_delay_max : d;
        for (unsigned i = 0; i < level && d < max; i++)
                d = d > max / 2 ? max : d * 2;
        return d < max ? d : max;
}

uint64_t svc_backoff_delay(const struct svc_policy *p, unsigned level, uint32_t random) {
        uint64_t d = svc_backoff_base(p, level);
        uint32_t ppm = p->jitter_ppm > 1000000 ? 1000000 : p->jitter_ppm;
        /* span = d * ppm / 1e6 without overflow for any d below 2^64 / 2^20. */
        uint64_t span = d / 1000000 * ppm + d % 1000000 * ppm / 1000000;
        uint64_t cut = (uint64_t)(((unsigned __int128)span * random) >> 32);
        return d - cut;
}

/* ---- helpers ------------------------------------------------------------------------ */

/* The reason is malloc'd only while there is one: a supervisor holds a machine per service,
 * and 192 bytes of room in each for a failure most never have was a fifth of the memory of
 * an idle service. Out of memory, a fixed text stands in (the state is right regardless). */
static char reason_none[1];
static char reason_no_memory[] = "(reason lost: out of memory)";

static void reason_free(struct svc_machine *m) {
        if (m->reason != reason_none && m->reason != reason_no_memory)
                free(m->reason);
        m->reason = reason_none;
}

static void set_reason(struct svc_machine *m, const char *fmt, ...)
        __attribute__((format(printf, 2, 3)));
static void set_reason(struct svc_machine *m, const char *fmt, ...) {
        char text[SVC_CAUSE_MAX]; /* the bound it always had */
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(text, sizeof text, fmt, ap);
        va_end(ap);
        reason_free(m);
        if (text[0]) {
                char *r = strdup(text);
                m->reason = r ? r : reason_no_memory;
        }
}

static void set_cause(struct svc_step *st, const char *cause) {
        snprintf(st->cause, sizeof st->cause, "%s", cause ? cause : "");
}

static void enter(struct svc_machine *m, const struct svc_input *in, struct svc_step *st,
                  enum svc_state to, enum svc_phase phase) {
        if (m->state != to) {
                st->changed = true;
                m->since = in->now;
        }
        m->state = to;
        m->phase = phase;
        st->to = to;
}

static uint64_t after_now(uint64_t now, uint64_t usec) {
        if (!usec)
                return 0;
        return usec > UINT64_MAX - now ? UINT64_MAX : now + usec;
}

static bool has_hook(const struct svc_machine *m, enum svc_hook h) {
        return m->policy->has_hook[h];
}

static void run_hook(struct svc_machine *m, const struct svc_input *in, struct svc_step *st,
                     enum svc_phase phase, enum svc_hook h, unsigned action) {
        m->phase = phase;
        st->actions |= action;
        m->deadline = after_now(in->now, m->policy->hook_timeout[h]);
}

/* The watchdog interval in force: the service's own WATCHDOG_USEC= for this run, if it sent
 * one, else the configured one. */
static uint64_t watchdog_of(const struct svc_machine *m) {
        return m->watchdog_usec ? m->watchdog_usec : m->policy->watchdog;
}

static void spawn_main(struct svc_machine *m, const struct svc_input *in, struct svc_step *st) {
        m->phase = SVC_PHASE_START;
        m->watchdog_usec = 0; /* a new run starts with the configured interval */
        st->actions |= SVC_DO_SPAWN;
        m->deadline = after_now(in->now, m->policy->ready_timeout);
}

static void go_running(struct svc_machine *m, const struct svc_input *in, struct svc_step *st) {
        enter(m, in, st, SVC_RUNNING, SVC_PHASE_NONE);
        if (!m->ready_since)
                m->ready_since = in->now;
        m->deadline = after_now(in->now, watchdog_of(m));
}

/* Ready: post-start if there is one, else running. */
static void became_ready(struct svc_machine *m, const struct svc_input *in,
                         struct svc_step *st) {
        set_cause(st, in->cause && *in->cause ? in->cause : "ready");
        m->ready_since = in->now;
        if (has_hook(m, SVC_HOOK_POST_START)) {
                run_hook(m, in, st, SVC_PHASE_POST_START, SVC_HOOK_POST_START,
                         SVC_DO_POST_START);
                return;
        }
        go_running(m, in, st);
}

static void format_usec(char *buf, size_t size, uint64_t usec) {
        if (usec % 1000000 == 0)
                snprintf(buf, size, "%llus", (unsigned long long)(usec / 1000000));
        else if (usec < 10000000)
                snprintf(buf, size, "%llums", (unsigned long long)((usec + 500) / 1000));
        else
                snprintf(buf, size, "%.1fs", (double)usec / 1e6);
}

/* The main process or a start failed (cause says how). Decide what comes after stopping:
 * a restart or failed, by the restart policy and the start limit. success: the exit counts
 * as success (only for a main process that exited). */
static void decide_after_end(struct svc_machine *m, const struct svc_input *in, bool success,
                             const char *cause) {
        const struct svc_policy *p = m->policy;
        if (m->ready_since && p->reset_after && in->now - m->ready_since >= p->reset_after) {
                /* It ran stably: this end is not part of a crash loop. */
                m->backoff_level = 0;
                m->window_start = 0;
                m->window_failures = 0;
        }
        m->ready_since = 0;
        m->restart_now = false;
        if (!success)
                set_reason(m, "%s", cause ? cause : "failed");
        bool restart = p->restart == SVC_RESTART_ALWAYS ||
                       (p->restart == SVC_RESTART_ON_FAILURE && !success);
        if (!restart) {
                m->after = success ? SVC_AFTER_STOPPED : SVC_AFTER_FAILED;
                return;
        }
        if (p->start_limit_count) {
                if (!m->window_start || in->now - m->window_start > p->start_limit_interval) {
                        m->window_start = in->now ? in->now : 1;
                        m->window_failures = 0;
                }
                if (++m->window_failures >= p->start_limit_count) {
                        char span[32];
                        format_usec(span, sizeof span, p->start_limit_interval);
                        set_reason(m,
                                 "start-limit: %u ends within %s (last: %.100s)",
                                 m->window_failures, span, cause ? cause : "failed");
                        m->after = SVC_AFTER_FAILED;
                        return;
                }
        }
        m->after = SVC_AFTER_RESTART;
}

/* Enter stopping to clear the group. Requested stops wait for dependents and run pre-stop
 * first; ends after a failure go straight to the processes. */
static void begin_stopping(struct svc_machine *m, const struct svc_input *in,
                           struct svc_step *st, bool requested) {
        enter(m, in, st, SVC_STOPPING, requested ? SVC_PHASE_WAIT_DEPENDENTS : SVC_PHASE_KILL);
        m->deadline = 0;
        if (!requested)
                st->actions |= SVC_DO_STOP;
}

/* The stop is complete: post-stop done or not needed. */
static void finish_stopping(struct svc_machine *m, const struct svc_input *in,
                            struct svc_step *st) {
        m->deadline = 0;
        m->attempted = false;
        m->pre_stop_due = false;
        st->actions |= SVC_DO_CLEANUP;
        switch (m->after) {
        case SVC_AFTER_STOPPED:
                enter(m, in, st, SVC_STOPPED, SVC_PHASE_NONE);
                set_cause(st, in->cause);
                break;
        case SVC_AFTER_FAILED:
                enter(m, in, st, SVC_FAILED, SVC_PHASE_NONE);
                set_cause(st, m->reason);
                break;
        case SVC_AFTER_RESTART:
                if (m->restart_now) {
                        m->restart_now = false;
                        enter(m, in, st, SVC_STARTING, SVC_PHASE_WAIT_DEPS);
                        set_cause(st, "restart requested");
                        break;
                }
                uint64_t delay = svc_backoff_delay(m->policy, m->backoff_level, in->random);
                m->backoff_level++;
                enter(m, in, st, SVC_BACKOFF, SVC_PHASE_NONE);
                /* A zero delay still goes through the timer: the next try is an event. */
                m->deadline = in->now + delay < in->now ? UINT64_MAX : in->now + delay;
                if (!m->deadline)
                        m->deadline = 1;
                char d[32];
                format_usec(d, sizeof d, delay);
                snprintf(st->cause, sizeof st->cause, "restart in %s", d);
                break;
        }
        m->after = SVC_AFTER_STOPPED;
}

static void after_processes(struct svc_machine *m, const struct svc_input *in,
                            struct svc_step *st) {
        if (m->attempted && has_hook(m, SVC_HOOK_POST_STOP)) {
                run_hook(m, in, st, SVC_PHASE_POST_STOP, SVC_HOOK_POST_STOP, SVC_DO_POST_STOP);
                return;
        }
        finish_stopping(m, in, st);
}

static void stop_processes(struct svc_machine *m, const struct svc_input *in,
                           struct svc_step *st) {
        m->phase = SVC_PHASE_KILL;
        m->deadline = 0;
        st->actions |= SVC_DO_STOP;
}

/* A start attempt failed or the service ended: stop what is left, then decide. */
static void failed(struct svc_machine *m, const struct svc_input *in, struct svc_step *st,
                   bool success, const char *cause) {
        set_cause(st, cause);
        decide_after_end(m, in, success, cause);
        m->pre_stop_due = false;
        begin_stopping(m, in, st, false);
}

static void reset_for_manual_start(struct svc_machine *m) {
        m->backoff_level = 0;
        m->window_start = 0;
        m->window_failures = 0;
        reason_free(m);
}

/* ---- the transitions ---------------------------------------------------------------- */

typedef void (*handler)(struct svc_machine *m, const struct svc_input *in, struct svc_step *st);

/* stopped, failed */
static void down_start(struct svc_machine *m, const struct svc_input *in, struct svc_step *st) {
        reset_for_manual_start(m);
        enter(m, in, st, SVC_STARTING, SVC_PHASE_WAIT_DEPS);
        m->deadline = 0;
        set_cause(st, in->cause && *in->cause ? in->cause : "start requested");
}

/* starting */
static void starting_deps_ready(struct svc_machine *m, const struct svc_input *in,
                                struct svc_step *st) {
        if (m->phase != SVC_PHASE_WAIT_DEPS)
                return;
        m->attempted = true;
        m->ready_since = 0;
        if (has_hook(m, SVC_HOOK_PRE_START))
                run_hook(m, in, st, SVC_PHASE_PRE_START, SVC_HOOK_PRE_START, SVC_DO_PRE_START);
        else
                spawn_main(m, in, st);
}

static void starting_deps_failed(struct svc_machine *m, const struct svc_input *in,
                                 struct svc_step *st) {
        if (m->phase != SVC_PHASE_WAIT_DEPS)
                return;
        set_reason(m, "%s", in->cause ? in->cause : "dependency failed");
        set_cause(st, m->reason);
        m->deadline = 0;
        enter(m, in, st, SVC_FAILED, SVC_PHASE_NONE);
}

static void starting_stop(struct svc_machine *m, const struct svc_input *in,
                          struct svc_step *st) {
        set_cause(st, in->cause && *in->cause ? in->cause : "stop requested");
        m->after = SVC_AFTER_STOPPED;
        m->restart_now = false;
        if (m->phase == SVC_PHASE_WAIT_DEPS) {
                /* Nothing ran yet. */
                m->deadline = 0;
                enter(m, in, st, SVC_STOPPED, SVC_PHASE_NONE);
                return;
        }
        m->pre_stop_due = m->phase == SVC_PHASE_POST_START;
        begin_stopping(m, in, st, true);
}

static void starting_hook_ok(struct svc_machine *m, const struct svc_input *in,
                             struct svc_step *st) {
        if (m->phase == SVC_PHASE_PRE_START)
                spawn_main(m, in, st);
        else if (m->phase == SVC_PHASE_POST_START) {
                set_cause(st, "post-start done");
                go_running(m, in, st);
        }
}

static void starting_hook_failed(struct svc_machine *m, const struct svc_input *in,
                                 struct svc_step *st) {
        const char *what = m->phase == SVC_PHASE_PRE_START ? "pre-start" : "post-start";
        if (m->phase != SVC_PHASE_PRE_START && m->phase != SVC_PHASE_POST_START)
                return;
        char cause[SVC_CAUSE_MAX];
        snprintf(cause, sizeof cause, "%s failed: %.150s", what, in->cause ? in->cause : "?");
        failed(m, in, st, false, cause);
}

static void starting_spawn_failed(struct svc_machine *m, const struct svc_input *in,
                                  struct svc_step *st) {
        if (m->phase != SVC_PHASE_START)
                return;
        failed(m, in, st, false, in->cause ? in->cause : "cannot start");
}

static void starting_ready(struct svc_machine *m, const struct svc_input *in,
                           struct svc_step *st) {
        if (m->phase != SVC_PHASE_START)
                return;
        became_ready(m, in, st);
}

static void starting_exit(struct svc_machine *m, const struct svc_input *in,
                          struct svc_step *st) {
        if (m->phase != SVC_PHASE_START && m->phase != SVC_PHASE_POST_START)
                return;
        char cause[SVC_CAUSE_MAX];
        snprintf(cause, sizeof cause, "%.150s before it was ready",
                 in->cause ? in->cause : "exited");
        /* Not ready yet: whatever the code, the start failed. */
        failed(m, in, st, false, m->phase == SVC_PHASE_START ? cause : in->cause);
}

static void starting_timer(struct svc_machine *m, const struct svc_input *in,
                           struct svc_step *st) {
        if (!m->deadline || in->now < m->deadline)
                return;
        char t[32], cause[SVC_CAUSE_MAX];
        switch (m->phase) {
        case SVC_PHASE_PRE_START:
        case SVC_PHASE_POST_START: {
                enum svc_hook h = m->phase == SVC_PHASE_PRE_START ? SVC_HOOK_PRE_START
                                                                   : SVC_HOOK_POST_START;
                format_usec(t, sizeof t, m->policy->hook_timeout[h]);
                snprintf(cause, sizeof cause, "%s timed out after %s",
                         h == SVC_HOOK_PRE_START ? "pre-start" : "post-start", t);
                st->actions |= SVC_DO_KILL_HOOK;
                break;
        }
        case SVC_PHASE_START:
                format_usec(t, sizeof t, m->policy->ready_timeout);
                snprintf(cause, sizeof cause, "not ready within %s (ready-timeout)", t);
                break;
        default:
                return;
        }
        failed(m, in, st, false, cause);
}

static void extend(struct svc_machine *m, const struct svc_input *in, struct svc_step *st) {
        if (!m->deadline)
                return;
        uint64_t d = after_now(in->now, in->usec);
        if (d > m->deadline)
                m->deadline = d;
}

/* running */
static void running_stop(struct svc_machine *m, const struct svc_input *in,
                         struct svc_step *st) {
        set_cause(st, in->cause && *in->cause ? in->cause : "stop requested");
        m->after = SVC_AFTER_STOPPED;
        m->restart_now = false;
        m->pre_stop_due = true;
        begin_stopping(m, in, st, true);
}

static void running_exit(struct svc_machine *m, const struct svc_input *in,
                         struct svc_step *st) {
        failed(m, in, st, in->success, in->cause ? in->cause : "exited");
}

static void running_timer(struct svc_machine *m, const struct svc_input *in,
                          struct svc_step *st) {
        if (!m->deadline || in->now < m->deadline)
                return;
        char t[32], cause[SVC_CAUSE_MAX];
        format_usec(t, sizeof t, watchdog_of(m));
        snprintf(cause, sizeof cause, "watchdog: no ping for %s", t);
        failed(m, in, st, false, cause);
}

/* A ping; with usec, also the service's new interval (sd_notify WATCHDOG_USEC=), which
 * counts from now, as systemd does. */
static void running_watchdog(struct svc_machine *m, const struct svc_input *in,
                             struct svc_step *st) {
        if (in->usec)
                m->watchdog_usec = in->usec;
        m->deadline = after_now(in->now, watchdog_of(m));
}

static void running_watchdog_fail(struct svc_machine *m, const struct svc_input *in,
                                  struct svc_step *st) {
        failed(m, in, st, false, in->cause ? in->cause : "watchdog triggered");
}

/* sd_notify RELOADING=1 (systemd's Type=notify-reload): a state of its own until READY=1.
 * Everything else is as in running: a stop stops it, an exit is judged by the restart
 * policy, and the watchdog's deadline goes on (a reload that hangs is caught by the watchdog
 * when one is set; there is no reload timeout of its own, as the service still serves). */
static void running_reloading(struct svc_machine *m, const struct svc_input *in,
                              struct svc_step *st) {
        enter(m, in, st, SVC_RELOADING, SVC_PHASE_NONE);
        set_cause(st, in->cause && *in->cause ? in->cause : "reloading");
}

static void reloading_ready(struct svc_machine *m, const struct svc_input *in,
                            struct svc_step *st) {
        enter(m, in, st, SVC_RUNNING, SVC_PHASE_NONE);
        set_cause(st, in->cause && *in->cause ? in->cause : "ready");
}

/* stopping */
static void stopping_start(struct svc_machine *m, const struct svc_input *in,
                           struct svc_step *st) {
        if (m->after == SVC_AFTER_FAILED)
                reset_for_manual_start(m);
        m->after = SVC_AFTER_RESTART;
        m->restart_now = true;
}

static void stopping_stop(struct svc_machine *m, const struct svc_input *in,
                          struct svc_step *st) {
        /* A stop while stopping after a crash cancels the restart. A failure stays one. */
        if (m->after == SVC_AFTER_RESTART)
                m->after = SVC_AFTER_STOPPED;
        m->restart_now = false;
}

static void stopping_dependents_down(struct svc_machine *m, const struct svc_input *in,
                                     struct svc_step *st) {
        if (m->phase != SVC_PHASE_WAIT_DEPENDENTS)
                return;
        if (m->pre_stop_due && has_hook(m, SVC_HOOK_PRE_STOP)) {
                run_hook(m, in, st, SVC_PHASE_PRE_STOP, SVC_HOOK_PRE_STOP, SVC_DO_PRE_STOP);
                return;
        }
        stop_processes(m, in, st);
}

static void stopping_hook_done(struct svc_machine *m, const struct svc_input *in,
                               struct svc_step *st) {
        if (m->phase == SVC_PHASE_PRE_STOP) {
                stop_processes(m, in, st);
        } else if (m->phase == SVC_PHASE_POST_STOP) {
                char cause[SVC_CAUSE_MAX];
                struct svc_input done = *in;
                snprintf(cause, sizeof cause, "post-stop %.150s",
                         in->cause && *in->cause ? in->cause : "done");
                done.cause = cause;
                finish_stopping(m, &done, st);
        }
}

static void stopping_group_empty(struct svc_machine *m, const struct svc_input *in,
                                 struct svc_step *st) {
        if (m->phase != SVC_PHASE_KILL)
                return;
        after_processes(m, in, st);
}

static void stopping_timer(struct svc_machine *m, const struct svc_input *in,
                           struct svc_step *st) {
        if (!m->deadline || in->now < m->deadline)
                return;
        if (m->phase != SVC_PHASE_PRE_STOP && m->phase != SVC_PHASE_POST_STOP)
                return;
        /* A hook that hangs does not hold the stop: it is killed and the stop goes on. */
        st->actions |= SVC_DO_KILL_HOOK;
        stopping_hook_done(m, in, st);
}

/* backoff */
static void backoff_timer(struct svc_machine *m, const struct svc_input *in,
                          struct svc_step *st) {
        if (!m->deadline || in->now < m->deadline)
                return;
        m->deadline = 0;
        m->restarts++;
        enter(m, in, st, SVC_STARTING, SVC_PHASE_WAIT_DEPS);
        snprintf(st->cause, sizeof st->cause, "restart %u", m->restarts);
}

static void backoff_start(struct svc_machine *m, const struct svc_input *in,
                          struct svc_step *st) {
        m->deadline = 0;
        m->restarts++;
        enter(m, in, st, SVC_STARTING, SVC_PHASE_WAIT_DEPS);
        set_cause(st, in->cause && *in->cause ? in->cause : "start requested");
}

static void backoff_stop(struct svc_machine *m, const struct svc_input *in,
                         struct svc_step *st) {
        m->deadline = 0;
        enter(m, in, st, SVC_STOPPED, SVC_PHASE_NONE);
        set_cause(st, in->cause && *in->cause ? in->cause : "stop requested");
}

static const handler table[SVC_STATE_COUNT][SVC_EV_COUNT] = {
        [SVC_STOPPED] = {
                [SVC_EV_START] = down_start,
        },
        [SVC_STARTING] = {
                [SVC_EV_STOP] = starting_stop,
                [SVC_EV_DEPS_READY] = starting_deps_ready,
                [SVC_EV_DEPS_FAILED] = starting_deps_failed,
                [SVC_EV_HOOK_OK] = starting_hook_ok,
                [SVC_EV_HOOK_FAILED] = starting_hook_failed,
                [SVC_EV_SPAWN_FAILED] = starting_spawn_failed,
                [SVC_EV_READY] = starting_ready,
                [SVC_EV_EXIT] = starting_exit,
                [SVC_EV_TIMER] = starting_timer,
                [SVC_EV_EXTEND] = extend,
        },
        [SVC_RUNNING] = {
                [SVC_EV_STOP] = running_stop,
                [SVC_EV_EXIT] = running_exit,
                [SVC_EV_TIMER] = running_timer,
                [SVC_EV_WATCHDOG] = running_watchdog,
                [SVC_EV_WATCHDOG_FAIL] = running_watchdog_fail,
                [SVC_EV_RELOADING] = running_reloading,
        },
        [SVC_RELOADING] = {
                [SVC_EV_STOP] = running_stop,
                [SVC_EV_READY] = reloading_ready,
                [SVC_EV_EXIT] = running_exit,
                [SVC_EV_TIMER] = running_timer,
                [SVC_EV_WATCHDOG] = running_watchdog,
                [SVC_EV_WATCHDOG_FAIL] = running_watchdog_fail,
        },
        [SVC_STOPPING] = {
                [SVC_EV_START] = stopping_start,
                [SVC_EV_STOP] = stopping_stop,
                [SVC_EV_DEPENDENTS_DOWN] = stopping_dependents_down,
                [SVC_EV_HOOK_OK] = stopping_hook_done,
                [SVC_EV_HOOK_FAILED] = stopping_hook_done,
                [SVC_EV_GROUP_EMPTY] = stopping_group_empty,
                [SVC_EV_TIMER] = stopping_timer,
                [SVC_EV_EXTEND] = extend,
        },
        [SVC_BACKOFF] = {
                [SVC_EV_START] = backoff_start,
                [SVC_EV_STOP] = backoff_stop,
                [SVC_EV_TIMER] = backoff_timer,
        },
        [SVC_FAILED] = {
                [SVC_EV_START] = down_start,
        },
};

void svc_machine_init(struct svc_machine *m, const struct svc_policy *policy, uint64_t now) {
        memset(m, 0, sizeof *m);
        m->reason = reason_none;
        m->policy = policy;
        m->state = SVC_STOPPED;
        m->since = now;
}

void svc_machine_done(struct svc_machine *m) {
        reason_free(m);
}

void svc_machine_step(struct svc_machine *m, const struct svc_input *in,
                      struct svc_step *ret_step) {
        memset(ret_step, 0, sizeof *ret_step);
        ret_step->from = ret_step->to = m->state;
        if ((unsigned)m->state >= SVC_STATE_COUNT || (unsigned)in->event >= SVC_EV_COUNT)
                return;
        if (in->event == SVC_EV_START || in->event == SVC_EV_STOP)
                m->held = false; /* asked explicitly: no longer waiting for a dependency */
        if (in->event == SVC_EV_DEP_DOWN) {
                /* Requires: a service that wants to be up stops with its required one and
                 * remembers to come back with it. One that is down stays as it is. */
                if (!svc_wants_up(m))
                        return;
                struct svc_input stop = *in;
                stop.event = SVC_EV_STOP;
                if (!stop.cause || !*stop.cause)
                        stop.cause = "a required service went down";
                handler h = table[m->state][SVC_EV_STOP];
                if (h)
                        h(m, &stop, ret_step);
                set_reason(m, "%s", stop.cause);
                m->held = true;
                ret_step->to = m->state;
                return;
        }
        handler h = table[m->state][in->event];
        if (h)
                h(m, in, ret_step);
        ret_step->to = m->state;
}

/* ---- queries and dependencies --------------------------------------------------------- */

bool svc_wants_up(const struct svc_machine *m) {
        switch (m->state) {
        case SVC_STARTING: case SVC_RUNNING: case SVC_BACKOFF: case SVC_RELOADING:
                return true;
        case SVC_STOPPING:
                return m->after == SVC_AFTER_RESTART;
        default:
                return false;
        }
}

bool svc_is_up(const struct svc_machine *m) {
        return m->state == SVC_RUNNING || m->state == SVC_RELOADING;
}

bool svc_is_down(const struct svc_machine *m) {
        return m->state == SVC_STOPPED || m->state == SVC_FAILED;
}

enum svc_gate svc_start_gate(const struct svc_machine *dep, bool required) {
        switch (dep->state) {
        case SVC_RUNNING:
        case SVC_RELOADING:
                return SVC_GATE_GO;
        case SVC_STARTING:
        case SVC_BACKOFF:
                return SVC_GATE_WAIT;
        case SVC_STOPPING:
                if (dep->after == SVC_AFTER_RESTART)
                        return SVC_GATE_WAIT;
                return required ? SVC_GATE_FAIL : SVC_GATE_GO;
        case SVC_STOPPED:
        case SVC_FAILED:
        default:
                return required ? SVC_GATE_FAIL : SVC_GATE_GO;
        }
}

bool svc_going_down(const struct svc_machine *dep) {
        switch (dep->state) {
        case SVC_STOPPED:
        case SVC_FAILED:
                return true;
        case SVC_STOPPING:
                return dep->after != SVC_AFTER_RESTART;
        default:
                return false;
        }
}

bool svc_stop_gate(const struct svc_machine *dependent) {
        return dependent->state != SVC_STOPPING;
}
