/* test_service.c — the service state machine (lib/service.c) with an injected clock: the
 * backoff sequence and its jitter bounds, the reset after a stable run, the start limit that
 * ends a crash loop in `failed` with a reason, readiness and hook timeouts, stop and restart
 * requests in every state, and start/stop order across dependencies (DESIGN §1.15). No
 * process is started: time is a number the test moves. */
#include "harness.h"
#include "service.h"
#include "tend.h"

#define MS 1000ull
#define S (1000ull * 1000ull)

struct sim {
        struct svc_policy p;
        struct svc_machine m;
        uint64_t now;
        uint32_t random;
        struct svc_step last;
};

static void sim_init(struct sim *x) {
        memset(x, 0, sizeof *x);
        svc_policy_default(&x->p);
        x->now = 1000 * S;
        svc_machine_init(&x->m, &x->p, x->now);
}

/* A machine holds its failure reason in malloc'd memory: every sim releases it at the end of
 * its scope (SIM x; declares one). */
static void sim_done(struct sim *x) {
        svc_machine_done(&x->m);
}
#define SIM __attribute__((cleanup(sim_done))) struct sim

static unsigned post(struct sim *x, enum svc_event ev, bool success, const char *cause) {
        struct svc_input in = { .event = ev, .now = x->now, .random = x->random,
                                .success = success, .cause = cause };
        svc_machine_step(&x->m, &in, &x->last);
        return x->last.actions;
}

static void at(struct sim *x, uint64_t t) {
        x->now = t;
}

/* Fire the machine's deadline (moving the clock there). */
static unsigned fire(struct sim *x) {
        assert_true(x->m.deadline != 0);
        at(x, x->m.deadline);
        return post(x, SVC_EV_TIMER, false, NULL);
}

/* STOPPED/BACKOFF -> running, through the whole start with ready = a READY event. */
static void start_to_running(struct sim *x) {
        assert_int_equal(x->m.state, SVC_STARTING);
        assert_int_equal(x->m.phase, SVC_PHASE_WAIT_DEPS);
        unsigned a = post(x, SVC_EV_DEPS_READY, false, NULL);
        assert_true(a & SVC_DO_SPAWN);
        assert_int_equal(x->m.phase, SVC_PHASE_START);
        post(x, SVC_EV_READY, false, "ready: test");
        assert_int_equal(x->m.state, SVC_RUNNING);
        assert_true(x->last.changed);
        assert_string_equal(x->last.cause, "ready: test");
}

/* A failure while running: -> stopping (stop action) -> group empty -> next state. */
static void crash(struct sim *x) {
        unsigned a = post(x, SVC_EV_EXIT, false, "exited with code 1");
        assert_int_equal(x->m.state, SVC_STOPPING);
        assert_true(a & SVC_DO_STOP);
        post(x, SVC_EV_GROUP_EMPTY, false, "ended");
}

/* ---- the plain path -------------------------------------------------------------------- */

static void plain_start_and_stop(void **state) {
        SIM x;
        sim_init(&x);
        assert_int_equal(x.m.state, SVC_STOPPED);
        post(&x, SVC_EV_START, false, NULL);
        assert_true(x.last.changed);
        assert_int_equal(x.last.from, SVC_STOPPED);
        assert_int_equal(x.last.to, SVC_STARTING);
        start_to_running(&x);
        assert_int_equal(x.m.deadline, 0); /* no watchdog: nothing to wake for */
        unsigned a = post(&x, SVC_EV_STOP, false, NULL);
        assert_int_equal(x.m.state, SVC_STOPPING);
        assert_int_equal(x.m.phase, SVC_PHASE_WAIT_DEPENDENTS);
        assert_int_equal(a, 0);
        a = post(&x, SVC_EV_DEPENDENTS_DOWN, false, NULL);
        assert_true(a & SVC_DO_STOP);
        /* The main process exiting on the stop signal changes nothing by itself. */
        post(&x, SVC_EV_EXIT, true, "killed by SIGTERM");
        assert_int_equal(x.m.state, SVC_STOPPING);
        a = post(&x, SVC_EV_GROUP_EMPTY, false, "ended after SIGTERM");
        assert_true(a & SVC_DO_CLEANUP);
        assert_int_equal(x.m.state, SVC_STOPPED);
        assert_string_equal(x.last.cause, "ended after SIGTERM");
        assert_int_equal(x.m.restarts, 0);
}

static void success_exit_stops_on_failure_policy(void **state) {
        SIM x;
        sim_init(&x);
        post(&x, SVC_EV_START, false, NULL);
        start_to_running(&x);
        post(&x, SVC_EV_EXIT, true, "exited with code 0");
        post(&x, SVC_EV_GROUP_EMPTY, false, "nothing left");
        assert_int_equal(x.m.state, SVC_STOPPED);
}

static void restart_never_fails_with_reason(void **state) {
        SIM x;
        sim_init(&x);
        x.p.restart = SVC_RESTART_NEVER;
        post(&x, SVC_EV_START, false, NULL);
        start_to_running(&x);
        crash(&x);
        assert_int_equal(x.m.state, SVC_FAILED);
        assert_string_equal(x.m.reason, "exited with code 1");
        assert_string_equal(x.last.cause, "exited with code 1");
        /* A start from failed starts afresh. */
        post(&x, SVC_EV_START, false, NULL);
        assert_int_equal(x.m.state, SVC_STARTING);
        assert_string_equal(x.m.reason, "");
}

static void restart_always_restarts_after_success(void **state) {
        SIM x;
        sim_init(&x);
        x.p.restart = SVC_RESTART_ALWAYS;
        post(&x, SVC_EV_START, false, NULL);
        start_to_running(&x);
        post(&x, SVC_EV_EXIT, true, "exited with code 0");
        post(&x, SVC_EV_GROUP_EMPTY, false, NULL);
        assert_int_equal(x.m.state, SVC_BACKOFF);
}

/* ---- backoff ------------------------------------------------------------------------------- */

static void backoff_doubles_to_the_cap(void **state) {
        SIM x;
        sim_init(&x);
        x.p.jitter_ppm = 0;
        x.p.restart_delay = 100 * MS;
        x.p.restart_delay_max = 1 * S;
        x.p.start_limit_count = 0;
        static const uint64_t want[] = { 100 * MS, 200 * MS, 400 * MS, 800 * MS, 1 * S, 1 * S, 1 * S };
        post(&x, SVC_EV_START, false, NULL);
        for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
                start_to_running(&x);
                at(&x, x.now + 5 * MS); /* short runs: never stable */
                crash(&x);
                assert_int_equal(x.m.state, SVC_BACKOFF);
                assert_int_equal(x.m.deadline - x.now, want[i]);
                fire(&x);
                assert_int_equal(x.m.state, SVC_STARTING);
                assert_int_equal(x.m.restarts, i + 1);
        }
}

static void backoff_base_saturates(void **state) {
        struct svc_policy p;
        svc_policy_default(&p);
        p.restart_delay = 1;
        p.restart_delay_max = UINT64_MAX;
        /* 2^63 and then the cap, no overflow however high the level. */
        assert_int_equal(svc_backoff_base(&p, 63), 1ull << 63);
        assert_true(svc_backoff_base(&p, 64) == UINT64_MAX || svc_backoff_base(&p, 64) >= 1ull << 63);
        assert_true(svc_backoff_base(&p, 100000) >= 1ull << 63);
        p.restart_delay = 0;
        p.restart_delay_max = 0;
        assert_int_equal(svc_backoff_base(&p, 5), 0);
}

static void jitter_stays_in_bounds(void **state) {
        struct svc_policy p;
        svc_policy_default(&p);
        p.restart_delay = 100 * MS;
        p.restart_delay_max = 30 * S;
        p.jitter_ppm = 250000; /* 25 % */
        for (unsigned level = 0; level < 12; level++) {
                uint64_t base = svc_backoff_base(&p, level);
                uint64_t low = base - base / 4;
                assert_int_equal(svc_backoff_delay(&p, level, 0), base);
                uint64_t d = svc_backoff_delay(&p, level, UINT32_MAX);
                assert_true(d >= low && d <= low + 1);
                /* A spread of random values: always within [base - 25 %, base]. */
                uint32_t r = 12345;
                uint64_t seen_min = UINT64_MAX, seen_max = 0;
                for (int i = 0; i < 1000; i++) {
                        r = r * 1103515245u + 12345u;
                        d = svc_backoff_delay(&p, level, r);
                        assert_true(d >= low && d <= base);
                        seen_min = d < seen_min ? d : seen_min;
                        seen_max = d > seen_max ? d : seen_max;
                }
                /* And it does spread: more than half the window is used. */
                assert_true(seen_max - seen_min > (base - low) / 2);
        }
        p.jitter_ppm = 1000000;
        assert_int_equal(svc_backoff_delay(&p, 0, UINT32_MAX) <= 1, true);
}

static void stable_run_resets_backoff(void **state) {
        SIM x;
        sim_init(&x);
        x.p.jitter_ppm = 0;
        x.p.restart_delay = 100 * MS;
        x.p.reset_after = 10 * S;
        x.p.start_limit_count = 0;
        post(&x, SVC_EV_START, false, NULL);
        for (int i = 0; i < 4; i++) {
                start_to_running(&x);
                crash(&x);
                fire(&x);
        }
        start_to_running(&x);
        at(&x, x.now + 9 * S); /* not yet stable */
        crash(&x);
        assert_int_equal(x.m.deadline - x.now, 1600 * MS);
        fire(&x);
        start_to_running(&x);
        at(&x, x.now + 10 * S); /* stable */
        crash(&x);
        assert_int_equal(x.m.deadline - x.now, 100 * MS);
}

static void ready_time_counts_not_start_time(void **state) {
        /* A run counts from readiness: a long start that then crashes is not "stable". */
        SIM x;
        sim_init(&x);
        x.p.jitter_ppm = 0;
        x.p.reset_after = 10 * S;
        x.p.start_limit_count = 0;
        post(&x, SVC_EV_START, false, NULL);
        start_to_running(&x);
        crash(&x);
        fire(&x);
        post(&x, SVC_EV_DEPS_READY, false, NULL);
        at(&x, x.now + 60 * S); /* slow start */
        post(&x, SVC_EV_READY, false, NULL);
        at(&x, x.now + 1 * S);
        crash(&x);
        assert_int_equal(x.m.deadline - x.now, 200 * MS);
}

/* ---- start limit --------------------------------------------------------------------------- */

static void start_limit_fails_crash_loop(void **state) {
        SIM x;
        sim_init(&x);
        x.p.start_limit_count = 5;
        x.p.start_limit_interval = 60 * S;
        post(&x, SVC_EV_START, false, NULL);
        for (int i = 0; i < 4; i++) {
                start_to_running(&x);
                crash(&x);
                assert_int_equal(x.m.state, SVC_BACKOFF);
                fire(&x);
        }
        start_to_running(&x);
        crash(&x);
        assert_int_equal(x.m.state, SVC_FAILED);
        assert_non_null(strstr(x.m.reason, "start-limit"));
        assert_non_null(strstr(x.m.reason, "5 ends within 60s"));
        assert_non_null(strstr(x.m.reason, "exited with code 1"));
        assert_string_equal(x.last.cause, x.m.reason);
        assert_int_equal(x.m.deadline, 0);
}

static void start_limit_window_slides_out(void **state) {
        SIM x;
        sim_init(&x);
        x.p.start_limit_count = 3;
        x.p.start_limit_interval = 10 * S;
        x.p.restart_delay = 1 * S;
        x.p.restart_delay_max = 1 * S;
        x.p.jitter_ppm = 0;
        post(&x, SVC_EV_START, false, NULL);
        for (int i = 0; i < 20; i++) {
                start_to_running(&x);
                at(&x, x.now + 5 * S); /* two ends per 10 s window: never three */
                crash(&x);
                assert_int_equal(x.m.state, SVC_BACKOFF);
                fire(&x);
        }
}

static void default_crash_loop_ends_in_failed(void **state) {
        /* With every default, a service that dies at once ends in failed in under a minute
         * and a half: no silent endless loop. */
        SIM x;
        sim_init(&x);
        x.random = UINT32_MAX / 2;
        uint64_t t0 = x.now;
        post(&x, SVC_EV_START, false, NULL);
        for (int i = 0; i < 100 && x.m.state != SVC_FAILED; i++) {
                post(&x, SVC_EV_DEPS_READY, false, NULL);
                at(&x, x.now + 1 * MS);
                post(&x, SVC_EV_EXIT, false, "exited with code 1 before it was ready");
                post(&x, SVC_EV_GROUP_EMPTY, false, NULL);
                if (x.m.state == SVC_BACKOFF)
                        fire(&x);
        }
        assert_int_equal(x.m.state, SVC_FAILED);
        assert_true(x.now - t0 < 90 * S);
        assert_int_equal(x.m.restarts, 9);
}

/* ---- timeouts and readiness --------------------------------------------------------------- */

static void ready_timeout_is_failed_start(void **state) {
        SIM x;
        sim_init(&x);
        x.p.ready_timeout = 5 * S;
        post(&x, SVC_EV_START, false, NULL);
        post(&x, SVC_EV_DEPS_READY, false, NULL);
        assert_int_equal(x.m.deadline, x.now + 5 * S);
        /* A stale timer before the deadline does nothing. */
        at(&x, x.now + 1 * S);
        post(&x, SVC_EV_TIMER, false, NULL);
        assert_int_equal(x.m.state, SVC_STARTING);
        unsigned a = fire(&x);
        assert_true(a & SVC_DO_STOP);
        assert_int_equal(x.m.state, SVC_STOPPING);
        assert_non_null(strstr(x.m.reason, "not ready within 5s"));
        post(&x, SVC_EV_GROUP_EMPTY, false, NULL);
        assert_int_equal(x.m.state, SVC_BACKOFF);
}

static void extend_timeout_moves_deadline(void **state) {
        SIM x;
        sim_init(&x);
        x.p.ready_timeout = 5 * S;
        post(&x, SVC_EV_START, false, NULL);
        post(&x, SVC_EV_DEPS_READY, false, NULL);
        at(&x, x.now + 4 * S);
        struct svc_input in = { .event = SVC_EV_EXTEND, .now = x.now, .usec = 10 * S };
        svc_machine_step(&x.m, &in, &x.last);
        assert_int_equal(x.m.deadline, x.now + 10 * S);
        /* Never shortens it. */
        in.usec = 1;
        svc_machine_step(&x.m, &in, &x.last);
        assert_int_equal(x.m.deadline, x.now + 10 * S);
}

static void exit_before_ready_is_failure_whatever_code(void **state) {
        SIM x;
        sim_init(&x);
        post(&x, SVC_EV_START, false, NULL);
        post(&x, SVC_EV_DEPS_READY, false, NULL);
        post(&x, SVC_EV_EXIT, true, "exited with code 0");
        assert_int_equal(x.m.state, SVC_STOPPING);
        assert_non_null(strstr(x.m.reason, "before it was ready"));
        post(&x, SVC_EV_GROUP_EMPTY, false, NULL);
        assert_int_equal(x.m.state, SVC_BACKOFF);
}

static void spawn_failure_backs_off(void **state) {
        SIM x;
        sim_init(&x);
        post(&x, SVC_EV_START, false, NULL);
        post(&x, SVC_EV_DEPS_READY, false, NULL);
        unsigned a = post(&x, SVC_EV_SPAWN_FAILED, false, "cannot exec 'x': No such file");
        assert_true(a & SVC_DO_STOP);
        post(&x, SVC_EV_GROUP_EMPTY, false, NULL);
        assert_int_equal(x.m.state, SVC_BACKOFF);
        assert_string_equal(x.m.reason, "cannot exec 'x': No such file");
}

static void watchdog_pings_and_times_out(void **state) {
        SIM x;
        sim_init(&x);
        x.p.watchdog = 2 * S;
        post(&x, SVC_EV_START, false, NULL);
        start_to_running(&x);
        assert_int_equal(x.m.deadline, x.now + 2 * S);
        for (int i = 0; i < 5; i++) {
                at(&x, x.now + 1 * S);
                post(&x, SVC_EV_WATCHDOG, false, NULL);
                assert_int_equal(x.m.deadline, x.now + 2 * S);
        }
        unsigned a = fire(&x);
        assert_true(a & SVC_DO_STOP);
        assert_non_null(strstr(x.m.reason, "watchdog"));
        post(&x, SVC_EV_GROUP_EMPTY, false, NULL);
        assert_int_equal(x.m.state, SVC_BACKOFF);
        /* The service can ask for it itself. */
        fire(&x);
        start_to_running(&x);
        post(&x, SVC_EV_WATCHDOG_FAIL, false, "watchdog: asked");
        assert_int_equal(x.m.state, SVC_STOPPING);
        assert_string_equal(x.m.reason, "watchdog: asked");
}

/* sd_notify WATCHDOG_USEC=: the service sets its own interval for the rest of the run. */
static void watchdog_interval_from_the_service(void **state) {
        SIM x;
        sim_init(&x);
        x.p.watchdog = 2 * S;
        post(&x, SVC_EV_START, false, NULL);
        start_to_running(&x);
        struct svc_input in = { .event = SVC_EV_WATCHDOG, .now = x.now, .usec = 10 * S };
        svc_machine_step(&x.m, &in, &x.last);
        assert_int_equal(x.m.deadline, x.now + 10 * S);
        /* Later pings keep the new interval. */
        at(&x, x.now + 5 * S);
        post(&x, SVC_EV_WATCHDOG, false, NULL);
        assert_int_equal(x.m.deadline, x.now + 10 * S);
        unsigned a = fire(&x);
        assert_true(a & SVC_DO_STOP);
        assert_non_null(strstr(x.m.reason, "no ping for 10s"));
        /* The next run starts with the configured interval again. */
        post(&x, SVC_EV_GROUP_EMPTY, false, NULL);
        fire(&x);
        start_to_running(&x);
        assert_int_equal(x.m.deadline, x.now + 2 * S);

        /* Without a configured watchdog, the service can ask for one. */
        SIM y;
        sim_init(&y);
        post(&y, SVC_EV_START, false, NULL);
        start_to_running(&y);
        assert_int_equal(y.m.deadline, 0);
        struct svc_input in2 = { .event = SVC_EV_WATCHDOG, .now = y.now, .usec = 3 * S };
        svc_machine_step(&y.m, &in2, &y.last);
        assert_int_equal(y.m.deadline, y.now + 3 * S);
}

/* ---- hooks ------------------------------------------------------------------------------------- */

static void hooks_run_in_order(void **state) {
        SIM x;
        sim_init(&x);
        for (int h = 0; h < SVC_HOOK_COUNT; h++)
                x.p.has_hook[h] = true;
        post(&x, SVC_EV_START, false, NULL);
        unsigned a = post(&x, SVC_EV_DEPS_READY, false, NULL);
        assert_int_equal(a, SVC_DO_PRE_START);
        assert_int_equal(x.m.phase, SVC_PHASE_PRE_START);
        a = post(&x, SVC_EV_HOOK_OK, false, NULL);
        assert_int_equal(a, SVC_DO_SPAWN);
        a = post(&x, SVC_EV_READY, false, "ready: test");
        assert_int_equal(a, SVC_DO_POST_START);
        assert_int_equal(x.m.state, SVC_STARTING);
        post(&x, SVC_EV_HOOK_OK, false, NULL);
        assert_int_equal(x.m.state, SVC_RUNNING);
        post(&x, SVC_EV_STOP, false, NULL);
        a = post(&x, SVC_EV_DEPENDENTS_DOWN, false, NULL);
        assert_int_equal(a, SVC_DO_PRE_STOP);
        a = post(&x, SVC_EV_HOOK_FAILED, false, "exited with code 1"); /* does not hold the stop */
        assert_int_equal(a, SVC_DO_STOP);
        a = post(&x, SVC_EV_GROUP_EMPTY, false, NULL);
        assert_int_equal(a, SVC_DO_POST_STOP);
        assert_int_equal(x.m.state, SVC_STOPPING);
        post(&x, SVC_EV_HOOK_OK, false, "exited with code 0");
        assert_int_equal(x.m.state, SVC_STOPPED);
}

static void failing_pre_start_fails_the_start(void **state) {
        SIM x;
        sim_init(&x);
        x.p.has_hook[SVC_HOOK_PRE_START] = true;
        x.p.has_hook[SVC_HOOK_POST_STOP] = true;
        post(&x, SVC_EV_START, false, NULL);
        post(&x, SVC_EV_DEPS_READY, false, NULL);
        unsigned a = post(&x, SVC_EV_HOOK_FAILED, false, "exited with code 2");
        assert_true(a & SVC_DO_STOP);
        assert_false(a & SVC_DO_SPAWN);
        assert_string_equal(x.m.reason, "pre-start failed: exited with code 2");
        a = post(&x, SVC_EV_GROUP_EMPTY, false, NULL);
        assert_int_equal(a, SVC_DO_POST_STOP); /* post-stop runs after any attempt */
        post(&x, SVC_EV_HOOK_OK, false, NULL);
        assert_int_equal(x.m.state, SVC_BACKOFF);
}

static void hung_hooks_are_killed(void **state) {
        SIM x;
        sim_init(&x);
        x.p.has_hook[SVC_HOOK_PRE_START] = true;
        x.p.has_hook[SVC_HOOK_PRE_STOP] = true;
        x.p.hook_timeout[SVC_HOOK_PRE_START] = 3 * S;
        x.p.hook_timeout[SVC_HOOK_PRE_STOP] = 4 * S;
        post(&x, SVC_EV_START, false, NULL);
        post(&x, SVC_EV_DEPS_READY, false, NULL);
        unsigned a = fire(&x);
        assert_true(a & SVC_DO_KILL_HOOK);
        assert_true(a & SVC_DO_STOP);
        assert_non_null(strstr(x.m.reason, "pre-start timed out after 3s"));
        post(&x, SVC_EV_GROUP_EMPTY, false, NULL);
        fire(&x);
        post(&x, SVC_EV_DEPS_READY, false, NULL);
        post(&x, SVC_EV_HOOK_OK, false, NULL);
        post(&x, SVC_EV_READY, false, NULL);
        post(&x, SVC_EV_STOP, false, NULL);
        post(&x, SVC_EV_DEPENDENTS_DOWN, false, NULL);
        assert_int_equal(x.m.phase, SVC_PHASE_PRE_STOP);
        a = fire(&x);
        assert_true(a & SVC_DO_KILL_HOOK);
        assert_true(a & SVC_DO_STOP);
        /* The late exit of the killed hook is not taken for anything. */
        post(&x, SVC_EV_HOOK_OK, false, NULL);
        assert_int_equal(x.m.phase, SVC_PHASE_KILL);
}

/* ---- requests in every state ------------------------------------------------------------- */

static void stop_during_backoff_and_waiting(void **state) {
        SIM x;
        sim_init(&x);
        post(&x, SVC_EV_START, false, NULL);
        start_to_running(&x);
        crash(&x);
        assert_int_equal(x.m.state, SVC_BACKOFF);
        post(&x, SVC_EV_STOP, false, NULL);
        assert_int_equal(x.m.state, SVC_STOPPED);
        assert_int_equal(x.m.deadline, 0);
        post(&x, SVC_EV_START, false, NULL);
        post(&x, SVC_EV_STOP, false, NULL); /* still waiting for dependencies */
        assert_int_equal(x.m.state, SVC_STOPPED);
}

static void stop_while_stopping_cancels_restart(void **state) {
        SIM x;
        sim_init(&x);
        post(&x, SVC_EV_START, false, NULL);
        start_to_running(&x);
        post(&x, SVC_EV_EXIT, false, "exited with code 1");
        post(&x, SVC_EV_STOP, false, NULL);
        post(&x, SVC_EV_GROUP_EMPTY, false, NULL);
        assert_int_equal(x.m.state, SVC_STOPPED);
}

static void start_while_stopping_restarts_at_once(void **state) {
        SIM x;
        sim_init(&x);
        post(&x, SVC_EV_START, false, NULL);
        start_to_running(&x);
        post(&x, SVC_EV_STOP, false, NULL);
        post(&x, SVC_EV_START, false, NULL);
        post(&x, SVC_EV_DEPENDENTS_DOWN, false, NULL);
        post(&x, SVC_EV_GROUP_EMPTY, false, NULL);
        assert_int_equal(x.m.state, SVC_STARTING);
        assert_int_equal(x.m.phase, SVC_PHASE_WAIT_DEPS);
}

static void every_event_in_every_state_is_safe(void **state) {
        /* A random walk through the table: whatever arrives, the machine stays in a valid
         * state, backoff always has a deadline, down states never have one. */
        SIM x;
        sim_init(&x);
        x.p.watchdog = 3 * S;
        for (int h = 0; h < SVC_HOOK_COUNT; h++)
                x.p.has_hook[h] = (h % 2) == 0;
        uint32_t r = 99;
        for (int i = 0; i < 200000; i++) {
                r = r * 1664525u + 1013904223u;
                enum svc_event ev = (enum svc_event)((r >> 8) % SVC_EV_COUNT);
                x.random = r;
                at(&x, x.now + ((r >> 20) % 4000) * MS);
                post(&x, ev, (r >> 3) & 1, "cause");
                assert_true((unsigned)x.m.state < SVC_STATE_COUNT);
                assert_int_equal(x.last.to, x.m.state);
                if (x.m.state == SVC_BACKOFF)
                        assert_true(x.m.deadline != 0);
                if (svc_is_down(&x.m))
                        assert_int_equal(x.m.deadline, 0);
                if (x.m.state == SVC_STOPPED && ((r >> 5) & 7) == 0)
                        post(&x, SVC_EV_START, false, NULL);
        }
}

/* ---- dependencies ------------------------------------------------------------------------- */

/* db <- app (requires db) <- web (after app): a tiny driver as supervise's deps pass. */
struct node {
        const char *name;
        int after;      /* index or -1 */
        bool required;
        struct sim x;
};

static void nodes_done(struct node *n, int count) {
        for (int i = 0; i < count; i++)
                sim_done(&n[i].x);
}

static int order[16];
static int n_order;

static void deps_pass(struct node *n, int count) {
        for (bool again = true; again;) {
                again = false;
                for (int i = 0; i < count; i++) {
                        struct svc_machine *m = &n[i].x.m;
                        if (m->state == SVC_STARTING && m->phase == SVC_PHASE_WAIT_DEPS) {
                                enum svc_gate g = n[i].after < 0 ? SVC_GATE_GO
                                        : svc_start_gate(&n[n[i].after].x.m, n[i].required);
                                if (g == SVC_GATE_GO) {
                                        if (post(&n[i].x, SVC_EV_DEPS_READY, false, NULL) & SVC_DO_SPAWN)
                                                order[n_order++] = i;
                                        again = true;
                                } else if (g == SVC_GATE_FAIL) {
                                        post(&n[i].x, SVC_EV_DEPS_FAILED, false, "required failed");
                                        again = true;
                                }
                        } else if (m->state == SVC_STOPPING && m->phase == SVC_PHASE_WAIT_DEPENDENTS) {
                                bool hold = false;
                                for (int k = 0; k < count; k++)
                                        if (n[k].after == i && !svc_stop_gate(&n[k].x.m))
                                                hold = true;
                                if (!hold) {
                                        if (post(&n[i].x, SVC_EV_DEPENDENTS_DOWN, false, NULL) & SVC_DO_STOP)
                                                order[n_order++] = i;
                                        again = true;
                                }
                        }
                }
        }
}

static void dependency_order(void **state) {
        struct node n[3] = {
                { .name = "web", .after = 1 }, { .name = "app", .after = 2, .required = true },
                { .name = "db", .after = -1 },
        };
        for (int i = 0; i < 3; i++)
                sim_init(&n[i].x);
        n_order = 0;
        for (int i = 0; i < 3; i++) /* posted in an order that is not the dependency order */
                post(&n[i].x, SVC_EV_START, false, NULL);
        deps_pass(n, 3);
        assert_int_equal(n_order, 1);
        assert_int_equal(order[0], 2); /* db first */
        assert_int_equal(n[0].x.m.phase, SVC_PHASE_WAIT_DEPS);
        post(&n[2].x, SVC_EV_READY, false, NULL);
        deps_pass(n, 3);
        assert_int_equal(n_order, 2);
        assert_int_equal(order[1], 1); /* then app, once db is ready */
        post(&n[1].x, SVC_EV_READY, false, NULL);
        deps_pass(n, 3);
        assert_int_equal(order[2], 0);
        post(&n[0].x, SVC_EV_READY, false, NULL);
        for (int i = 0; i < 3; i++)
                assert_int_equal(n[i].x.m.state, SVC_RUNNING);

        /* Stop all: web, then app, then db, each once the one after it is down. */
        n_order = 0;
        for (int i = 2; i >= 0; i--)
                post(&n[i].x, SVC_EV_STOP, false, NULL);
        deps_pass(n, 3);
        assert_int_equal(n_order, 1);
        assert_int_equal(order[0], 0);
        post(&n[0].x, SVC_EV_GROUP_EMPTY, false, NULL);
        deps_pass(n, 3);
        assert_int_equal(order[1], 1);
        post(&n[1].x, SVC_EV_GROUP_EMPTY, false, NULL);
        deps_pass(n, 3);
        assert_int_equal(order[2], 2);
        post(&n[2].x, SVC_EV_GROUP_EMPTY, false, NULL);
        for (int i = 0; i < 3; i++)
                assert_int_equal(n[i].x.m.state, SVC_STOPPED);
        nodes_done(n, 3);
}

static void required_failure_fails_dependent(void **state) {
        struct node n[2] = { { .name = "app", .after = 1, .required = true },
                             { .name = "db", .after = -1 } };
        for (int i = 0; i < 2; i++)
                sim_init(&n[i].x);
        n[1].x.p.restart = SVC_RESTART_NEVER;
        n_order = 0;
        post(&n[0].x, SVC_EV_START, false, NULL);
        post(&n[1].x, SVC_EV_START, false, NULL);
        deps_pass(n, 2);
        post(&n[1].x, SVC_EV_SPAWN_FAILED, false, "cannot exec");
        post(&n[1].x, SVC_EV_GROUP_EMPTY, false, NULL);
        assert_int_equal(n[1].x.m.state, SVC_FAILED);
        deps_pass(n, 2);
        assert_int_equal(n[0].x.m.state, SVC_FAILED);
        assert_string_equal(n[0].x.m.reason, "required failed");
        /* With after = only, a failed dependency does not hold the start. */
        assert_int_equal(svc_start_gate(&n[1].x.m, false), SVC_GATE_GO);
        /* A dependency in backoff is still coming. */
        SIM b;
        sim_init(&b);
        post(&b, SVC_EV_START, false, NULL);
        start_to_running(&b);
        crash(&b);
        assert_int_equal(svc_start_gate(&b.m, true), SVC_GATE_WAIT);
        assert_true(svc_wants_up(&b.m));
        nodes_done(n, 2);
}

/* ---- requires: stopped with the required service, back with it ------------------------ */

static void dep_down_stops_and_holds_a_running_service(void **state) {
        SIM x;
        sim_init(&x);
        post(&x, SVC_EV_START, false, NULL);
        start_to_running(&x);
        unsigned a = post(&x, SVC_EV_DEP_DOWN, false, "required service 'db' is stopping");
        /* A requested stop: it waits for its own dependents, then pre-stop and the ladder. */
        assert_int_equal(x.m.state, SVC_STOPPING);
        assert_int_equal(x.m.phase, SVC_PHASE_WAIT_DEPENDENTS);
        assert_int_equal(a, 0);
        assert_true(x.last.changed);
        assert_string_equal(x.last.cause, "required service 'db' is stopping");
        assert_true(x.m.held);
        assert_string_equal(x.m.reason, "required service 'db' is stopping");
        assert_true(post(&x, SVC_EV_DEPENDENTS_DOWN, false, NULL) & SVC_DO_STOP);
        post(&x, SVC_EV_GROUP_EMPTY, false, "ended after SIGTERM");
        assert_int_equal(x.m.state, SVC_STOPPED);
        assert_true(x.m.held);          /* the caller starts it again once db is back */
        assert_false(svc_wants_up(&x.m));
        /* A second DEP_DOWN while down changes nothing. */
        post(&x, SVC_EV_DEP_DOWN, false, "again");
        assert_false(x.last.changed);
        assert_int_equal(x.m.state, SVC_STOPPED);
        /* Coming back is an ordinary start; it clears the mark. */
        post(&x, SVC_EV_START, false, "required service 'db' is running again");
        assert_false(x.m.held);
        assert_int_equal(x.m.state, SVC_STARTING);
        assert_string_equal(x.last.cause, "required service 'db' is running again");
        start_to_running(&x);
}

static void dep_down_in_backoff_and_while_restarting(void **state) {
        SIM x;
        sim_init(&x);
        post(&x, SVC_EV_START, false, NULL);
        start_to_running(&x);
        crash(&x);
        assert_int_equal(x.m.state, SVC_BACKOFF);
        post(&x, SVC_EV_DEP_DOWN, false, "required service 'db' failed: exited with code 1");
        assert_int_equal(x.m.state, SVC_STOPPED);
        assert_int_equal(x.m.deadline, 0);
        assert_true(x.m.held);
        assert_string_equal(x.last.cause, "required service 'db' failed: exited with code 1");

        /* Stopping after a crash, on its way to a restart: the restart is cancelled. */
        post(&x, SVC_EV_START, false, NULL);
        start_to_running(&x);
        post(&x, SVC_EV_EXIT, false, "exited with code 1");
        assert_int_equal(x.m.state, SVC_STOPPING);
        assert_true(svc_wants_up(&x.m));
        post(&x, SVC_EV_DEP_DOWN, false, "required service 'db' is stopping");
        assert_true(x.m.held);
        post(&x, SVC_EV_GROUP_EMPTY, false, "ended");
        assert_int_equal(x.m.state, SVC_STOPPED);
}

static void dep_down_leaves_a_service_that_is_down_alone(void **state) {
        SIM x;
        sim_init(&x);
        post(&x, SVC_EV_DEP_DOWN, false, "required service 'db' is stopping");
        assert_int_equal(x.m.state, SVC_STOPPED);
        assert_false(x.m.held);         /* it was not wanted up: nothing to bring back */
        /* Stopped by request, then its dependency goes: still not held. */
        post(&x, SVC_EV_START, false, NULL);
        start_to_running(&x);
        post(&x, SVC_EV_STOP, false, NULL);
        post(&x, SVC_EV_DEP_DOWN, false, "required service 'db' is stopping");
        assert_false(x.m.held);
        /* A stop by request clears the mark of a held service. */
        post(&x, SVC_EV_DEPENDENTS_DOWN, false, NULL);
        post(&x, SVC_EV_GROUP_EMPTY, false, NULL);
        post(&x, SVC_EV_START, false, NULL);
        start_to_running(&x);
        post(&x, SVC_EV_DEP_DOWN, false, "x");
        assert_true(x.m.held);
        post(&x, SVC_EV_STOP, false, "tend ctl stop");
        assert_false(x.m.held);
}

static void going_down_is_for_good_only(void **state) {
        SIM d;
        sim_init(&d);
        assert_true(svc_going_down(&d.m)); /* stopped */
        post(&d, SVC_EV_START, false, NULL);
        assert_false(svc_going_down(&d.m));
        start_to_running(&d);
        assert_false(svc_going_down(&d.m));
        /* A crash on its way to a restart is not going down. */
        post(&d, SVC_EV_EXIT, false, "exited with code 1");
        assert_false(svc_going_down(&d.m));
        post(&d, SVC_EV_GROUP_EMPTY, false, NULL);
        assert_int_equal(d.m.state, SVC_BACKOFF);
        assert_false(svc_going_down(&d.m));
        fire(&d);
        start_to_running(&d);
        /* A stop by request is, from its first moment (while it waits for dependents). */
        post(&d, SVC_EV_STOP, false, NULL);
        assert_int_equal(d.m.phase, SVC_PHASE_WAIT_DEPENDENTS);
        assert_true(svc_going_down(&d.m));
        /* ... unless a start comes meanwhile (tend ctl restart). */
        post(&d, SVC_EV_START, false, NULL);
        assert_false(svc_going_down(&d.m));
        post(&d, SVC_EV_DEPENDENTS_DOWN, false, NULL);
        post(&d, SVC_EV_GROUP_EMPTY, false, NULL);
        start_to_running(&d);
        /* A failure with no restart is going down while it stops, and failed after. */
        d.p.restart = SVC_RESTART_NEVER;
        post(&d, SVC_EV_EXIT, false, "exited with code 1");
        assert_int_equal(d.m.state, SVC_STOPPING);
        assert_true(svc_going_down(&d.m));
        post(&d, SVC_EV_GROUP_EMPTY, false, NULL);
        assert_int_equal(d.m.state, SVC_FAILED);
        assert_true(svc_going_down(&d.m));
}

/* sd_notify RELOADING=1: a state of its own, back to running on READY=1; in between a stop,
 * an exit and the watchdog act as in running, and readiness (for dependents) holds. */
static void reloading_is_a_state_of_its_own(void **state) {
        SIM x;
        sim_init(&x);
        x.p.watchdog = 2 * S;
        post(&x, SVC_EV_START, false, NULL);
        start_to_running(&x);
        uint64_t ready_since = x.m.ready_since;
        /* Not while starting: ignored. */
        at(&x, x.now + 1 * S);
        unsigned a = post(&x, SVC_EV_RELOADING, false, "reloading: test");
        assert_int_equal(a, 0);
        assert_int_equal(x.m.state, SVC_RELOADING);
        assert_true(x.last.changed);
        assert_int_equal(x.last.from, SVC_RUNNING);
        assert_string_equal(x.last.cause, "reloading: test");
        assert_true(svc_is_up(&x.m));
        assert_true(svc_wants_up(&x.m));
        assert_false(svc_going_down(&x.m));
        assert_int_equal(svc_start_gate(&x.m, true), SVC_GATE_GO);
        /* The watchdog goes on: a ping moves it, as in running. */
        post(&x, SVC_EV_WATCHDOG, false, NULL);
        assert_int_equal(x.m.deadline, x.now + 2 * S);
        post(&x, SVC_EV_READY, false, "reloaded: test");
        assert_int_equal(x.m.state, SVC_RUNNING);
        assert_string_equal(x.last.cause, "reloaded: test");
        assert_int_equal(x.m.ready_since, ready_since); /* uptime goes on */
        assert_int_equal(x.m.deadline, x.now + 2 * S);
        /* A reload that hangs is caught by the watchdog. */
        post(&x, SVC_EV_RELOADING, false, NULL);
        assert_string_equal(x.last.cause, "reloading");
        a = fire(&x);
        assert_true(a & SVC_DO_STOP);
        assert_int_equal(x.m.state, SVC_STOPPING);
        assert_non_null(strstr(x.m.reason, "watchdog"));
        post(&x, SVC_EV_GROUP_EMPTY, false, NULL);
        assert_int_equal(x.m.state, SVC_BACKOFF);
        /* An exit while reloading is judged as in running. */
        fire(&x);
        start_to_running(&x);
        post(&x, SVC_EV_RELOADING, false, NULL);
        a = post(&x, SVC_EV_EXIT, false, "exited with code 2");
        assert_true(a & SVC_DO_STOP);
        assert_int_equal(x.m.state, SVC_STOPPING);
        assert_int_equal(x.m.after, SVC_AFTER_RESTART);
        post(&x, SVC_EV_GROUP_EMPTY, false, NULL);
        fire(&x);
        start_to_running(&x);
        /* A stop while reloading is a stop. */
        post(&x, SVC_EV_RELOADING, false, NULL);
        post(&x, SVC_EV_STOP, false, NULL);
        assert_int_equal(x.m.state, SVC_STOPPING);
        assert_int_equal(x.m.phase, SVC_PHASE_WAIT_DEPENDENTS);
        post(&x, SVC_EV_DEPENDENTS_DOWN, false, NULL);
        post(&x, SVC_EV_GROUP_EMPTY, false, NULL);
        assert_int_equal(x.m.state, SVC_STOPPED);
        /* RELOADING before the service is ready changes nothing. */
        post(&x, SVC_EV_START, false, NULL);
        post(&x, SVC_EV_DEPS_READY, false, NULL);
        a = post(&x, SVC_EV_RELOADING, false, NULL);
        assert_int_equal(a, 0);
        assert_int_equal(x.m.state, SVC_STARTING);
        assert_false(x.last.changed);
}

static void names(void **state) {
        assert_string_equal(svc_state_name(SVC_RELOADING), "reloading");
        assert_string_equal(svc_state_name(SVC_BACKOFF), "backoff");
        assert_string_equal(svc_state_name(SVC_FAILED), "failed");
        assert_string_equal(svc_state_name((enum svc_state)99), "unknown");
        assert_string_equal(svc_phase_name(SVC_PHASE_PRE_START), "pre-start");
}

static const struct CMUnitTest tests[] = {
        cmocka_unit_test(plain_start_and_stop),
        cmocka_unit_test(success_exit_stops_on_failure_policy),
        cmocka_unit_test(restart_never_fails_with_reason),
        cmocka_unit_test(restart_always_restarts_after_success),
        cmocka_unit_test(backoff_doubles_to_the_cap),
        cmocka_unit_test(backoff_base_saturates),
        cmocka_unit_test(jitter_stays_in_bounds),
        cmocka_unit_test(stable_run_resets_backoff),
        cmocka_unit_test(ready_time_counts_not_start_time),
        cmocka_unit_test(start_limit_fails_crash_loop),
        cmocka_unit_test(start_limit_window_slides_out),
        cmocka_unit_test(default_crash_loop_ends_in_failed),
        cmocka_unit_test(ready_timeout_is_failed_start),
        cmocka_unit_test(extend_timeout_moves_deadline),
        cmocka_unit_test(exit_before_ready_is_failure_whatever_code),
        cmocka_unit_test(spawn_failure_backs_off),
        cmocka_unit_test(watchdog_pings_and_times_out),
        cmocka_unit_test(watchdog_interval_from_the_service),
        cmocka_unit_test(hooks_run_in_order),
        cmocka_unit_test(failing_pre_start_fails_the_start),
        cmocka_unit_test(hung_hooks_are_killed),
        cmocka_unit_test(stop_during_backoff_and_waiting),
        cmocka_unit_test(stop_while_stopping_cancels_restart),
        cmocka_unit_test(start_while_stopping_restarts_at_once),
        cmocka_unit_test(every_event_in_every_state_is_safe),
        cmocka_unit_test(dependency_order),
        cmocka_unit_test(required_failure_fails_dependent),
        cmocka_unit_test(dep_down_stops_and_holds_a_running_service),
        cmocka_unit_test(dep_down_in_backoff_and_while_restarting),
        cmocka_unit_test(dep_down_leaves_a_service_that_is_down_alone),
        cmocka_unit_test(going_down_is_for_good_only),
        cmocka_unit_test(reloading_is_a_state_of_its_own),
        cmocka_unit_test(names),
};

TEND_TEST_MAIN(tests)
