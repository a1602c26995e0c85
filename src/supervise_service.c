/* supervise_service.c — one service at run time.
 *
 * The decisions are the state machine's (lib/service.c); this file carries out its actions
 * and turns what the processes do into its events. Every process a service starts — the
 * main process, the hooks, the probes, the stop command — runs in the service's group (a
 * cgroup leaf when available), so a stop reaches all of them and their descendants.
 *
 * Process handles are never freed from inside their own callbacks (a stop ladder's callback
 * runs before the exit callback of the same process and must not free it): a handle that
 * is no longer of use is buried (svc_bury) and freed by the collector at the next turn of
 * the loop, once it has exited. */
#include "supervise.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

/* ---- exits and messages ------------------------------------------------------------------ */

void svc_describe_exit(int err, const struct tend_exit *ex, char *buf, size_t size) {
        if (err < 0 || !ex)
                snprintf(buf, size, "ended (exit status lost: %s)", tend_strerror(err));
        else if (ex->signo)
                snprintf(buf, size, "killed by SIG%s%s", tend_signal_name(ex->signo),
                         ex->core ? " (core dumped)" : "");
        else
                snprintf(buf, size, "exited with code %d", ex->code);
}

static void log_transition(struct svc *s, const struct svc_step *st) {
        if (!st->changed)
                return;
        sv_say(s->sv, "svc '%s': %s -> %s (%s)", s->cfg->name, svc_state_name(st->from),
               svc_state_name(st->to), st->cause[0] ? st->cause : "-");
        control_on_transition(s->sv, s); /* `tend ctl wait` */
}

/* ---- burying processes ------------------------------------------------------------------ */

static void on_buried_exit(tend_proc *p, int err, const struct tend_exit *ex, void *userdata) {
        struct svc *s = userdata;
        sv_schedule_gc(s->sv);
}

void svc_bury(struct svc *s, tend_proc *p) {
        if (!p)
                return;
        if (s->n_dead == s->cap_dead) {
                size_t cap = s->cap_dead ? s->cap_dead * 2 : 4;
                tend_proc **nd = realloc(s->dead, cap * sizeof *nd);
                if (!nd) {
                        /* Rather leak a handle than free it under a running callback. */
                        tend_proc_on_exit(p, NULL, NULL);
                        return;
                }
                s->dead = nd;
                s->cap_dead = cap;
        }
        s->dead[s->n_dead++] = p;
        tend_proc_on_exit(p, on_buried_exit, s);
        sv_schedule_gc(s->sv);
}

void svc_collect(struct svc *s) {
        size_t k = 0;
        for (size_t i = 0; i < s->n_dead; i++) {
                /* A ladder that ran on it is over too: the service moved on only after it. */
                if (tend_proc_exited(s->dead[i]))
                        tend_proc_free(s->dead[i]);
                else
                        s->dead[k++] = s->dead[i];
        }
        s->n_dead = k;
}

/* ---- environment and spawning ----------------------------------------------------------- */

static bool env_name_eq(const char *a, const char *b) {
        while (*a && *a != '=' && *a == *b)
                a++, b++;
        return (*a == '=' || !*a) && (*b == '=' || !*b);
}

/* What a service must not inherit from whoever started tend: a service manager above us
 * speaks to tend, not to our services. */
static bool env_is_managers(const char *e) {
        static const char *const names[] = { "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID",
                                             "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES",
                                             "MAINPID" };
        for (size_t i = 0; i < ARRAY_SIZE(names); i++)
                if (env_name_eq(e, names[i]))
                        return true;
        return false;
}

static int env_add(char ***v, size_t *n, size_t *cap, char *e) {
        for (size_t i = 0; i < *n; i++)
                if (env_name_eq((*v)[i], e)) {
                        (*v)[i] = e; /* later wins */
                        return 0;
                }
        if (*n + 1 >= *cap) {
                size_t nc = *cap ? *cap * 2 : 64;
                char **nv = realloc(*v, nc * sizeof *nv);
                if (!nv)
                        return -ENOMEM;
                *v = nv;
                *cap = nc;
        }
        (*v)[(*n)++] = e;
        (*v)[*n] = NULL;
        return 0;
}

/* Our environment, less the service manager's variables, then the user's HOME/USER/LOGNAME,
 * NOTIFY_SOCKET, WATCHDOG_USEC and MAINPID, then environment = (which wins). WATCHDOG_PID is
 * added by tend_spawn in the child (pid_env_name). The strings are not copied: the array is
 * freed after the spawn. */
static char **build_env(struct svc *s, char *watchdog_env, char *mainpid_env) {
        char **v = NULL;
        size_t n = 0, cap = 0;
        int r = 0;
        for (char **e = environ; e && *e && r == 0; e++)
                if (!env_is_managers(*e))
                        r = env_add(&v, &n, &cap, *e);
        for (char **e = s->cfg->x->user_env; e && *e && r == 0; e++)
                r = env_add(&v, &n, &cap, *e);
        if (s->rd && s->rd->notify_env && r == 0)
                r = env_add(&v, &n, &cap, s->rd->notify_env);
        if (watchdog_env && r == 0)
                r = env_add(&v, &n, &cap, watchdog_env);
        if (mainpid_env && r == 0)
                r = env_add(&v, &n, &cap, mainpid_env);
        for (char **e = s->cfg->x->env; e && *e && r == 0; e++)
                r = env_add(&v, &n, &cap, *e);
        if (r < 0 || !v) {
                free(v);
                v = calloc(1, sizeof *v);
        }
        return v;
}

static void spawn_error(const struct svc_config *c, const char *what, int e,
                        enum tend_spawn_step step, char *cause, size_t size) {
        switch (step) {
        case TEND_STEP_EXEC:
                snprintf(cause, size, "cannot exec '%s': %s", what, tend_strerror(e));
                break;
        case TEND_STEP_CWD:
                snprintf(cause, size, "cannot change to directory '%s': %s",
                         c->x->directory ? c->x->directory : "?", tend_strerror(e));
                break;
        case TEND_STEP_UID: case TEND_STEP_GID: case TEND_STEP_GROUPS:
                snprintf(cause, size, "cannot become user '%s': %s (%s)",
                         c->x->user ? c->x->user : "?", tend_strerror(e), tend_spawn_step_name(step));
                break;
        default:
                snprintf(cause, size, "cannot start '%s': %s (%s)", what, tend_strerror(e),
                         tend_spawn_step_name(step));
        }
}

static int spawn_in_group(struct svc *s, char *const *argv, const struct tend_fd_map *fds,
                          size_t n_fds, bool is_main, tend_proc **ret, char *cause,
                          size_t size) {
        const struct svc_config *c = s->cfg;
        char wd[64];
        snprintf(wd, sizeof wd, "WATCHDOG_USEC=%llu", (unsigned long long)c->x->policy.watchdog);
        /* Hooks and the stop command learn the main process, as systemd's $MAINPID. */
        char mp[32];
        snprintf(mp, sizeof mp, "MAINPID=%d", (int)s->main_pid);
        bool main_alive = s->main && !s->main_exited;
        /* WATCHDOG_USEC only for the service's command (for a forking service, its start
         * command, whose daemon inherits it), as systemd does: a hook or probe that saw it
         * could take the pings over by mistake. */
        char **env = build_env(s, c->x->policy.watchdog && is_main ? wd : NULL,
                               main_alive ? mp : NULL);
        if (!env) {
                snprintf(cause, size, "out of memory");
                return -ENOMEM;
        }
        struct tend_spawn_opts o;
        memset(&o, 0, sizeof o);
        o.argv = (const char *const *)argv;
        o.envp = (const char *const *)env;
        o.cwd = c->x->directory;
        /* A session of its own: the terminal's signals reach tend, which stops services in
         * order, not every service at once. */
        o.flags = TEND_SPAWN_SETSID | TEND_SPAWN_RESET_IGNORED;
        if (c->x->has_umask) {
                o.flags |= TEND_SPAWN_SET_UMASK;
                o.umask = c->x->umask;
        }
        if (c->x->has_uid) {
                o.flags |= TEND_SPAWN_SET_USER | TEND_SPAWN_SET_GROUPS;
                o.uid = c->x->uid;
                o.groups = c->x->groups;
                o.n_groups = c->x->n_groups;
        }
        if (c->x->has_gid) {
                o.flags |= TEND_SPAWN_SET_GROUP;
                o.gid = c->x->gid;
        }
        o.rlimits = c->x->rlimits;
        o.n_rlimits = c->x->n_rlimits;
        o.stdio[0].kind = TEND_STDIO_NULL;
        for (int i = 1; i <= 2; i++) {
                int fd = logger_fd(s->log, i);
                if (fd >= 0) {
                        o.stdio[i].kind = TEND_STDIO_FD;
                        o.stdio[i].fd = fd;
                } else {
                        o.stdio[i].kind = TEND_STDIO_NULL;
                }
        }
        o.fds = fds;
        o.n_fds = n_fds;
        o.group = s->group;
        /* sd_notify: the watchdog is the main process's, which WATCHDOG_PID names (as
         * sd_watchdog_enabled() checks). Only a simple service's main process is known at
         * spawn: a forking one's daemon gets WATCHDOG_USEC alone, which any pid may use. */
        if (is_main && c->x->policy.watchdog && c->type != SVC_TYPE_FORKING)
                o.pid_env_name = "WATCHDOG_PID";
        enum tend_spawn_step step = TEND_STEP_NONE;
        int e = tend_spawn(s->sv->loop, &o, ret, &step);
        free(env);
        if (e < 0)
                spawn_error(c, argv[0], e, step, cause, size);
        return e;
}

int svc_spawn_command(struct svc *s, const struct svc_command *cmd, tend_exit_cb cb,
                      tend_proc **ret, char *cause, size_t size) {
        int e = spawn_in_group(s, cmd->argv, NULL, 0, false, ret, cause, size);
        if (e == 0)
                tend_proc_on_exit(*ret, cb, s);
        return e;
}

/* ---- the main process ---------------------------------------------------------------------- */

void svc_main_ended(struct svc *s, int err, const struct tend_exit *ex) {
        s->main_exited = true;
        s->have_exit = true;
        s->last_exit_lost = err < 0;
        if (ex) {
                s->last_code = ex->code;
                s->last_signo = ex->signo;
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        s->last_exit_wall = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
        char cause[SVC_CAUSE_MAX];
        svc_describe_exit(err, ex, cause, sizeof cause);
        bool success = err == 0 && ex && config_exit_is_success(s->cfg, ex->code, ex->signo);
        if (s->rd && s->rd->wait_stop) {
                s->rd->wait_stop = false;
                s->sv->n_wait_stop--;
        }
        struct svc_input in = { .event = SVC_EV_EXIT, .success = success, .cause = cause };
        svc_post_full(s, &in);
}

static void on_main_exit(tend_proc *p, int err, const struct tend_exit *ex, void *userdata) {
        struct svc *s = userdata;
        if (p != s->main)
                return;
        svc_main_ended(s, err, ex);
        sv_settle(s->sv);
}

int svc_adopt_main(struct svc *s, pid_t pid) {
        tend_proc *p;
        int e = tend_proc_adopt(s->sv->loop, pid, s->group, &p);
        if (e < 0)
                return e;
        if (s->main && s->main != s->start_proc)
                svc_bury(s, s->main);
        s->main = p;
        s->main_pid = pid;
        s->main_exited = false;
        tend_proc_on_exit(p, on_main_exit, s);
        return 0;
}

/* Forking: the start command is done. */
static void on_start_exit(tend_proc *p, int err, const struct tend_exit *ex, void *userdata) {
        struct svc *s = userdata;
        if (p != s->start_proc)
                return;
        if (s->m.state != SVC_STARTING || s->m.phase != SVC_PHASE_START) {
                sv_settle(s->sv);
                return;
        }
        char cause[SVC_CAUSE_MAX], what[SVC_CAUSE_MAX];
        if (err < 0 || !ex || ex->signo || ex->code != 0) {
                svc_describe_exit(err, ex, what, sizeof what);
                snprintf(cause, sizeof cause, "start command %.170s", what);
                struct svc_input in = { .event = SVC_EV_EXIT, .success = false, .cause = cause };
                svc_post_full(s, &in);
                sv_settle(s->sv);
                return;
        }
        s->start_done = true;
        enum svc_event ev = ready_start_command_done(s, cause, sizeof cause);
        if (ev != SVC_EV_COUNT) {
                struct svc_input in = { .event = ev, .success = false, .cause = cause };
                svc_post_full(s, &in);
        }
        sv_settle(s->sv);
}

/* Group-tracked forking service (no main pid): the last process has gone. */
static void on_group_empty(tend_group *g, void *userdata) {
        struct svc *s = userdata;
        if (s->main || !s->start_done || s->main_exited)
                return;
        if (!svc_is_up(&s->m) &&
            !(s->m.state == SVC_STARTING && s->m.phase == SVC_PHASE_START))
                return;
        s->main_exited = true;
        struct svc_input in = { .event = SVC_EV_EXIT, .success = false,
                                .cause = "every process of the service has ended" };
        svc_post_full(s, &in);
        sv_settle(s->sv);
}

static enum svc_event do_spawn(struct svc *s, char *cause) {
        svc_bury(s, s->main);
        svc_bury(s, s->start_proc);
        s->main = s->start_proc = NULL;
        s->main_pid = 0;
        s->main_exited = false;
        s->start_done = false;
        if (s->rd)
                s->rd->stopping_said = false;
        struct tend_fd_map map;
        bool has_map = false;
        int e = ready_before_spawn(s, &map, &has_map);
        if (e < 0) {
                snprintf(cause, SVC_CAUSE_MAX, "cannot set up readiness: %s",
                         tend_strerror(e));
                return SVC_EV_SPAWN_FAILED;
        }
        tend_proc *p;
        e = spawn_in_group(s, s->cfg->command.argv, has_map ? &map : NULL, has_map ? 1 : 0, true,
                           &p, cause, SVC_CAUSE_MAX);
        if (has_map)
                io_close(map.parent_fd); /* the child has its copy; EOF now means it closed */
        if (e < 0) {
                ready_cancel(s);
                return SVC_EV_SPAWN_FAILED;
        }
        if (s->cfg->type == SVC_TYPE_FORKING) {
                s->start_proc = p;
                tend_proc_on_exit(p, on_start_exit, s);
        } else {
                s->main = p;
                s->main_pid = tend_proc_pid(p);
                tend_proc_on_exit(p, on_main_exit, s);
        }
        return ready_after_spawn(s, cause, SVC_CAUSE_MAX);
}

/* ---- hooks ---------------------------------------------------------------------------------- */

static const char *const hook_names[SVC_HOOK_COUNT] = {
        "pre-start", "post-start", "pre-stop", "post-stop",
};

static void on_hook_exit(tend_proc *p, int err, const struct tend_exit *ex, void *userdata) {
        struct svc *s = userdata;
        if (p != s->hook)
                return;
        s->hook = NULL;
        svc_bury(s, p);
        bool ok = err == 0 && ex && !ex->signo && ex->code == 0;
        char cause[SVC_CAUSE_MAX];
        svc_describe_exit(err, ex, cause, sizeof cause);
        if (!ok)
                sv_say(s->sv, "svc '%s': %s %s", s->cfg->name, hook_names[s->hook_kind], cause);
        svc_post(s, ok ? SVC_EV_HOOK_OK : SVC_EV_HOOK_FAILED, cause);
        sv_settle(s->sv);
}

static enum svc_event run_hook(struct svc *s, enum svc_hook h, char *cause) {
        if (s->hook) {
                (void)tend_proc_signal(s->hook, SIGKILL);
                svc_bury(s, s->hook);
                s->hook = NULL;
        }
        s->hook_kind = (int)h;
        char what[SVC_CAUSE_MAX];
        int e = svc_spawn_command(s, &s->cfg->x->hooks[h], on_hook_exit, &s->hook, what,
                                  sizeof what);
        if (e < 0) {
                s->hook = NULL;
                snprintf(cause, SVC_CAUSE_MAX, "%.180s", what);
                sv_say(s->sv, "svc '%s': %s: %s", s->cfg->name, hook_names[h], what);
                return SVC_EV_HOOK_FAILED;
        }
        return SVC_EV_COUNT;
}

/* ---- stopping --------------------------------------------------------------------------------- */

static void stopped(struct svc *s, int step, const struct tend_ladder *l) {
        char cause[SVC_CAUSE_MAX];
        if (step >= 0 && (size_t)step < l->n && l->step[step].signo)
                snprintf(cause, sizeof cause, "ended after SIG%s",
                         tend_signal_name(l->step[step].signo));
        else
                snprintf(cause, sizeof cause, "ended");
        svc_post(s, SVC_EV_GROUP_EMPTY, cause);
        sv_settle(s->sv);
}

static struct tend_ladder stop_ladder(const struct svc *s) {
        struct tend_ladder l = *s->cfg->ladder;
        if (s->stop_proc && l.n < TEND_LADDER_MAX) {
                /* The stop command takes the place of the first signal; its wait stays. */
                l.step[0].signo = 0;
        }
        return l;
}

static void on_group_stopped(tend_group *g, int step, void *userdata) {
        struct svc *s = userdata;
        struct tend_ladder l = stop_ladder(s);
        stopped(s, step, &l);
}

static void on_stop_command_exit(tend_proc *p, int err, const struct tend_exit *ex,
                                 void *userdata) {
        struct svc *s = userdata;
        if (p != s->stop_proc)
                return;
        if (err < 0 || !ex || ex->signo || ex->code) {
                char what[SVC_CAUSE_MAX];
                svc_describe_exit(err, ex, what, sizeof what);
                sv_say(s->sv, "svc '%s': stop-command %s", s->cfg->name, what);
        }
}

static enum svc_event do_stop(struct svc *s, char *cause) {
        ready_cancel(s);
        if (s->hook) {
                svc_bury(s, s->hook);
                s->hook = NULL;
        }
        bool main_alive = s->main && !s->main_exited;
        bool tracked_by_group = !s->main && s->start_done && !s->main_exited;
        svc_bury(s, s->stop_proc);
        s->stop_proc = NULL;
        if (s->cfg->x->stop_command.argv && (main_alive || tracked_by_group)) {
                char what[SVC_CAUSE_MAX];
                if (svc_spawn_command(s, &s->cfg->x->stop_command, on_stop_command_exit,
                                      &s->stop_proc, what, sizeof what) < 0) {
                        s->stop_proc = NULL;
                        sv_say(s->sv, "svc '%s': stop-command: %s", s->cfg->name, what);
                }
        }
        struct tend_ladder l = stop_ladder(s);
        int e;
        /* The main process is a member of the group (spawned into it, or adopted only if it
         * was one), so the group's ladder reaches it — once per step. tend_proc_stop() would
         * signal it both as the main process and as a member, and a second SIGTERM makes
         * many programs skip their graceful exit. */
        if (main_alive || !tend_group_empty(s->group))
                e = tend_group_stop(s->group, &l, on_group_stopped, s);
        else {
                snprintf(cause, SVC_CAUSE_MAX, "no process left");
                return SVC_EV_GROUP_EMPTY;
        }
        if (e < 0) {
                /* Cannot run the ladder (out of memory): kill at once, the loop sees the end. */
                sv_say(s->sv, "svc '%s': cannot stop with the ladder: %s; killing",
                       s->cfg->name, tend_strerror(e));
                (void)tend_group_kill(s->group);
                if (main_alive)
                        (void)tend_proc_signal(s->main, SIGKILL);
                snprintf(cause, SVC_CAUSE_MAX, "killed");
                return SVC_EV_GROUP_EMPTY;
        }
        return SVC_EV_COUNT;
}

static void do_cleanup(struct svc *s) {
        ready_cancel(s);
        if (s->hook) {
                svc_bury(s, s->hook);
                s->hook = NULL;
        }
        svc_bury(s, s->stop_proc);
        s->stop_proc = NULL;
        /* Whatever post-stop left behind. */
        if (!tend_group_empty(s->group))
                (void)tend_group_kill(s->group);
}

/* ---- the dispatcher --------------------------------------------------------------------------- */

static void on_timer(tend_timer *t, void *userdata);

/* The timer exists only while the machine has a deadline: a service that runs (or is stopped)
 * has none, and thousands of idle services need no timer each. Freeing it from inside its
 * own callback is safe (the loop is done with it before the call). */
static void arm_timer(struct svc *s) {
        if (s->m.deadline == s->armed)
                return;
        if (!s->m.deadline) {
                s->timer = tend_timer_free(s->timer);
                s->armed = 0;
                return;
        }
        if (!s->timer) {
                int e = tend_timer_new(s->sv->loop, on_timer, s, &s->timer);
                if (e < 0) {
                        /* armed stays behind the deadline: tried again after the next event */
                        sv_say(s->sv, "svc '%s': cannot arm its timer: %s", s->cfg->name,
                               tend_strerror(e));
                        s->armed = 0;
                        return;
                }
        }
        s->armed = s->m.deadline;
        uint64_t now = tend_now_usec();
        tend_timer_start(s->timer, s->armed > now ? s->armed - now : 0);
}

static void on_timer(tend_timer *t, void *userdata) {
        struct svc *s = userdata;
        s->armed = 0;
        svc_post(s, SVC_EV_TIMER, NULL);
        sv_settle(s->sv);
}

/* Carry out the actions; returns a follow-up event (its text in cause, SVC_CAUSE_MAX bytes)
 * or SVC_EV_COUNT. */
static enum svc_event execute(struct svc *s, unsigned actions, char *cause) {
        enum svc_event follow = SVC_EV_COUNT, ev;
        if (actions & SVC_DO_KILL_HOOK) {
                if (s->hook) {
                        (void)tend_proc_signal(s->hook, SIGKILL);
                        svc_bury(s, s->hook);
                        s->hook = NULL;
                }
        }
        if (actions & SVC_DO_PRE_START) {
                svc_bury(s, s->main);
                svc_bury(s, s->start_proc);
                s->main = s->start_proc = NULL;
                if ((ev = run_hook(s, SVC_HOOK_PRE_START, cause)) != SVC_EV_COUNT && follow == SVC_EV_COUNT)
                        follow = ev;
        }
        if ((actions & SVC_DO_SPAWN) && (ev = do_spawn(s, cause)) != SVC_EV_COUNT &&
            follow == SVC_EV_COUNT)
                follow = ev;
        if ((actions & SVC_DO_POST_START) && (ev = run_hook(s, SVC_HOOK_POST_START, cause)) !=
                                                     SVC_EV_COUNT && follow == SVC_EV_COUNT)
                follow = ev;
        if ((actions & SVC_DO_PRE_STOP) && (ev = run_hook(s, SVC_HOOK_PRE_STOP, cause)) !=
                                                   SVC_EV_COUNT && follow == SVC_EV_COUNT)
                follow = ev;
        if ((actions & SVC_DO_STOP) && (ev = do_stop(s, cause)) != SVC_EV_COUNT && follow == SVC_EV_COUNT)
                follow = ev;
        if ((actions & SVC_DO_POST_STOP) && (ev = run_hook(s, SVC_HOOK_POST_STOP, cause)) !=
                                                    SVC_EV_COUNT && follow == SVC_EV_COUNT)
                follow = ev;
        if (actions & SVC_DO_CLEANUP)
                do_cleanup(s);
        return follow;
}

void svc_post_full(struct svc *s, const struct svc_input *first) {
        struct svc_input in = *first;
        char cause[SVC_CAUSE_MAX];
        /* Follow-ups are bounded: each action produces at most one, and the machine never
         * asks for the same action twice without an event from outside in between. */
        for (int guard = 0; guard < 16; guard++) {
                in.now = tend_now_usec();
                in.random = sv_random(s->sv);
                struct svc_step st;
                svc_machine_step(&s->m, &in, &st);
                log_transition(s, &st);
                arm_timer(s);
                /* The step has taken what it needs of in.cause: the buffer is free. */
                enum svc_event follow = execute(s, st.actions, cause);
                arm_timer(s);
                if (follow == SVC_EV_COUNT)
                        break;
                in = (struct svc_input){ .event = follow, .cause = cause };
        }
        s->sv->dirty = true;
}

void svc_post(struct svc *s, enum svc_event ev, const char *cause) {
        struct svc_input in = { .event = ev, .cause = cause };
        svc_post_full(s, &in);
}

/* ---- life of the struct ------------------------------------------------------------------------ */

bool svc_needs_ready(const struct svc_config *cfg) {
        return cfg->ready != SVC_READY_NONE || cfg->type == SVC_TYPE_FORKING ||
               cfg->x->policy.watchdog;
}

int svc_new(struct sv *sv, struct svc_config *cfg, struct svc **ret) {
        struct svc *s = calloc(1, sizeof *s);
        if (!s)
                return -ENOMEM;
        s->sv = sv;
        s->cfg = cfg;
        if (svc_needs_ready(cfg)) {
                s->rd = calloc(1, sizeof *s->rd);
                if (!s->rd) {
                        free(s);
                        return -ENOMEM;
                }
                s->rd->ready_fd = s->rd->tcp_fd = s->rd->notify_fd = s->rd->inotify_fd = -1;
        }
        svc_machine_init(&s->m, &cfg->x->policy, tend_now_usec());
        int e = tend_group_new(sv->loop, cfg->name, sv->group_flags, &s->group);
        if (e < 0) {
                msg_error("svc '%s': cannot create its group: %s", cfg->name, tend_strerror(e));
                goto fail;
        }
        tend_group_on_empty(s->group, on_group_empty, s);
        e = logger_new(sv, cfg, &s->log);
        if (e < 0) {
                msg_error("svc '%s': cannot set up its log: %s", cfg->name, tend_strerror(e));
                goto fail;
        }
        if (cfg->ready == SVC_READY_NOTIFY || cfg->x->policy.watchdog) {
                e = ready_notify_open(s);
                if (e < 0)
                        goto fail;
        }
        *ret = s;
        return 0;
fail:
        s->cfg = NULL; /* still the caller's */
        svc_free(s);
        return e;
}

void svc_free(struct svc *s) {
        if (!s)
                return;
        ready_cancel(s);
        ready_notify_close(s);
        tend_timer_free(s->timer);
        tend_proc *procs[] = { s->main, s->start_proc, s->hook, s->stop_proc };
        for (size_t i = 0; i < ARRAY_SIZE(procs); i++)
                tend_proc_free(procs[i]);
        for (size_t i = 0; i < s->n_dead; i++)
                tend_proc_free(s->dead[i]);
        free(s->dead);
        logger_free(s->log);
        tend_group_free(s->group);
        if (s->rd) {
                free(s->rd->status_text);
                free(s->rd->ready_cause);
                free(s->rd);
        }
        config_service_free(s->cfg);
        config_service_free(s->next_cfg);
        svc_machine_done(&s->m);
        free(s);
}
