/* service.h — a supervised service's life as a pure state machine (lib/service.c).
 *
 * Why an internal header and not a section of tend.h: the machine is libtend's "service" box
 * (DESIGN §2) and is compiled into libtend, but its shape will still change when `tend ctl`
 * (start/stop/restart/wait over a socket) arrives; putting it in tend.h now would freeze an
 * ABI of the shared library around structs that are not settled. The program and the unit
 * tests include it through -Ilib; it can move to tend.h once it is stable.
 *
 * The machine does no I/O and reads no clock: each call gets the time (and a random number
 * for the jitter) in its input, and answers with the new state, the cause to log, and a set
 * of actions for the caller to carry out (run a hook, spawn the main process, stop the
 * group, ...). The caller feeds the results of those actions back as events. One deadline
 * per service (start timeout, hook timeout, watchdog, next restart) is kept in the machine;
 * the caller arms one timer for it and sends SVC_EV_TIMER when it passes.
 *
 *   states:  stopped --START--> starting --READY--> running --EXIT--> stopping --> backoff
 *            backoff --TIMER--> starting;  stopping --> stopped | failed (with a reason)
 *            running --RELOADING--> reloading --READY--> running
 *
 * The transitions are a table of state x event (service.c, `table`), each entry a small
 * function; an empty entry means the event does not apply in that state and is ignored (a
 * late hook exit, a stale timer). */
#ifndef TEND_SERVICE_H
#define TEND_SERVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum svc_state {
        SVC_STOPPED = 0,
        SVC_STARTING,  /* waiting for dependencies, pre-start, spawned and not yet ready */
        SVC_RUNNING,   /* ready */
        SVC_STOPPING,  /* pre-stop, stop ladder, post-stop (also after a crash) */
        SVC_BACKOFF,   /* waiting for the next try (deadline = its time) */
        SVC_FAILED,    /* given up (reason says why) */
        SVC_RELOADING, /* ready, and reloading its own configuration (sd_notify RELOADING=1)
                          until it says READY=1 again; otherwise as running */
        SVC_STATE_COUNT
};

/* What the service is doing inside its state. */
enum svc_phase {
        SVC_PHASE_NONE = 0,
        SVC_PHASE_WAIT_DEPS,       /* starting: services it starts after are not ready yet */
        SVC_PHASE_PRE_START,       /* starting: the pre-start hook runs */
        SVC_PHASE_START,           /* starting: main spawned, waiting for readiness */
        SVC_PHASE_POST_START,      /* starting: ready; the post-start hook runs */
        SVC_PHASE_WAIT_DEPENDENTS, /* stopping: services that start after it are stopping */
        SVC_PHASE_PRE_STOP,        /* stopping: the pre-stop hook runs */
        SVC_PHASE_KILL,            /* stopping: stop command / ladder until the group is empty */
        SVC_PHASE_POST_STOP,       /* stopping: the post-stop hook runs */
        SVC_PHASE_COUNT
};

enum svc_event {
        SVC_EV_START = 0,        /* want it up (start-up, operator, reload) */
        SVC_EV_STOP,             /* want it down */
        SVC_EV_DEPS_READY,       /* every service it starts after is ready (or not coming) */
        SVC_EV_DEPS_FAILED,      /* a required service failed or is down (cause says which) */
        SVC_EV_DEPENDENTS_DOWN,  /* no service that starts after it is still stopping */
        SVC_EV_HOOK_OK,          /* the hook of the current phase exited successfully */
        SVC_EV_HOOK_FAILED,      /* ... failed, or could not be started (cause says how) */
        SVC_EV_SPAWN_FAILED,     /* the main process could not be started */
        SVC_EV_READY,            /* readiness reached (cause: how) */
        SVC_EV_EXIT,             /* the main process ended (success: counted as success) */
        SVC_EV_GROUP_EMPTY,      /* stopping: the main process and the whole group are gone */
        SVC_EV_TIMER,            /* the machine's deadline has passed */
        SVC_EV_WATCHDOG,         /* a watchdog ping: the deadline moves on */
        SVC_EV_WATCHDOG_FAIL,    /* the service asked for the watchdog action (cause) */
        SVC_EV_EXTEND,           /* the start/stop deadline moves to at least now + usec */
        SVC_EV_DEP_DOWN,         /* a service it requires is going down for good (stopped by
                                    request, failed; cause says which): if it wants to be
                                    up, it stops as for SVC_EV_STOP and is held (see held) */
        SVC_EV_RELOADING,        /* running: the service says it reloads (RELOADING=1); it is
                                    back with SVC_EV_READY */
        SVC_EV_COUNT
};

/* Actions for the caller, as bits of svc_step.actions, carried out in this order. */
enum svc_action {
        SVC_DO_KILL_HOOK = 1u << 0,  /* SIGKILL the running hook (it timed out); its exit is
                                        no longer reported */
        SVC_DO_PRE_START = 1u << 1,  /* run the pre-start hook */
        SVC_DO_SPAWN = 1u << 2,      /* spawn the main process (and start readiness watching) */
        SVC_DO_POST_START = 1u << 3, /* run the post-start hook */
        SVC_DO_PRE_STOP = 1u << 4,   /* run the pre-stop hook */
        SVC_DO_STOP = 1u << 5,       /* stop everything in the group (stop command, ladder);
                                        report SVC_EV_GROUP_EMPTY when all is gone */
        SVC_DO_POST_STOP = 1u << 6,  /* run the post-stop hook */
        SVC_DO_CLEANUP = 1u << 7,    /* the service is down: release per-run resources */
};

enum svc_restart { SVC_RESTART_ON_FAILURE = 0, SVC_RESTART_ALWAYS, SVC_RESTART_NEVER };

enum svc_hook { SVC_HOOK_PRE_START = 0, SVC_HOOK_POST_START, SVC_HOOK_PRE_STOP,
                SVC_HOOK_POST_STOP, SVC_HOOK_COUNT };

/* What the machine needs of a service's configuration. Times in microseconds; 0 means
 * "none" for the timeouts and the watchdog. */
struct svc_policy {
        enum svc_restart restart;
        uint64_t restart_delay;      /* first delay */
        uint64_t restart_delay_max;  /* cap of the doubling */
        uint32_t jitter_ppm;         /* the delay is drawn from [d - d*jitter, d] */
        uint64_t reset_after;        /* a run this long resets the backoff and the limit */
        unsigned start_limit_count;  /* this many failures within ... (0: no limit) */
        uint64_t start_limit_interval; /* ... this interval: failed */
        uint64_t ready_timeout;
        bool has_hook[SVC_HOOK_COUNT];
        uint64_t hook_timeout[SVC_HOOK_COUNT];
        uint64_t watchdog;
};

#define SVC_CAUSE_MAX 192

/* What becomes of a service once its stopping is done. */
enum svc_after { SVC_AFTER_STOPPED = 0, SVC_AFTER_RESTART, SVC_AFTER_FAILED };

struct svc_machine {
        const struct svc_policy *policy;
        enum svc_state state;
        enum svc_phase phase;
        enum svc_after after;     /* stopping: where it goes next */
        bool restart_now;         /* stopping: START came meanwhile (no backoff wait) */
        bool pre_stop_due;        /* stopping: the main was up, so pre-stop runs */
        bool attempted;           /* a start got past waiting: post-stop applies */
        bool held;                /* stopped by SVC_EV_DEP_DOWN while it wanted to be up: the
                                     caller starts it again once what it requires is running.
                                     Any SVC_EV_START or SVC_EV_STOP clears it. */
        uint64_t deadline;        /* 0: none */
        uint64_t since;           /* when the current state began */
        uint64_t ready_since;     /* when it last became ready (0: not in this run) */
        unsigned backoff_level;   /* restarts since the last reset */
        uint64_t window_start;    /* start-limit: first failure of the current window */
        unsigned window_failures;
        unsigned restarts;        /* automatic restarts, ever */
        uint64_t watchdog_usec;   /* WATCHDOG_USEC= sent by this run of the service: its
                                     watchdog interval until the next start (0: the policy's) */
        char *reason;             /* failed: why; otherwise the last failure; "" when none.
                                     At most SVC_CAUSE_MAX - 1 characters, malloc'd when
                                     there is one: svc_machine_done() releases it. */
};

struct svc_input {
        enum svc_event event;
        uint64_t now;
        uint32_t random;     /* uniform; used for the jitter of a backoff delay */
        bool success;        /* SVC_EV_EXIT: the exit counts as success (success-exit) */
        uint64_t usec;       /* SVC_EV_EXTEND */
        const char *cause;   /* text for the log: "ready: notify", "exited with code 3" */
};

struct svc_step {
        bool changed;            /* the state changed (log it) */
        enum svc_state from, to;
        unsigned actions;        /* enum svc_action bits */
        char cause[SVC_CAUSE_MAX];
};

void svc_policy_default(struct svc_policy *p);
void svc_machine_init(struct svc_machine *m, const struct svc_policy *policy, uint64_t now);
/* Release what the machine holds (its reason). */
void svc_machine_done(struct svc_machine *m);
/* Feed one event. *ret_step says what changed and what to do. Never fails. */
void svc_machine_step(struct svc_machine *m, const struct svc_input *in,
                      struct svc_step *ret_step);

/* The backoff delay for a given level, before and after jitter (random in [0, 2^32)). */
uint64_t svc_backoff_base(const struct svc_policy *p, unsigned level);
uint64_t svc_backoff_delay(const struct svc_policy *p, unsigned level, uint32_t random);

/* "stopped", "starting", ... and "waiting-deps", "pre-start", ... for messages. */
const char *svc_state_name(enum svc_state s);
const char *svc_phase_name(enum svc_phase p);
/* Is the service up or on its way up (starting, running, backoff, stopping to restart)? */
bool svc_wants_up(const struct svc_machine *m);
/* Is it ready: running, or reloading (which is running while it re-reads its own
 * configuration)? */
bool svc_is_up(const struct svc_machine *m);
/* Is it down for good until asked again (stopped or failed)? */
bool svc_is_down(const struct svc_machine *m);

/* Dependencies. A service that starts after `dep` (after = / requires =) may go on when the
 * gate says SVC_GATE_GO; SVC_GATE_FAIL only for a required dependency that failed or went
 * down. */
enum svc_gate { SVC_GATE_WAIT = 0, SVC_GATE_GO, SVC_GATE_FAIL };
enum svc_gate svc_start_gate(const struct svc_machine *dep, bool required);
/* Is dep (a required service) going down for good: stopping not to restart, stopped or
 * failed? A crash on its way to a restart (backoff) is not. */
bool svc_going_down(const struct svc_machine *dep);
/* A service being stopped waits while a service that starts after it is still stopping:
 * true when `dependent` no longer holds it back. */
bool svc_stop_gate(const struct svc_machine *dependent);

#endif
