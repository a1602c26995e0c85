/* cmd_supervise.c — `tend supervise CONFIG`: keep a set of services up from one process and
 * one event loop (DESIGN §1 items 3, 6–8, 11–15).
 *
 * Each service is its state machine (lib/service.c) plus a few fds and timers in the loop
 * (supervise_service.c). This file owns what concerns all of them: start-up, the dependency
 * pass that lets a waiting service go on once the services it starts after are ready (and a
 * stopping one once the services that start after it are down), SIGHUP reload, and the
 * SIGTERM/SIGINT shutdown in reverse dependency order under a global deadline. requires =
 * also stops a dependent when the service it requires goes down for good, and starts it
 * again when that one is back (requires_pass).
 *
 * tend is a child subreaper and reaps orphans (tend_loop_reap_orphans): processes that
 * leave a service are re-parented here, reaped, and never taken for a service's main
 * process, whose exits come through their own pidfds. */
#include "supervise.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "help-supervise.h"

#define OUT_QUEUE_MAX (1024u * 1024u)       /* service output queued for our stdout/stderr */
#define OWN_QUEUE_MAX (16u * 1024u * 1024u) /* our own messages */
#define SHUTDOWN_GRACE_USEC (5u * 1000u * 1000u)

/* Services taken out of the set (replaced or removed by a reload), freed by the collector. */
struct graveyard {
        struct svc **v;
        size_t n, cap;
};
static struct graveyard graves;

/* ---- output ------------------------------------------------------------------------------- */

void sv_say(struct sv *sv, const char *fmt, ...) {
        char line[2048];
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(line + 6, sizeof line - 7, fmt, ap);
        va_end(ap);
        memcpy(line, "tend: ", 6);
        size_t len = 6 + (n < 0 ? 0 : (size_t)n < sizeof line - 7 ? (size_t)n : sizeof line - 8);
        line[len++] = '\n';
        struct outq *q = &sv->out[2];
        if (q->len - q->head > OWN_QUEUE_MAX) {
                sv->out_dropped[2]++;
                return;
        }
        (void)outq_write(q, line, len);
}

bool sv_output(struct sv *sv, int stream, const char *data, size_t len) {
        struct outq *q = &sv->out[stream == 2 ? 2 : 1];
        if (q->fd < 0 || q->error || q->len - q->head > OUT_QUEUE_MAX) {
                sv->out_dropped[stream == 2 ? 2 : 1]++;
                return false;
        }
        (void)outq_write(q, data, len); /* never paused: a slow reader costs lines, not services */
        return true;
}

uint32_t sv_random(struct sv *sv) {
        /* xorshift64*: the jitter needs spread, not secrecy. */
        uint64_t x = sv->rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        sv->rng = x;
        return (uint32_t)((x * 0x2545F4914F6CDD1Dull) >> 32);
}

/* ---- the set of services -------------------------------------------------------------------- */

static int cmp_svc(const void *a, const void *b) {
        const struct svc *const *x = a, *const *y = b;
        return strcmp((*x)->cfg->name, (*y)->cfg->name);
}

static void sort_svcs(struct sv *sv) {
        if (sv->n_svcs)
                qsort(sv->svcs, sv->n_svcs, sizeof *sv->svcs, cmp_svc);
}

struct svc *sv_find(struct sv *sv, const char *name) {
        size_t lo = 0, hi = sv->n_svcs;
        while (lo < hi) {
                size_t mid = (lo + hi) / 2;
                int d = strcmp(sv->svcs[mid]->cfg->name, name);
                if (d == 0)
                        return sv->svcs[mid];
                if (d < 0)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return NULL;
}

static int add_svc(struct sv *sv, struct svc *s) {
        struct svc **nv = realloc(sv->svcs, (sv->n_svcs + 1) * sizeof *nv);
        if (!nv)
                return -ENOMEM;
        sv->svcs = nv;
        sv->svcs[sv->n_svcs++] = s;
        return 0;
}

/* Out of the set; freed by the collector (we may be inside one of its callbacks). */
static void retire(struct sv *sv, size_t index) {
        struct svc *s = sv->svcs[index];
        memmove(&sv->svcs[index], &sv->svcs[index + 1],
                (sv->n_svcs - index - 1) * sizeof *sv->svcs);
        sv->n_svcs--;
        s->freed = true;
        struct svc **nv = realloc(graves.v, (graves.n + 1) * sizeof *nv);
        if (nv) {
                graves.v = nv;
                graves.v[graves.n++] = s;
        }
        sv_schedule_gc(sv);
}

static void on_gc(tend_timer *t, void *userdata) {
        struct sv *sv = userdata;
        for (size_t i = 0; i < sv->n_svcs; i++)
                svc_collect(sv->svcs[i]);
        for (size_t i = 0; i < graves.n; i++)
                svc_free(graves.v[i]);
        graves.n = 0;
}

void sv_schedule_gc(struct sv *sv) {
        if (sv->gc_timer && !tend_timer_active(sv->gc_timer))
                tend_timer_start(sv->gc_timer, 0);
}

/* ---- dependencies ----------------------------------------------------------------------------- */

static bool names_contain(char **v, const char *name) {
        for (size_t i = 0; v && v[i]; i++)
                if (!strcmp(v[i], name))
                        return true;
        return false;
}

/* requires = (systemd's Requires=), the part that stops and starts again. A service that
 * got past waiting for its dependencies and wants to be up is stopped when a service it
 * requires goes down for good: stopped by request (`tend ctl stop`, a reload that changed
 * it) or on its way to failed. The required one waits for it (SVC_PHASE_WAIT_DEPENDENTS),
 * so the dependent stops first. A crash on the way to a restart (backoff) stops nothing.
 * The machine remembers (m.held) and, once every service it requires is running again, the
 * dependent is started again, unless someone started or stopped it in between. A service
 * still waiting for its dependencies is left to the start gate below (it fails). Runs before
 * the gates, so that a required service being stopped sees its dependents stopping. */
static bool requires_pass(struct sv *sv) {
        bool any = false;
        for (size_t i = 0; i < sv->n_svcs; i++) {
                struct svc *s = sv->svcs[i];
                char **v = s->cfg->x->requires;
                if (!v || !v[0])
                        continue;
                if (svc_wants_up(&s->m) &&
                    !(s->m.state == SVC_STARTING && s->m.phase == SVC_PHASE_WAIT_DEPS)) {
                        for (size_t k = 0; v[k]; k++) {
                                struct svc *d = sv_find(sv, v[k]);
                                if (!d || !svc_going_down(&d->m))
                                        continue;
                                char cause[SVC_CAUSE_MAX];
                                if (d->m.state == SVC_FAILED ||
                                    (d->m.state == SVC_STOPPING && d->m.after == SVC_AFTER_FAILED))
                                        snprintf(cause, sizeof cause,
                                                 "required service '%s' failed: %.120s", v[k],
                                                 d->m.reason);
                                else
                                        snprintf(cause, sizeof cause,
                                                 "required service '%s' is %s", v[k],
                                                 svc_state_name(d->m.state));
                                svc_post(s, SVC_EV_DEP_DOWN, cause);
                                any = true;
                                break;
                        }
                } else if (s->m.held && s->m.state == SVC_STOPPED && !sv->shutting_down &&
                           !s->next_cfg && !s->remove) {
                        const char *back = NULL;
                        for (size_t k = 0; v[k]; k++) {
                                struct svc *d = sv_find(sv, v[k]);
                                if (d && !svc_is_up(&d->m)) {
                                        back = NULL;
                                        break;
                                }
                                if (d)
                                        back = v[k];
                        }
                        if (back) {
                                char cause[SVC_CAUSE_MAX];
                                snprintf(cause, sizeof cause,
                                         "required service '%s' is running again", back);
                                svc_post(s, SVC_EV_START, cause);
                                any = true;
                        }
                }
        }
        return any;
}

/* Post what the dependency rules allow now. Returns true if anything was posted. */
static bool deps_pass(struct sv *sv) {
        bool any = requires_pass(sv);
        for (size_t i = 0; i < sv->n_svcs; i++) {
                struct svc *s = sv->svcs[i];
                if (s->m.state == SVC_STARTING && s->m.phase == SVC_PHASE_WAIT_DEPS) {
                        enum svc_gate verdict = SVC_GATE_GO;
                        char cause[SVC_CAUSE_MAX] = "";
                        for (int pass = 0; pass < 2 && verdict != SVC_GATE_FAIL; pass++) {
                                char **v = pass ? s->cfg->x->requires : s->cfg->x->after;
                                for (size_t k = 0; v && v[k]; k++) {
                                        struct svc *d = sv_find(sv, v[k]);
                                        if (!d)
                                                continue;
                                        enum svc_gate g = svc_start_gate(&d->m, pass == 1);
                                        if (g == SVC_GATE_FAIL) {
                                                snprintf(cause, sizeof cause,
                                                         "required service '%s' is %s", v[k],
                                                         svc_state_name(d->m.state));
                                                verdict = g;
                                                break;
                                        }
                                        if (g == SVC_GATE_WAIT)
                                                verdict = g;
                                }
                        }
                        if (verdict == SVC_GATE_GO) {
                                svc_post(s, SVC_EV_DEPS_READY, NULL);
                                any = true;
                        } else if (verdict == SVC_GATE_FAIL) {
                                svc_post(s, SVC_EV_DEPS_FAILED, cause);
                                any = true;
                        }
                } else if (s->m.state == SVC_STOPPING && s->m.phase == SVC_PHASE_WAIT_DEPENDENTS) {
                        bool hold = false;
                        for (size_t k = 0; k < sv->n_svcs && !hold; k++) {
                                struct svc *t = sv->svcs[k];
                                if (t != s && (names_contain(t->cfg->x->after, s->cfg->name) ||
                                               names_contain(t->cfg->x->requires, s->cfg->name)))
                                        hold = !svc_stop_gate(&t->m);
                        }
                        if (!hold) {
                                svc_post(s, SVC_EV_DEPENDENTS_DOWN, NULL);
                                any = true;
                        }
                }
        }
        return any;
}

/* ---- reload ------------------------------------------------------------------------------------ */

/* A changed or removed service that is down now is replaced or dropped. */
static bool apply_pending(struct sv *sv) {
        bool any = false;
        for (size_t i = 0; i < sv->n_svcs; i++) {
                struct svc *s = sv->svcs[i];
                if (!(s->next_cfg || s->remove) || !svc_is_down(&s->m))
                        continue;
                any = true;
                struct svc_config *next = s->next_cfg;
                s->next_cfg = NULL;
                retire(sv, i);
                i--;
                if (!next) {
                        control_on_removed(sv, s->cfg->name);
                        continue;
                }
                struct svc *n;
                int e = svc_new(sv, next, &n);
                if (e < 0) {
                        sv_say(sv, "svc '%s': cannot apply its new definition: %s; dropped",
                               next->name, tend_strerror(e));
                        config_service_free(next);
                        continue;
                }
                if (add_svc(sv, n) < 0) {
                        svc_free(n);
                        continue;
                }
                sort_svcs(sv);
                i = (size_t)-1; /* the order changed: look again from the start */
                if (!sv->shutting_down)
                        svc_post(n, SVC_EV_START, "reload: new definition");
        }
        return any;
}

int sv_reload(struct sv *sv, char *msg, size_t msg_size) {
        if (sv->shutting_down) {
                snprintf(msg, msg_size, "the supervisor is shutting down");
                return -1;
        }
        sv_say(sv, "reload: reading '%s'", sv->config_path);
        struct config *nc;
        if (config_load(sv->config_path, &nc) < 0) {
                snprintf(msg, msg_size,
                         "'%s' has errors (on the supervisor's stderr); the running configuration stays",
                         sv->config_path);
                sv_say(sv, "reload: %s", msg);
                return -1;
        }
        unsigned changed = 0, added = 0, removed = 0, same = 0;
        /* Which definitions of nc the running services take (or match): nc's slots stay in
         * place until the end, since config_find() searches them. */
        bool *taken = calloc(nc->n_services ? nc->n_services : 1, sizeof *taken);
        if (!taken) {
                config_free(nc);
                snprintf(msg, msg_size, "out of memory");
                sv_say(sv, "reload: out of memory");
                return -1;
        }
        size_t n_old = sv->n_svcs;
        for (size_t i = 0; i < n_old; i++) {
                struct svc *s = sv->svcs[i];
                struct svc_config *c = config_find(nc, s->cfg->name);
                const struct svc_config *want = s->next_cfg ? s->next_cfg : s->cfg;
                if (!c) {
                        if (!s->remove)
                                removed++;
                        s->remove = true;
                        config_service_free(s->next_cfg);
                        s->next_cfg = NULL;
                        svc_post(s, SVC_EV_STOP, "reload: removed");
                        continue;
                }
                for (size_t k = 0; k < nc->n_services; k++)
                        if (nc->services[k] == c)
                                taken[k] = true;
                if (!s->remove && !strcmp(c->identity, want->identity)) {
                        same++;
                        continue; /* nc's copy is freed with nc */
                }
                changed++;
                s->remove = false;
                config_service_free(s->next_cfg);
                s->next_cfg = c;
                if (!svc_is_down(&s->m))
                        svc_post(s, SVC_EV_STOP, "reload: definition changed");
        }
        for (size_t k = 0; k < nc->n_services; k++) {
                struct svc_config *c = nc->services[k];
                if (taken[k]) {
                        /* Moved to a service (changed) or left to be freed (unchanged). */
                        bool moved = false;
                        for (size_t i = 0; i < n_old && !moved; i++)
                                moved = sv->svcs[i]->next_cfg == c;
                        if (moved)
                                nc->services[k] = NULL;
                        continue;
                }
                nc->services[k] = NULL;
                struct svc *s;
                if (svc_new(sv, c, &s) < 0) {
                        config_service_free(c);
                        continue;
                }
                if (add_svc(sv, s) < 0) {
                        svc_free(s);
                        continue;
                }
                added++;
                svc_post(s, SVC_EV_START, "reload: added");
        }
        free(taken);
        sort_svcs(sv);
        config_free(nc);
        snprintf(msg, msg_size, "%u changed, %u added, %u removed, %u unchanged", changed,
                 added, removed, same);
        sv_say(sv, "reload: %s", msg);
        return 0;
}

/* ---- settling, shutdown --------------------------------------------------------------------- */

static bool all_down(const struct sv *sv) {
        for (size_t i = 0; i < sv->n_svcs; i++)
                if (!svc_is_down(&sv->svcs[i]->m))
                        return false;
        return true;
}

void sv_settle(struct sv *sv) {
        if (sv->settling)
                return;
        sv->settling = true;
        for (int round = 0; round < 100000; round++) {
                bool progress = apply_pending(sv);
                if (deps_pass(sv))
                        progress = true;
                if (!progress)
                        break;
        }
        if (sv->shutting_down && !sv->exiting && all_down(sv)) {
                sv->exiting = true;
                sv_say(sv, "every service is down; exiting");
                tend_loop_stop(sv->loop);
        }
        sv->settling = false;
}

static void kill_everything(struct sv *sv) {
        for (size_t i = 0; i < sv->n_svcs; i++) {
                struct svc *s = sv->svcs[i];
                if (svc_is_down(&s->m))
                        continue;
                (void)tend_group_kill(s->group);
                if (s->main && !s->main_exited)
                        (void)tend_proc_signal(s->main, SIGKILL);
        }
}

static void on_shutdown_timer(tend_timer *t, void *userdata) {
        struct sv *sv = userdata;
        if (!sv->shutdown_killed) {
                sv->shutdown_killed = true;
                sv_say(sv, "shutdown: deadline passed; killing what is left");
                kill_everything(sv);
                tend_timer_start(t, SHUTDOWN_GRACE_USEC);
                return;
        }
        sv_say(sv, "shutdown: processes still there after SIGKILL; exiting anyway");
        tend_loop_stop(sv->loop);
}

void sv_shutdown(struct sv *sv, const char *why) {
        if (sv->shutting_down) {
                if (!sv->shutdown_killed) {
                        sv->shutdown_killed = true;
                        sv_say(sv, "shutdown: %s again; killing what is left", why);
                        kill_everything(sv);
                        tend_timer_start(sv->shutdown_timer, SHUTDOWN_GRACE_USEC);
                }
                return;
        }
        sv->shutting_down = true;
        sv_say(sv, "shutdown (%s): stopping %zu service%s", why, sv->n_svcs,
               sv->n_svcs == 1 ? "" : "s");
        char cause[64];
        snprintf(cause, sizeof cause, "shutdown (%s)", why);
        for (size_t i = 0; i < sv->n_svcs; i++)
                svc_post(sv->svcs[i], SVC_EV_STOP, cause);
        if (sv->shutdown_timeout)
                tend_timer_start(sv->shutdown_timer, sv->shutdown_timeout);
        sv_settle(sv);
}

/* ---- signals ------------------------------------------------------------------------------------ */

static void on_signal(tend_signal *sig, const struct signalfd_siginfo *si, void *userdata) {
        struct sv *sv = userdata;
        switch (si->ssi_signo) {
        case SIGTERM:
        case SIGINT:
                sv_shutdown(sv, si->ssi_signo == SIGTERM ? "SIGTERM" : "SIGINT");
                break;
        case SIGHUP: {
                char msg[256];
                (void)sv_reload(sv, msg, sizeof msg);
                sv_settle(sv);
                break;
        }
        case SIGUSR1:
                for (size_t i = 0; i < sv->n_svcs; i++) {
                        json_t *o = svc_status_json(sv->svcs[i]);
                        char *text = o ? json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
                        if (text)
                                sv_say(sv, "status %s", text);
                        free(text);
                        json_decref(o);
                }
                sv_say(sv, "status end: %zu service%s", sv->n_svcs, sv->n_svcs == 1 ? "" : "s");
                break;
        case SIGCHLD:
                if (sv->n_wait_stop)
                        for (size_t i = 0; i < sv->n_svcs; i++)
                                ready_check_stopped(sv->svcs[i]);
                break;
        }
}

static void on_orphan(pid_t pid, int status, void *userdata) {
        struct sv *sv = userdata;
        sv->orphans_reaped++;
}

/* ---- the command -------------------------------------------------------------------------------- */

enum { OPT_CHECK = 1000, OPT_RUNTIME_DIR, OPT_SHUTDOWN_TIMEOUT, OPT_NO_CGROUP, OPT_CONTROL,
       OPT_CONTROL_GROUP, OPT_NO_CONTROL, OPT_CONTROL_IDLE };

static const struct option options[] = {
        { "check", no_argument, NULL, OPT_CHECK },
        { "runtime-dir", required_argument, NULL, OPT_RUNTIME_DIR },
        { "shutdown-timeout", required_argument, NULL, OPT_SHUTDOWN_TIMEOUT },
        { "no-cgroup", no_argument, NULL, OPT_NO_CGROUP },
        { "control", required_argument, NULL, OPT_CONTROL },
        { "control-group", required_argument, NULL, OPT_CONTROL_GROUP },
        { "no-control", no_argument, NULL, OPT_NO_CONTROL },
        { "control-idle-timeout", required_argument, NULL, OPT_CONTROL_IDLE },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
};

static char *default_runtime_dir(void) {
        char *dir = NULL;
        const char *xdg = getenv("XDG_RUNTIME_DIR");
        if (xdg && xdg[0] == '/' && access(xdg, W_OK) == 0) {
                if (asprintf(&dir, "%s/tend-supervise.%d", xdg, (int)getpid()) < 0)
                        dir = NULL;
        } else if (access("/run", W_OK) == 0) {
                if (asprintf(&dir, "/run/tend-supervise.%d", (int)getpid()) < 0)
                        dir = NULL;
        } else if (asprintf(&dir, "/tmp/tend-supervise.%u.%d", (unsigned)geteuid(),
                            (int)getpid()) < 0) {
                dir = NULL;
        }
        return dir;
}

/* Many services, up to several fds each (a pidfd always; two pipes for log = inherit or
 * file, a log file, a notify socket; the cgroup's events file only while leftovers of a
 * run are waited for): take the hard limit of open files. What the services get is their own business: spawn hands them exactly fds 0-2 and
 * the ones asked for. */
static void raise_nofile(void) {
        struct rlimit rl;
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
                rl.rlim_cur = rl.rlim_max;
                (void)setrlimit(RLIMIT_NOFILE, &rl);
        }
}

int cmd_supervise(int argc, char **argv) {
        bool check = false, no_cgroup = false, no_control = false;
        const char *runtime_dir = NULL, *control_path = NULL, *control_group = NULL;
        char *control_default = NULL;
        uint64_t shutdown_timeout = 90ull * 1000 * 1000;
        uint64_t control_idle = 10ull * 1000 * 1000;
        int opt;
        optind = 1;
        opterr = 0;
        while ((opt = getopt_long(argc, argv, "+h", options, NULL)) != -1) {
                switch (opt) {
                case OPT_CHECK: check = true; break;
                case OPT_RUNTIME_DIR: runtime_dir = optarg; break;
                case OPT_SHUTDOWN_TIMEOUT:
                        if (tend_parse_duration(optarg, &shutdown_timeout) < 0) {
                                msg_error("invalid duration '%s' for --shutdown-timeout (try 30s)",
                                          optarg);
                                return EXIT_TEND_FAILURE;
                        }
                        break;
                case OPT_NO_CGROUP: no_cgroup = true; break;
                case OPT_CONTROL: control_path = optarg; break;
                case OPT_CONTROL_GROUP: control_group = optarg; break;
                case OPT_NO_CONTROL: no_control = true; break;
                case OPT_CONTROL_IDLE:
                        if (tend_parse_duration(optarg, &control_idle) < 0) {
                                msg_error("invalid duration '%s' for --control-idle-timeout (try 10s)",
                                          optarg);
                                return EXIT_TEND_FAILURE;
                        }
                        break;
                case 'h':
                        fputs(help_supervise, stdout);
                        return 0;
                default:
                        if (optopt)
                                msg_error("unknown option '-%c' for supervise (try 'tend supervise --help')",
                                          optopt);
                        else
                                msg_error("unknown or incomplete option '%s' for supervise (try 'tend supervise --help')",
                                          argv[optind - 1]);
                        return EXIT_TEND_FAILURE;
                }
        }
        if (optind != argc - 1) {
                msg_error("want one configuration file (usage: tend supervise [OPTIONS] CONFIG)");
                return EXIT_TEND_FAILURE;
        }
        const char *path = argv[optind];
        struct config *cfg;
        int e = config_load(path, &cfg);
        if (check) {
                if (e < 0)
                        return 1;
                printf("%s: %zu service%s, no problem found\n", path, cfg->n_services,
                       cfg->n_services == 1 ? "" : "s");
                config_free(cfg);
                return 0;
        }
        if (e < 0)
                return EXIT_TEND_FAILURE;

        struct sv svs;
        struct sv *sv = &svs;
        memset(sv, 0, sizeof *sv);
        sv->config_path = path;
        sv->shutdown_timeout = shutdown_timeout;
        sv->control_idle_usec = control_idle;
        sv->group_flags = no_cgroup ? TEND_GROUP_NO_CGROUP : 0;
        if (getrandom(&sv->rng, sizeof sv->rng, GRND_NONBLOCK) != sizeof sv->rng)
                sv->rng = tend_now_usec() ^ (uint64_t)getpid() << 32;
        sv->rng |= 1;
        int code = EXIT_TEND_FAILURE;
        tend_signal *signals[6] = { 0 };
        bool made_dir = false;

        raise_nofile();

        e = prog_owner_loop(&sv->loop, on_orphan, sv);
        if (e < 0)
                goto out;
        sv->runtime_dir = runtime_dir ? strdup(runtime_dir) : default_runtime_dir();
        if (!sv->runtime_dir) {
                msg_error("out of memory");
                goto out;
        }
        if (mkdir(sv->runtime_dir, 0755) == 0)
                made_dir = true;
        else if (errno != EEXIST || runtime_dir == NULL) {
                msg_error("cannot create the runtime directory '%s': %s", sv->runtime_dir,
                          strerror(errno));
                goto out;
        }
        for (int i = 1; i <= 2; i++)
                outq_init(&sv->out[i], sv->loop, i, NULL, NULL);
        if (!no_control) {
                /* With --runtime-dir, the socket is in it (DIR/control): a supervisor started
                 * for a test or a container has everything in one place. */
                if (!control_path && runtime_dir) {
                        if (asprintf(&control_default, "%s/control", runtime_dir) < 0)
                                control_default = NULL;
                } else if (!control_path) {
                        control_default = control_default_path(true);
                }
                if (!control_path)
                        control_path = control_default;
                char err[512];
                e = control_path ? control_open(sv, control_path, control_group, err, sizeof err)
                                 : -ENOMEM;
                if (e < 0) {
                        msg_error("%s", control_path ? err : "out of memory");
                        goto out;
                }
        }
        if (tend_timer_new(sv->loop, on_gc, sv, &sv->gc_timer) < 0 ||
            tend_timer_new(sv->loop, on_shutdown_timer, sv, &sv->shutdown_timer) < 0) {
                msg_error("out of memory");
                goto out;
        }
        static const int handled[] = { SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGCHLD };
        for (size_t i = 0; i < ARRAY_SIZE(handled); i++) {
                e = tend_signal_new(sv->loop, handled[i], on_signal, sv, &signals[i]);
                if (e < 0) {
                        msg_error("cannot watch signal %s: %s", tend_signal_name(handled[i]),
                                  tend_strerror(e));
                        goto out;
                }
        }
        for (size_t i = 0; i < cfg->n_services; i++) {
                struct svc *s;
                e = svc_new(sv, cfg->services[i], &s);
                if (e == -EMFILE || e == -ENFILE) {
                        struct rlimit rl;
                        if (e == -EMFILE && getrlimit(RLIMIT_NOFILE, &rl) == 0)
                                msg_error("out of file descriptors after %zu of %zu services: "
                                          "the limit is %llu (each service holds up to 8 and "
                                          "its processes' pidfds); raise the hard limit of "
                                          "open files (ulimit -Hn, LimitNOFILE=)",
                                          i, cfg->n_services, (unsigned long long)rl.rlim_cur);
                        else
                                msg_error("out of file descriptors after %zu of %zu services: "
                                          "the system's limit (fs.file-max) is reached",
                                          i, cfg->n_services);
                }
                if (e < 0)
                        goto out;
                cfg->services[i] = NULL;
                if (add_svc(sv, s) < 0) {
                        svc_free(s);
                        goto out;
                }
        }
        cfg = config_free(cfg);
        sort_svcs(sv);
        sv_say(sv, "supervising %zu service%s from '%s' (pid %d)", sv->n_svcs,
               sv->n_svcs == 1 ? "" : "s", path, (int)getpid());
        for (size_t i = 0; i < sv->n_svcs; i++)
                svc_post(sv->svcs[i], SVC_EV_START, "start-up");
        sv_settle(sv);
        if (sv->n_svcs == 0)
                sv_say(sv, "no service to supervise; waiting for SIGHUP or SIGTERM");

        e = tend_loop_run(sv->loop);
        if (e < 0)
                msg_error("event loop failed: %s", tend_strerror(e));
        else
                code = 0;
out:
        control_free(sv);
        free(control_default);
        config_free(cfg);
        for (size_t i = 0; i < sv->n_svcs; i++)
                svc_free(sv->svcs[i]);
        free(sv->svcs);
        for (size_t i = 0; i < graves.n; i++)
                svc_free(graves.v[i]);
        free(graves.v);
        graves.v = NULL;
        graves.n = 0;
        if (made_dir)
                (void)rmdir(sv->runtime_dir);
        free(sv->runtime_dir);
        for (size_t i = 0; i < ARRAY_SIZE(signals); i++)
                tend_signal_free(signals[i]);
        tend_timer_free(sv->gc_timer);
        tend_timer_free(sv->shutdown_timer);
        for (int i = 1; i <= 2; i++) {
                outq_finish(&sv->out[i]);
                outq_free(&sv->out[i]);
        }
        tend_loop_free(sv->loop);
        return code;
}
