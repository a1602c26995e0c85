/* cmd_init.c — `tend init`: PID 1 of a container (or a child subreaper anywhere else).
 *
 * One child runs under us. Every catchable signal we get is forwarded to it (or to its
 * process group), every zombie that lands on us is reaped, and we exit with the child's
 * status. Installed as `tini`, `tini-static` or `docker-init` (or `tini-*`) the program is a
 * drop-in for tini 0.19: the same options, environment, exit codes and diagnostics, and none
 * of tend's extensions unless asked for.
 *
 * The data path: signalfd -> forward (rewritten) to the child; SIGCHLD -> the loop's orphan
 * reaper (waitid until nothing is left: SIGCHLD coalesces); the child's pidfd -> its status
 * (never lost in a storm of orphan exits) -> graceful end: leftovers are stopped with the
 * ladder -> exit. Nothing polls and there is no periodic timeout: an idle init sleeps in
 * epoll_wait. */
#include "cmd.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "help-init.h"
#include "license.h"

/* What `--version` says: a line `docker info` parses as tini's. Docker reads the part after
 * " - " as "git.<commit>" only when it holds exactly one dot, so tend's version goes in with
 * its dots turned into underscores. */
#define TINI_COMPAT_VERSION "0.19.0"

enum { VERBOSE_QUIET = 0, VERBOSE_WARN = 1, VERBOSE_INFO = 2, VERBOSE_DEBUG = 3 };

struct init {
        tend_loop *loop;
        tend_group *group;
        tend_proc *proc;
        pid_t child_pid;
        tend_signal *signals[_NSIG];
        tend_signal *sigchld;  /* --job-control: learn that the child has stopped */
        const char *prog;     /* for messages: "tend init" or the name we were called by */
        const char *command;

        /* Options. */
        bool tini;            /* called by one of tini's names: tini's defaults */
        int verbosity;
        bool warn_on_reap;    /* -w */
        bool kill_group;      /* -g, TINI_KILL_PROCESS_GROUP, --job-control */
        bool subreaper;       /* -s, TINI_SUBREAPER */
        bool job_control;
        bool graceful;        /* stop leftovers with the ladder when the child exits */
        bool no_cgroup;
        bool keep_fds;        /* hand on every inherited fd (tini's way) */
        int pdeathsig;
        struct tend_ladder ladder;
        int rewrite[_NSIG];   /* -1: as is; 0: drop; else the signal to send instead */
        bool expect[256];     /* -e: these exit codes become 0 */

        /* What happened. */
        bool gave_foreground;
        bool exited;
        bool status_lost;
        struct tend_exit exit;
        bool ending;          /* the ladder is stopping leftovers */
        bool stop_pending;    /* --job-control: stop ourselves once the child has stopped */
        int end_step;
};

/* ---- messages --------------------------------------------------------------------------- */

static void say(const struct init *in, int level, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
static void say(const struct init *in, int level, const char *fmt, ...) {
        if (in->verbosity < level)
                return;
        va_list ap;
        va_start(ap, fmt);
        msg_verror(fmt, ap);
        va_end(ap);
}

static int fail_code(const struct init *in) {
        return in->tini ? 1 : EXIT_TEND_FAILURE;
}

/* ---- signals ------------------------------------------------------------------------------ */

/* Signals that are not forwarded: the ones the kernel raises for a fault of the receiving
 * process itself (forwarding those would blame the child for our fault), SIGCHLD (ours: it
 * drives the reaping), and those that cannot be caught. TTIN and TTOU are ignored, as tini
 * does: once the child owns the terminal's foreground, we are in the background, and a
 * message of ours must not stop us. */
static bool signal_is_forwarded(const struct init *in, int signo) {
        switch (signo) {
        case SIGKILL: case SIGSTOP: case SIGCHLD:
        case SIGFPE: case SIGILL: case SIGSEGV: case SIGBUS: case SIGABRT: case SIGTRAP:
        case SIGSYS:
                return false;
        case SIGTTIN: case SIGTTOU:
                return in->job_control;
        }
        /* glibc keeps 32 and 33 for itself (threads, setxid); it never lets them be blocked. */
        if (signo > SIGSYS && signo < SIGRTMIN)
                return false;
        return true;
}

static void forward(struct init *in, int signo) {
        if (!in->exited) {
                int e;
                if (in->kill_group) {
                        /* The child is not reaped until its exit callback has run, so its pid —
                         * and with it the process group id — cannot have been recycled. */
                        e = kill(-in->child_pid, signo) < 0 ? -errno : 0;
                        if (e == -ESRCH)
                                e = tend_proc_signal(in->proc, signo);
                } else {
                        e = tend_proc_signal(in->proc, signo);
                }
                if (e < 0)
                        say(in, VERBOSE_WARN, "cannot forward %s to '%s' (pid %d): %s",
                            tend_signal_name(signo), in->command, (int)in->child_pid,
                            tend_strerror(e));
                else
                        say(in, VERBOSE_DEBUG, "forwarded %s to %s %d", tend_signal_name(signo),
                            in->kill_group ? "process group" : "pid", (int)in->child_pid);
                return;
        }
        if (in->ending && in->group) {
                /* The child is gone and we are stopping what it left: the rest hears it. */
                int n = tend_group_signal(in->group, signo);
                say(in, VERBOSE_DEBUG, "forwarded %s to %d leftover process%s",
                    tend_signal_name(signo), n < 0 ? 0 : n, n == 1 ? "" : "es");
        }
}

/* --job-control: stand in for the terminal. The job has been told to stop; now stop
 * ourselves, so that whoever started us (a shell) sees the job stop. SIGCONT wakes us and is
 * forwarded like any other signal. (As PID 1 of a namespace the kernel does not let us
 * stop; the job still does.) */
static void stop_self(struct init *in) {
        in->stop_pending = false;
        say(in, VERBOSE_DEBUG, "stopping ourselves");
        (void)kill(getpid(), SIGSTOP);
}

/* Is the child in a stop right now? WNOWAIT leaves the report where it is, so this reads the
 * current state: once the child is continued the kernel withdraws the report. */
static bool child_stopped(const struct init *in) {
        int fd = tend_proc_pidfd(in->proc);
        if (in->exited || fd < 0)
                return false;
        siginfo_t si;
        memset(&si, 0, sizeof si);
        if (waitid((idtype_t)P_PIDFD, (id_t)fd, &si, WSTOPPED | WNOHANG | WNOWAIT) < 0)
                return false;
        return si.si_pid != 0;
}

static void on_sigchld(tend_signal *s, const struct signalfd_siginfo *si, void *userdata) {
        struct init *in = userdata;
        if (in->stop_pending && child_stopped(in))
                stop_self(in);
}

static void on_signal(tend_signal *s, const struct signalfd_siginfo *si, void *userdata) {
        struct init *in = userdata;
        int signo = (int)si->ssi_signo;
        int target = in->rewrite[signo] >= 0 ? in->rewrite[signo] : signo;
        if (signo == SIGCONT)
                in->stop_pending = false; /* continued before the job had even stopped */
        if (target == 0)
                say(in, VERBOSE_DEBUG, "dropped %s (rewritten to 0)", tend_signal_name(signo));
        else
                forward(in, target);
        if (in->job_control && (signo == SIGTSTP || signo == SIGTTIN || signo == SIGTTOU)) {
                /* Stop only once the child has: a SIGCONT that came before its SIGSTOP was
                 * acted on would cancel the stop (the kernel drops the pending SIGSTOP), and
                 * the job would run on while the shell believes it stopped. */
                if (target == SIGSTOP && !in->exited && !child_stopped(in))
                        in->stop_pending = true;
                else
                        stop_self(in);
        }
}

static void on_orphan(pid_t pid, int wait_status, void *userdata) {
        const struct init *in = userdata;
        if (in->warn_on_reap)
                say(in, VERBOSE_WARN, "Reaped zombie process with pid=%d", (int)pid);
        else
                say(in, VERBOSE_DEBUG, "reaped orphan %d (status 0x%x)", (int)pid, wait_status);
}

/* ---- the end ------------------------------------------------------------------------------ */

static void restore_foreground(struct init *in) {
        if (!in->gave_foreground)
                return;
        in->gave_foreground = false;
        prog_take_terminal_back();
}

static void on_leftovers_stopped(tend_group *g, int step, void *userdata) {
        struct init *in = userdata;
        in->end_step = step;
        say(in, VERBOSE_INFO, "leftover processes gone (after %s)",
            tend_signal_name(in->ladder.step[step].signo));
        tend_loop_stop(in->loop);
}

static void on_exit_cb(tend_proc *p, int err, const struct tend_exit *ex, void *userdata) {
        struct init *in = userdata;
        in->exited = true;
        in->stop_pending = false;
        if (err < 0) {
                in->status_lost = true;
        } else {
                in->exit = *ex;
                if (ex->signo)
                        say(in, VERBOSE_INFO, "'%s' (pid %d) was killed by %s", in->command,
                            (int)in->child_pid, tend_signal_name(ex->signo));
                else
                        say(in, VERBOSE_INFO, "'%s' (pid %d) exited with %d", in->command,
                            (int)in->child_pid, ex->code);
        }
        restore_foreground(in);
        if (in->graceful && in->group) {
                int n = tend_group_members(in->group, NULL, 0);
                if (n > 0) {
                        char text[160];
                        tend_ladder_format(&in->ladder, text, sizeof text);
                        say(in, VERBOSE_INFO, "%d process%s left behind, stopping them (%s)", n,
                            n == 1 ? "" : "es", text);
                        in->ending = true;
                        int e = tend_group_stop(in->group, &in->ladder, on_leftovers_stopped, in);
                        if (e == 0)
                                return;
                        msg_error("cannot stop leftover processes: %s", tend_strerror(e));
                        in->ending = false;
                }
        }
        tend_loop_stop(in->loop);
}

/* ---- options ------------------------------------------------------------------------------- */

enum {
        OPT_GRACE = 1000, OPT_STOP, OPT_NO_GRACE, OPT_JOB_CONTROL, OPT_NO_CGROUP, OPT_KEEP_FDS,
};

static const struct option options[] = {
        { "grace", required_argument, NULL, OPT_GRACE },
        { "stop", required_argument, NULL, OPT_STOP },
        { "no-grace", no_argument, NULL, OPT_NO_GRACE },
        { "rewrite", required_argument, NULL, 'r' },
        { "job-control", no_argument, NULL, OPT_JOB_CONTROL },
        { "no-cgroup", no_argument, NULL, OPT_NO_CGROUP },
        { "keep-fds", no_argument, NULL, OPT_KEEP_FDS },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
};

static int parse_exit_code(const char *text) {
        char *end;
        errno = 0;
        long v = strtol(text, &end, 10);
        if (!*text || *end || errno || v < 0 || v > 255)
                return -1;
        return (int)v;
}

/* FROM:TO, signal names or numbers; TO 0 drops FROM. */
static int parse_rewrite(struct init *in, const char *text) {
        const char *colon = strchr(text, ':');
        if (!colon || colon == text || !colon[1])
                return -1;
        char from_text[32];
        size_t len = (size_t)(colon - text);
        if (len >= sizeof from_text)
                return -1;
        memcpy(from_text, text, len);
        from_text[len] = '\0';
        int from = tend_signal_from_name(from_text);
        int to = strcmp(colon + 1, "0") == 0 ? 0 : tend_signal_from_name(colon + 1);
        if (from <= 0 || to < 0 || from == SIGKILL || from == SIGSTOP)
                return -1;
        in->rewrite[from] = to;
        return 0;
}

static void print_version(void) {
        char v[64];
        snprintf(v, sizeof v, "%s", TEND_VERSION);
        for (char *p = v; *p; p++)
                if (*p == '.')
                        *p = '_';
        printf("tini version %s - git.tend-%s\n", TINI_COMPAT_VERSION, v);
}

/* 0 to go on, or 1 + the exit code to return (so that 0 can mean "exit 0"). */
static int parse_args(struct init *in, int argc, char **argv, int *ret_optind) {
        bool grace_set = false, stop_set = false, no_grace = false;
        uint64_t grace_usec = 5000000;
        if (argc == 2 && !strcmp(argv[1], "--version")) {
                print_version();
                return 1 + 0;
        }
        optind = 1;
        opterr = 0;
        int opt;
        while ((opt = getopt_long(argc, argv, "+hsge:p:vwlr:", options, NULL)) != -1) {
                int v;
                switch (opt) {
                case 'h':
                        fputs(help_init, stdout);
                        return 1 + 0;
                case 'l':
                        fputs(license_text, stdout);
                        return 1 + 0;
                case 's': in->subreaper = true; break;
                case 'g': in->kill_group = true; break;
                case 'v': in->verbosity++; break;
                case 'w': in->warn_on_reap = true; break;
                case 'e':
                        v = parse_exit_code(optarg);
                        if (v < 0) {
                                msg_error("invalid exit code '%s' for -e (want 0 to 255)", optarg);
                                return 1 + fail_code(in);
                        }
                        in->expect[v] = true;
                        break;
                case 'p':
                        v = tend_signal_from_name(optarg);
                        if (v <= 0) {
                                msg_error("invalid signal '%s' for -p (try SIGKILL)", optarg);
                                return 1 + fail_code(in);
                        }
                        in->pdeathsig = v;
                        break;
                case 'r':
                        if (parse_rewrite(in, optarg) < 0) {
                                msg_error("invalid rewrite '%s' for -r (want FROM:TO, e.g. "
                                          "TERM:QUIT or 15:3; TO 0 drops)", optarg);
                                return 1 + fail_code(in);
                        }
                        break;
                case OPT_GRACE:
                        if (tend_parse_duration(optarg, &grace_usec) < 0) {
                                msg_error("invalid duration '%s' for --grace (try 500ms, 10s)",
                                          optarg);
                                return 1 + fail_code(in);
                        }
                        grace_set = true;
                        break;
                case OPT_STOP:
                        if (tend_ladder_parse(optarg, &in->ladder) < 0) {
                                msg_error("invalid ladder '%s' for --stop (try TERM/5s,KILL)",
                                          optarg);
                                return 1 + fail_code(in);
                        }
                        stop_set = true;
                        break;
                case OPT_NO_GRACE: no_grace = true; break;
                case OPT_JOB_CONTROL: in->job_control = true; break;
                case OPT_NO_CGROUP: in->no_cgroup = true; break;
                case OPT_KEEP_FDS: in->keep_fds = true; break;
                case '?':
                default:
                        if (optopt > 0 && optopt < 256 && strchr("epr", optopt))
                                msg_error("option '-%c' needs an argument (try '%s -h')", optopt,
                                          in->prog);
                        else if (optopt > 0 && optopt < 256)
                                msg_error("unknown option '-%c' (try '%s -h')", optopt, in->prog);
                        else if (optopt)
                                msg_error("option '%s' needs an argument (try '%s -h')",
                                          argv[optind - 1], in->prog);
                        else
                                msg_error("unknown or incomplete option '%s' (try '%s -h')",
                                          argv[optind - 1], in->prog);
                        return 1 + fail_code(in);
                }
        }
        if (optind >= argc) {
                msg_error("no program given (usage: %s [OPTIONS] [--] PROGRAM [ARGS...])",
                          in->prog);
                return 1 + fail_code(in);
        }
        if (!stop_set) {
                in->ladder.n = 2;
                in->ladder.step[0] = (struct tend_ladder_step){ SIGTERM, grace_usec };
                in->ladder.step[1] = (struct tend_ladder_step){ SIGKILL, 0 };
        }
        /* The graceful end is ours; under tini's names only when asked for. */
        in->graceful = no_grace ? false : (!in->tini || grace_set || stop_set);
        if (in->job_control) {
                /* As dumb-init: the terminal's stop signals become SIGSTOP for the whole job
                 * (unless -r says otherwise), since the job is no longer on the terminal. */
                static const int stops[] = { SIGTSTP, SIGTTIN, SIGTTOU };
                for (size_t i = 0; i < ARRAY_SIZE(stops); i++)
                        if (in->rewrite[stops[i]] < 0)
                                in->rewrite[stops[i]] = SIGSTOP;
                in->kill_group = true;
        }
        *ret_optind = optind;
        return 0;
}

static void parse_env(struct init *in) {
        /* tini's rules: set, whatever the value (even empty), means yes. */
        if (getenv("TINI_SUBREAPER"))
                in->subreaper = true;
        if (getenv("TINI_KILL_PROCESS_GROUP"))
                in->kill_group = true;
        const char *v = getenv("TINI_VERBOSITY");
        if (v)
                in->verbosity = atoi(v);
}

/* ---- setup -------------------------------------------------------------------------------- */

static int exit_code_for_spawn_error(const struct init *in, int err, enum tend_spawn_step step) {
        if (step != TEND_STEP_EXEC)
                return fail_code(in);
        if (err == -ENOENT || err == -ENOTDIR)
                return EXIT_TEND_NOTFOUND;
        return EXIT_TEND_NOEXEC;
}

static void check_reaping(const struct init *in) {
        if (getpid() == 1)
                return;
        int bit = 0;
        if (prctl(PR_GET_CHILD_SUBREAPER, &bit) == 0 && bit)
                return;
        say(in, VERBOSE_WARN,
            "not running as PID 1 and not a child subreaper: orphaned descendants are not "
            "re-parented here, so zombie reaping won't work (use -s or set TINI_SUBREAPER, or "
            "run as PID 1)");
}

static int run(struct init *in, char **cmd, const sigset_t *caller_mask) {
        /* An ignored SIGCHLD makes the kernel discard every exit status, the child's and the
         * orphans' (and would be handed on, breaking the child's own waits): not for an
         * init. The one ignored signal the child does not get back. */
        struct sigaction chld;
        if (sigaction(SIGCHLD, NULL, &chld) == 0 && chld.sa_handler == SIG_IGN) {
                memset(&chld, 0, sizeof chld);
                chld.sa_handler = SIG_DFL;
                sigemptyset(&chld.sa_mask);
                (void)sigaction(SIGCHLD, &chld, NULL);
        }
        int e = tend_loop_new(&in->loop);
        if (e < 0) {
                msg_error("cannot create the event loop: %s", tend_strerror(e));
                return fail_code(in);
        }
        /* Under our own name we are a subreaper in every mode (DESIGN §1.7); under tini's
         * only when asked, so that tini's own "it should warn" check still holds. */
        if ((in->subreaper || !in->tini) && getpid() != 1 &&
            prctl(PR_SET_CHILD_SUBREAPER, 1) < 0) {
                msg_error("cannot become a child subreaper: %s", strerror(errno));
                return fail_code(in);
        }
        e = tend_loop_reap_orphans(in->loop, on_orphan, in);
        if (e < 0) {
                msg_error("cannot watch SIGCHLD: %s", tend_strerror(e));
                return fail_code(in);
        }
        for (int signo = 1; signo < _NSIG; signo++) {
                if (!signal_is_forwarded(in, signo))
                        continue;
                e = tend_signal_new(in->loop, signo, on_signal, in, &in->signals[signo]);
                if (e < 0) {
                        msg_error("cannot watch signal %s: %s", tend_signal_name(signo),
                                  tend_strerror(e));
                        return fail_code(in);
                }
        }
        if (in->job_control) {
                e = tend_signal_new(in->loop, SIGCHLD, on_sigchld, in, &in->sigchld);
                if (e < 0) {
                        msg_error("cannot watch SIGCHLD: %s", tend_strerror(e));
                        return fail_code(in);
                }
        }
        /* TTIN/TTOU: blocked until the child has its own dispositions, then ignored (the
         * child must get the caller's, not ours). A pending one is dropped by SIG_IGN. */
        sigset_t tty_set;
        sigemptyset(&tty_set);
        if (!in->job_control) {
                sigaddset(&tty_set, SIGTTIN);
                sigaddset(&tty_set, SIGTTOU);
                sigprocmask(SIG_BLOCK, &tty_set, NULL);
        }
        if (in->pdeathsig) {
                /* Set once the signal is ours to read; if the parent died before, the kernel
                 * will never send it, so send it ourselves. */
                pid_t parent = getppid();
                if (prctl(PR_SET_PDEATHSIG, in->pdeathsig) < 0) {
                        msg_error("cannot set the parent-death signal: %s", strerror(errno));
                        return fail_code(in);
                }
                if (getppid() != parent)
                        (void)kill(getpid(), in->pdeathsig);
        }
        if (!in->tini || in->graceful) {
                e = tend_group_new(in->loop, "init", in->no_cgroup ? TEND_GROUP_NO_CGROUP : 0,
                                   &in->group);
                if (e < 0) {
                        /* Containment is a bonus; running the container is the job. */
                        say(in, VERBOSE_WARN, "cannot make a group to contain '%s': %s",
                            in->command, tend_strerror(e));
                        in->group = NULL;
                } else {
                        say(in, VERBOSE_DEBUG, "containment: %s%s",
                            tend_group_kind(in->group) == TEND_GROUP_CGROUP ? "cgroup "
                                                                            : "process group",
                            tend_group_path(in->group) ? tend_group_path(in->group) : "");
                }
        }
        check_reaping(in);

        struct tend_spawn_opts so;
        memset(&so, 0, sizeof so);
        so.argv = (const char *const *)cmd;
        so.sigmask = caller_mask;
        so.group = in->group;
        if (in->keep_fds)
                so.flags |= TEND_SPAWN_NO_CLOSE_FDS;
        if (in->job_control) {
                /* Off the terminal entirely: its stop keys reach us, and we stop the job. */
                so.flags |= TEND_SPAWN_SETSID;
        } else {
                so.flags |= TEND_SPAWN_SETPGID;
                /* On a terminal whose foreground is ours, hand it to the child: it can read
                 * the terminal, and the keyboard's signals reach it once. */
                if (isatty(STDIN_FILENO) && tcgetpgrp(STDIN_FILENO) == getpgrp()) {
                        so.flags |= TEND_SPAWN_FOREGROUND;
                        in->gave_foreground = true;
                }
        }
        /* Do not hold the caller's directory (a mount that could not be unmounted); the child
         * keeps it, by its path. Before the spawn, so that nobody who sees the child running
         * still finds us there. Where the path is not known (getcwd fails: the directory was
         * removed), the child inherits it and we leave it after the spawn. */
        char *cwd = getcwd(NULL, 0);
        bool left_cwd = false;
        if (cwd && strcmp(cwd, "/") && chdir("/") == 0) {
                so.cwd = cwd;
                left_cwd = true;
        }
        enum tend_spawn_step step = TEND_STEP_NONE;
        e = tend_spawn(in->loop, &so, &in->proc, &step);
        if (e < 0 && in->group && tend_group_kind(in->group) == TEND_GROUP_CGROUP &&
            (step == TEND_STEP_CGROUP || step == TEND_STEP_CLONE)) {
                /* A cgroup we could make but not start a process in (a controller enabled
                 * above us, a delegation we do not own): contain by process group instead
                 * rather than not run the container at all. */
                say(in, VERBOSE_WARN, "cannot start '%s' in cgroup %s (%s), using a process "
                    "group instead", cmd[0], tend_group_path(in->group), tend_strerror(e));
                in->group = tend_group_free(in->group);
                if (tend_group_new(in->loop, "init", TEND_GROUP_NO_CGROUP, &in->group) < 0)
                        in->group = NULL;
                so.group = in->group;
                step = TEND_STEP_NONE;
                e = tend_spawn(in->loop, &so, &in->proc, &step);
        }
        free(cwd);
        so.cwd = NULL;
        if (e < 0) {
                in->gave_foreground = false;
                if (step == TEND_STEP_EXEC)
                        msg_error("cannot exec '%s': %s", cmd[0], tend_strerror(e));
                else
                        msg_error("cannot start '%s' (%s): %s", cmd[0],
                                  tend_spawn_step_name(step), tend_strerror(e));
                return exit_code_for_spawn_error(in, e, step);
        }
        in->child_pid = tend_proc_pid(in->proc);
        tend_proc_on_exit(in->proc, on_exit_cb, in);
        say(in, VERBOSE_INFO, "started '%s' as pid %d", cmd[0], (int)in->child_pid);

        if (!in->job_control) {
                struct sigaction ign;
                memset(&ign, 0, sizeof ign);
                ign.sa_handler = SIG_IGN;
                sigemptyset(&ign.sa_mask);
                sigaction(SIGTTIN, &ign, NULL);
                sigaction(SIGTTOU, &ign, NULL);
                sigprocmask(SIG_UNBLOCK, &tty_set, NULL);
        }
        if (!left_cwd && chdir("/") < 0)
                say(in, VERBOSE_DEBUG, "cannot change directory to '/': %s", strerror(errno));

        /* A running ladder keeps the loop alive until the group is empty (loop_ref). */
        e = tend_loop_run(in->loop);
        if (e < 0) {
                msg_error("event loop failed: %s", tend_strerror(e));
                return fail_code(in);
        }
        /* Zombies whose SIGCHLD came with the child's exit: reap them now rather than leave
         * them to whoever inherits them. */
        if (in->exited)
                (void)tend_loop_run_once(in->loop, 0);

        if (!in->exited)
                return fail_code(in);
        if (in->status_lost) {
                msg_error("the exit status of '%s' was lost", cmd[0]);
                return fail_code(in);
        }
        int code = (in->exit.signo ? 128 + in->exit.signo : in->exit.code) & 0xff;
        if (in->expect[code]) {
                say(in, VERBOSE_INFO, "exit code %d mapped to 0 (-e)", code);
                code = 0;
        }
        return code;
}

static int init_main(int argc, char **argv, bool tini, const char *prog) {
        /* The caller's mask, before the loop blocks anything: the child gets it back. */
        sigset_t caller_mask;
        sigprocmask(SIG_SETMASK, NULL, &caller_mask);

        struct init *in = calloc(1, sizeof *in);
        if (!in) {
                msg_error("out of memory");
                return tini ? 1 : EXIT_TEND_FAILURE;
        }
        in->tini = tini;
        in->prog = prog;
        in->verbosity = VERBOSE_WARN;
        in->keep_fds = tini;
        in->end_step = -1;
        for (int i = 0; i < _NSIG; i++)
                in->rewrite[i] = -1;

        int first = 0;
        int r = parse_args(in, argc, argv, &first);
        if (r > 0) {
                free(in);
                return r - 1;
        }
        parse_env(in);
        char **cmd = argv + first;
        in->command = cmd[0];

        int code = run(in, cmd, &caller_mask);

        restore_foreground(in);
        tend_proc_free(in->proc);
        tend_group_free(in->group);
        for (int i = 0; i < _NSIG; i++)
                tend_signal_free(in->signals[i]);
        tend_signal_free(in->sigchld);
        tend_loop_free(in->loop);
        free(in);
        fflush(stdout);
        return code;
}

int cmd_init(int argc, char **argv) {
        return init_main(argc, argv, false, "tend init");
}

int cmd_init_tini(int argc, char **argv) {
        const char *base = strrchr(argv[0], '/');
        return init_main(argc, argv, true, base ? base + 1 : argv[0]);
}
