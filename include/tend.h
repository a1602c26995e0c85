/* tend.h — libtend, reliable process launching, monitoring and supervision for Linux.
 *
 * This header is the API manual.
 *
 * Conventions used throughout:
 *  - Functions that can fail return a negative errno value (or one of the TEND_E* codes below,
 *    which lie above the errno range); 0 or a positive value is success. tend_strerror() turns
 *    any of them into text. Out-parameters are named ret_* and are left untouched on failure.
 *  - Handles are opaque. Each has a _new and a _free; _free(NULL) is a no-op, and every _free
 *    returns NULL so that `h = tend_x_free(h);` leaves no dangling pointer.
 *  - Option structs default to zero: a zero-initialised struct asks for the plain behaviour.
 *  - Every file descriptor the library creates is close-on-exec.
 *  - The library never prints, never exits, never installs signal handlers, and never calls
 *    waitpid(-1)/wait(): children are waited for through their pidfds, so other code in the
 *    same process keeps its own children's statuses.
 *  - Callbacks run from tend_loop_run()/tend_loop_run_once(), never from a signal handler.
 *  - The library is not thread-safe per loop: use one loop, and its handles, from one thread.
 *    Different loops in different threads are independent.
 *
 * Linux >= 5.10 is assumed. Newer features (cgroup.kill 5.14, PIDFD_INFO_EXIT 6.15) are
 * detected at run time and have fallbacks, described where they matter.
 */
#ifndef TEND_H
#define TEND_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TEND_VERSION "0.1.0"

/* ---------------------------------------------------------------------------------------- */
/* Errors                                                                                     */
/* ---------------------------------------------------------------------------------------- */

/* Domain errors, where the kernel has no errno. All are returned negated, like errnos. */
enum {
        TEND_E_BASE = 10000,
        /* The child's status was taken by someone else (waitpid(-1) elsewhere in the process)
         * and this kernel cannot give it back (PIDFD_INFO_EXIT needs Linux 6.15). The status
         * is unknown; it is never guessed. */
        TEND_ESTATUSLOST,
        /* A ladder, duration or similar text could not be parsed. */
        TEND_EPARSE,
        /* A record file is malformed. */
        TEND_EBADRECORD,
        TEND_E_MAX
};

/* Text for a negative errno or TEND_E* code (either sign accepted). Never NULL. */
const char *tend_strerror(int err);

/* ---------------------------------------------------------------------------------------- */
/* Time and text helpers                                                                      */
/* ---------------------------------------------------------------------------------------- */

/* Microseconds of CLOCK_MONOTONIC. */
uint64_t tend_now_usec(void);

/* Parse a duration: a number (integer or decimal) followed by a unit: "us", "ms", "s", "m",
 * "h"; a bare number means seconds. "500ms", "1.5s", "2m", "0". On success stores
 * microseconds. Returns -TEND_EPARSE on bad text, -ERANGE when it overflows. */
int tend_parse_duration(const char *text, uint64_t *ret_usec);

/* Signal names: "TERM", "SIGTERM", "term", or a number "15". Returns the number or -EINVAL. */
int tend_signal_from_name(const char *name);
/* "TERM" for 15; the number as text ("33") for signals without a name, so that
 * tend_signal_from_name() reads every result back. Never NULL. */
const char *tend_signal_name(int signo);

/* ---------------------------------------------------------------------------------------- */
/* Loop: epoll + one timerfd (timer heap) + one signalfd                                     */
/* ---------------------------------------------------------------------------------------- */

typedef struct tend_loop tend_loop;
typedef struct tend_watch tend_watch;
typedef struct tend_timer tend_timer;
typedef struct tend_signal tend_signal;

int tend_loop_new(tend_loop **ret_loop);
/* Frees the loop. All watches, timers, signals and processes made on it must be freed first;
 * signals the loop blocked are restored. */
tend_loop *tend_loop_free(tend_loop *loop);

/* One fd that polls readable whenever the loop has work: put it in another program's poll or
 * epoll and call tend_loop_run_once(loop, 0) when it fires. */
int tend_loop_fd(const tend_loop *loop);

/* Run until tend_loop_stop() or until nothing is left that could wake the loop (no active
 * watch, timer, signal or running process). Returns 0, or a negative errno if epoll failed. */
int tend_loop_run(tend_loop *loop);
/* Wait at most timeout_usec (UINT64_MAX: no limit; 0: do not block) and dispatch what is ready.
 * Returns the number of events dispatched (>= 0) or a negative errno. */
int tend_loop_run_once(tend_loop *loop, uint64_t timeout_usec);
/* Make tend_loop_run() return after the current iteration. */
void tend_loop_stop(tend_loop *loop);

/* fd watch. events are EPOLLIN/EPOLLOUT/EPOLLPRI (level-triggered). The fd stays the caller's;
 * free the watch before closing it. */
typedef void (*tend_watch_cb)(tend_watch *w, int fd, uint32_t revents, void *userdata);
int tend_watch_new(tend_loop *loop, int fd, uint32_t events, tend_watch_cb cb, void *userdata,
                   tend_watch **ret_watch);
int tend_watch_set_events(tend_watch *w, uint32_t events); /* 0 pauses the watch */
tend_watch *tend_watch_free(tend_watch *w);

/* One-shot timers, all multiplexed on one timerfd. start re-arms a running timer. */
typedef void (*tend_timer_cb)(tend_timer *t, void *userdata);
int tend_timer_new(tend_loop *loop, tend_timer_cb cb, void *userdata, tend_timer **ret_timer);
void tend_timer_start(tend_timer *t, uint64_t delay_usec);
void tend_timer_stop(tend_timer *t);
bool tend_timer_active(const tend_timer *t);
tend_timer *tend_timer_free(tend_timer *t);

/* Signals through the loop's signalfd. The loop blocks signo in the calling thread's mask while
 * at least one tend_signal exists for it, and unblocks it after. Children spawned by the library
 * never see this mask (see tend_spawn_opts.sigmask). Several tend_signal may share a signo;
 * each is called. */
typedef void (*tend_signal_cb)(tend_signal *s, const struct signalfd_siginfo *info,
                               void *userdata);
int tend_signal_new(tend_loop *loop, int signo, tend_signal_cb cb, void *userdata,
                    tend_signal **ret_signal);
tend_signal *tend_signal_free(tend_signal *s);
/* Several signals with one callback, at the cost of one: the mask and the signalfd change once
 * for all of them (a process that handles many signals pays two system calls, not two per
 * signal). ret_signals receives n handles, in the order of signos; on failure (a negative
 * errno) none was made and the mask is as before. Each handle is then like one from
 * tend_signal_new(). */
int tend_signals_new(tend_loop *loop, const int *signos, size_t n, tend_signal_cb cb,
                     void *userdata, tend_signal **ret_signals);
/* Frees the n handles of the array (NULL entries are skipped) and sets each entry to NULL;
 * the signalfd and the mask change once per loop for all of them. */
void tend_signals_free(tend_signal **signals, size_t n);

/* Orphan reaping, for programs that own every child of their process (an init, a supervisor,
 * `tend run` as a subreaper). On each SIGCHLD the loop reaps zombies that are not processes
 * spawned through this loop, calling cb (may be NULL) for each, and hands exits of its own
 * processes to their handles. Zombies are first looked at with WNOWAIT, so the status of a
 * tend_proc is never taken by the orphan reaper. Do not enable this in a library or in a
 * program whose other children are waited for elsewhere. */
typedef void (*tend_orphan_cb)(pid_t pid, int wait_status, void *userdata);
int tend_loop_reap_orphans(tend_loop *loop, tend_orphan_cb cb, void *userdata);

/* ---------------------------------------------------------------------------------------- */
/* Group: a child and all its descendants                                                    */
/* ---------------------------------------------------------------------------------------- */

typedef struct tend_group tend_group;

enum tend_group_kind {
        TEND_GROUP_CGROUP = 1,  /* a cgroup v2 leaf of its own: every descendant is tracked */
        TEND_GROUP_PGROUP = 2,  /* process group + this process as child subreaper */
};

enum tend_group_flags {
        /* Do not try cgroup v2; use the process-group fallback even if cgroups are writable. */
        TEND_GROUP_NO_CGROUP = 1u << 0,
        /* Fail with the cgroup error instead of falling back. */
        TEND_GROUP_REQUIRE_CGROUP = 1u << 1,
};

/* Create a group. With a writable cgroup v2 hierarchy, this makes a leaf cgroup below the
 * calling process's own cgroup (found through /proc/self/cgroup and /proc/self/mountinfo),
 * named after name_hint (may be NULL) and the pid. Otherwise the group is a process-group
 * group: the first process spawned into it becomes the group leader, and the calling process
 * is made a child subreaper (PR_SET_CHILD_SUBREAPER) so that descendants that leave the
 * process group (setsid, double fork) are re-parented here and remain visible. Without
 * cgroups, descendants that setsid() away are attributed to the group only if this process
 * has a single group. */
int tend_group_new(tend_loop *loop, const char *name_hint, unsigned flags,
                   tend_group **ret_group);
/* Kills nothing. Free a process's stop ladder (tend_proc_free) before the group it names
 * (a process handle still running then no longer names the group: tend_proc_group() says
 * NULL). A populated cgroup group keeps tend_loop_run() running (through the pidfds of its
 * process handles, then its cgroup.events watch until it is empty); a process-group group
 * never does. Removes the cgroup if it is empty; if it is not, its processes are moved to
 * the parent cgroup first so that no cgroup is left behind. */
tend_group *tend_group_free(tend_group *g);

enum tend_group_kind tend_group_kind(const tend_group *g);
/* The cgroup directory path (for messages and tests), or NULL for a process-group group. */
const char *tend_group_path(const tend_group *g);

/* Fill pids[0..cap) with live members (zombies excluded); returns the total count, which can
 * exceed cap, or a negative errno. */
int tend_group_members(tend_group *g, pid_t *pids, size_t cap);
/* Signal every member (through pidfds, so a recycled pid is never hit). Returns the number of
 * processes signalled or a negative errno. */
int tend_group_signal(tend_group *g, int signo);
/* SIGKILL every member: cgroup.kill where present (Linux >= 5.14), otherwise signal members
 * until none is left. Returns 0 or a negative errno. */
int tend_group_kill(tend_group *g);
/* true when no live process is left in the group. */
bool tend_group_empty(tend_group *g);
/* For the end of a group's use: nothing more will be spawned into g. A cgroup group whose
 * cgroup the kernel lets us remove (nothing in it or below it, live or exiting) is removed
 * now and is empty for good: returns 1, and members, signals and kills then find nobody,
 * tend_group_free() has nothing left to remove, and a spawn into g fails with -ENOENT. One
 * rmdir(2), where tend_group_members() would read the cgroup's files first. Returns 0 when
 * the group has or may have members (or is a process-group group): ask tend_group_members().
 * -EINVAL for NULL. An empty event still owed is delivered from the loop. */
int tend_group_remove_if_empty(tend_group *g);
/* Called once each time the group goes from populated to empty (cgroup.events for cgroups;
 * after SIGCHLD-driven re-checks for process groups, which needs tend_loop_reap_orphans()). */
typedef void (*tend_group_empty_cb)(tend_group *g, void *userdata);
void tend_group_on_empty(tend_group *g, tend_group_empty_cb cb, void *userdata);

/* ---------------------------------------------------------------------------------------- */
/* Spawn                                                                                       */
/* ---------------------------------------------------------------------------------------- */

typedef struct tend_proc tend_proc;

enum tend_stdio_kind {
        TEND_STDIO_INHERIT = 0, /* the caller's fd of the same number */
        TEND_STDIO_NULL,        /* /dev/null */
        TEND_STDIO_PIPE,        /* a pipe; the parent end is tend_proc_stdio_fd() */
        TEND_STDIO_FILE,        /* open(path, flags, mode) in the child */
        TEND_STDIO_PTY,         /* the slave of a new pseudo-terminal; see tend_proc_pty_fd() */
        TEND_STDIO_FD,          /* dup of the caller's fd `fd`; the caller keeps its fd */
        TEND_STDIO_CLOSE,       /* closed in the child */
};

struct tend_stdio {
        enum tend_stdio_kind kind;
        int fd;           /* TEND_STDIO_FD */
        const char *path; /* TEND_STDIO_FILE */
        int flags;        /* TEND_STDIO_FILE: open flags; 0 means O_RDONLY for fd 0 and
                             O_WRONLY|O_CREAT|O_TRUNC for 1 and 2 */
        mode_t mode;      /* TEND_STDIO_FILE with O_CREAT; 0 means 0666 (umask applies) */
};

/* An extra fd handed to the child at a given number. The caller keeps parent_fd. */
struct tend_fd_map {
        int parent_fd;
        int child_fd;
};

struct tend_rlimit {
        int resource; /* RLIMIT_* */
        struct rlimit limit;
};

enum tend_spawn_flags {
        TEND_SPAWN_SETSID = 1u << 0,         /* new session (implies a new process group) */
        TEND_SPAWN_SETPGID = 1u << 1,        /* new process group led by the child */
        TEND_SPAWN_SET_UMASK = 1u << 2,      /* apply .umask */
        TEND_SPAWN_SET_USER = 1u << 3,       /* setuid(.uid) */
        TEND_SPAWN_SET_GROUP = 1u << 4,      /* setgid(.gid) */
        TEND_SPAWN_SET_GROUPS = 1u << 5,     /* setgroups(.n_groups, .groups) */
        TEND_SPAWN_RESET_IGNORED = 1u << 6,  /* signals ignored by the caller become SIG_DFL */
        TEND_SPAWN_FOREGROUND = 1u << 7,     /* with SETPGID on a terminal stdin: tcsetpgrp */
        TEND_SPAWN_NO_CLOSE_FDS = 1u << 8,   /* do not close fds above 2 that are not mapped
                                                (fds without O_CLOEXEC then leak: for tests) */
};

struct tend_spawn_opts {
        /* Required. argv[0] is searched in PATH (of envp if given, else of the caller) when
         * it has no '/', like execvp(), except that a PATH directory that cannot be searched
         * counts as "not there" (-ENOENT), not as -EACCES; -EACCES means a file was found
         * and cannot be executed. .file overrides what is executed. */
        const char *const *argv;
        const char *file;
        const char *const *envp; /* NULL: the caller's environ */
        const char *cwd;         /* NULL: the caller's */
        unsigned flags;          /* tend_spawn_flags */
        mode_t umask;
        uid_t uid;
        gid_t gid;
        const gid_t *groups;
        size_t n_groups;
        const struct tend_rlimit *rlimits;
        size_t n_rlimits;
        struct tend_stdio stdio[3];
        const struct tend_fd_map *fds;
        size_t n_fds;
        /* The child's signal mask. NULL: empty. (`init` passes the mask its caller gave it.)
         * Handlers are always reset by exec; ignored signals stay ignored unless
         * TEND_SPAWN_RESET_IGNORED. */
        const sigset_t *sigmask;
        int pdeathsig;     /* 0: none. Set in the child with PR_SET_PDEATHSIG. */
        tend_group *group; /* place the child in this group (cgroup: from its first
                              instruction, with CLONE_INTO_CGROUP) */
        struct {
                unsigned short rows, cols; /* TEND_STDIO_PTY: initial size, 0: kernel default */
        } pty;
        /* NULL: nothing. Else NAME=<the child's own pid> is put in the child's environment
         * (envp, or the caller's environ), replacing any NAME= there — only the child knows
         * its pid before exec (sd_notify's WATCHDOG_PID=, systemd's LISTEN_PID=). NAME must
         * not contain '='. */
        const char *pid_env_name;
};

/* Steps of process start-up, reported with an exec failure. */
enum tend_spawn_step {
        TEND_STEP_NONE = 0,
        TEND_STEP_PREPARE, /* in the parent: pipes, pty, argv, path search, allocation */
        TEND_STEP_CLONE,
        TEND_STEP_CGROUP,
        TEND_STEP_SETSID,
        TEND_STEP_SETPGID,
        TEND_STEP_STDIO,
        TEND_STEP_FDS,
        TEND_STEP_RLIMIT,
        TEND_STEP_GROUPS,
        TEND_STEP_GID,
        TEND_STEP_UID,
        TEND_STEP_CWD,
        TEND_STEP_UMASK,
        TEND_STEP_SIGNALS,
        TEND_STEP_PDEATHSIG,
        TEND_STEP_CTTY,
        TEND_STEP_EXEC,
};
/* "exec", "chdir", … for messages. */
const char *tend_spawn_step_name(enum tend_spawn_step step);

/* Spawn a process. On success the child is running (exec succeeded), *ret_proc holds it, and
 * it is watched by the loop: its exit callback (tend_proc_on_exit) runs when it ends. On
 * failure nothing is left running, a negative errno is returned, and *ret_step (if not NULL)
 * says which step failed: e.g. -ENOENT with TEND_STEP_EXEC for a missing command, -EACCES
 * with TEND_STEP_EXEC for a file that is not executable, -ENOENT with TEND_STEP_CWD for a bad
 * working directory. A failed start never looks like an exit (no 127).
 *
 * How: clone3(CLONE_VM|CLONE_VFORK|CLONE_PIDFD[|CLONE_INTO_CGROUP]) on a private stack, so a
 * large parent spawns as fast as a small one; where clone3 is refused (ENOSYS, or EPERM from
 * a seccomp filter) the child is made with clone(CLONE_VM|CLONE_VFORK|CLONE_PIDFD) instead,
 * and is moved into its cgroup by the child itself. All signals are blocked in the parent
 * around the clone so no handler runs in the shared-memory child. */
int tend_spawn(tend_loop *loop, const struct tend_spawn_opts *opts, tend_proc **ret_proc,
               enum tend_spawn_step *ret_step);

/* ---------------------------------------------------------------------------------------- */
/* Process handle                                                                              */
/* ---------------------------------------------------------------------------------------- */

/* Frees the handle. If the process still runs it is not killed, but is no longer watched and
 * is not waited for by the library any more (its pidfd is closed). */
tend_proc *tend_proc_free(tend_proc *p);

pid_t tend_proc_pid(const tend_proc *p);
int tend_proc_pidfd(const tend_proc *p); /* -1 once reaped */
tend_group *tend_proc_group(const tend_proc *p);
/* Parent end of a TEND_STDIO_PIPE stream (0, 1 or 2), or -1. The handle owns it; detach with
 * tend_proc_take_stdio_fd() to own it yourself. */
int tend_proc_stdio_fd(const tend_proc *p, int stream);
int tend_proc_take_stdio_fd(tend_proc *p, int stream);
/* Master side of a TEND_STDIO_PTY, or -1. Same ownership rules. */
int tend_proc_pty_fd(const tend_proc *p);
int tend_proc_take_pty_fd(tend_proc *p);

/* The result of waiting. */
struct tend_exit {
        int code;        /* exit code if !signo */
        int signo;       /* terminating signal, 0 if it exited */
        bool core;       /* it dumped core */
        bool recovered;  /* someone else reaped it; the status came from PIDFD_INFO_EXIT */
        int wait_status; /* the status as waitpid() would give it */
        struct rusage rusage; /* zero when recovered */
        uint64_t start_usec, end_usec; /* tend_now_usec() at spawn and when the exit was seen */
};

/* Called once, from the loop, when the process has ended and been reaped. err is 0 and ex set,
 * or err is -TEND_ESTATUSLOST (ex NULL) when another waiter took the status and the kernel
 * cannot recover it. The handle stays valid; free it from here if you like. */
typedef void (*tend_exit_cb)(tend_proc *p, int err, const struct tend_exit *ex, void *userdata);
void tend_proc_on_exit(tend_proc *p, tend_exit_cb cb, void *userdata);

/* Non-blocking wait: 0 and *ret_exit when done; -EAGAIN while running; -TEND_ESTATUSLOST.
 * Once reaped, returns the same result every time without a system call. */
int tend_proc_poll(tend_proc *p, struct tend_exit *ret_exit);
/* Blocking wait (does not run the loop; other callbacks do not run meanwhile). Same results. */
int tend_proc_wait(tend_proc *p, struct tend_exit *ret_exit);
bool tend_proc_exited(const tend_proc *p);

/* Send signo through the pidfd. Returns 0, or -ESRCH once the process has been reaped (no
 * system call is made then: a recycled pid is never signalled). signo 0 probes. */
int tend_proc_signal(tend_proc *p, int signo);

/* Follow a process this loop did not spawn — the daemon a forking service's start command
 * left behind, a pid named by a pidfile or by sd_notify's MAINPID= — as a handle like any
 * other: its pidfd is opened (so signals can never reach a recycled pid) and watched by the
 * loop. With group given, the process must be a live member of that group (checked after
 * the pidfd is open, so what is adopted is the member), else -ESRCH. -EEXIST if the loop
 * already has a handle for pid.
 *
 * The exit is seen when the pidfd polls readable. The status comes through waitid() when
 * the process is a child of the caller — which is the case for orphans re-parented to a
 * child subreaper or PID 1, the usual way a daemon's process becomes ours. For a process
 * that stays another's child, the status is read from the pidfd once its parent has reaped
 * it (PIDFD_INFO_EXIT, Linux >= 6.15); on older kernels the exit callback then gets
 * -TEND_ESTATUSLOST. tend_exit.rusage is zero and start_usec is the time of adoption. */
int tend_proc_adopt(tend_loop *loop, pid_t pid, tend_group *group, tend_proc **ret_proc);

/* ---------------------------------------------------------------------------------------- */
/* Stop ladder                                                                                 */
/* ---------------------------------------------------------------------------------------- */

#define TEND_LADDER_MAX 8

struct tend_ladder_step {
        int signo; /* 0: send nothing, only wait (a stop command does the asking) */
        uint64_t wait_usec; /* how long to wait for the end after sending; last step: unused */
};
struct tend_ladder {
        size_t n;
        struct tend_ladder_step step[TEND_LADDER_MAX];
};

/* "TERM/5s,QUIT/5s,KILL" — signal names or numbers, each but the last followed by /DURATION.
 * A last step with a wait is allowed (it bounds the wait after it). -TEND_EPARSE on bad text. */
int tend_ladder_parse(const char *text, struct tend_ladder *ret_ladder);
/* The default: TERM/5s,QUIT/5s,KILL. */
void tend_ladder_default(struct tend_ladder *ret_ladder);
/* Write the text form to buf (always NUL-terminated). */
void tend_ladder_format(const struct tend_ladder *ladder, char *buf, size_t size);

/* Start stopping p with the ladder: send step 0 (and SIGCONT after it, so a stopped process
 * can act on it), wait, send step 1, … . When the group is given, each step signals every
 * member of the group (cgroup.kill for SIGKILL where available) and the ladder goes on until
 * both p has exited and the group is empty; otherwise only p is signalled. cb is called once,
 * when done, with the index of the step that was in effect when the end came (so 0 means the
 * first signal sufficed). A ladder already running is restarted. The callback runs once p has
 * exited and the group (if any) is empty: if both hold when p exits, it runs before p's exit
 * callback, otherwise later, when the group empties. It must not free p (free p from the exit
 * callback, or after this one). */
typedef void (*tend_stop_cb)(tend_proc *p, int step, void *userdata);
int tend_proc_stop(tend_proc *p, const struct tend_ladder *ladder, tend_group *group,
                   tend_stop_cb cb, void *userdata);
/* The step in effect (-1 if no ladder has run). */
int tend_proc_stop_step(const tend_proc *p);

/* Stop a group without a main process (leftovers after the main child exited). Same ladder
 * semantics; cb gets the step in effect when the group became empty. */
typedef void (*tend_group_stop_cb)(tend_group *g, int step, void *userdata);
int tend_group_stop(tend_group *g, const struct tend_ladder *ladder, tend_group_stop_cb cb,
                    void *userdata);

/* ---------------------------------------------------------------------------------------- */
/* Output capture                                                                              */
/* ---------------------------------------------------------------------------------------- */

typedef struct tend_capture tend_capture;

enum tend_capture_mode {
        TEND_CAPTURE_CHUNK = 0, /* the callback gets what each read returned */
        TEND_CAPTURE_LINE = 1,  /* the callback gets whole lines, '\n' included; a line longer
                                   than line_max is delivered in pieces of line_max bytes; a
                                   last line without '\n' is delivered at EOF */
};

struct tend_capture_opts {
        enum tend_capture_mode mode;
        size_t line_max; /* 0: 64 KiB */
        size_t read_size; /* bytes per read(), 0: 64 KiB */
        /* While splicing (tend_capture_splice_to), a pipe that one splice finds full is grown
         * once to this size (F_SETPIPE_SZ: rounded up to a power of two; above
         * /proc/sys/fs/pipe-max-size, 1 MiB, needs CAP_SYS_RESOURCE; refused quietly). A
         * flood then moves in fewer, larger splices, and a quiet stream keeps the default
         * pipe and its share of the user's pipe-user-pages-soft. 0: never. The bounded drain
         * reads up to the pipe's size at the time. */
        size_t grow_pipe_to;
};

/* Data callback: data/len is valid only during the call. eof is true exactly once, last, with
 * len 0: the stream ended (EOF, or closed after the bounded drain) — unless the consumer ended
 * it first with tend_capture_close(). The capture may be freed from the eof call, not from a
 * data call. */
typedef void (*tend_capture_cb)(tend_capture *c, const char *data, size_t len, bool eof,
                                void *userdata);

/* Read fd (made non-blocking) from the loop. Takes ownership of fd (closed by the capture). */
int tend_capture_new(tend_loop *loop, int fd, const struct tend_capture_opts *opts,
                     tend_capture_cb cb, void *userdata, tend_capture **ret_capture);
tend_capture *tend_capture_free(tend_capture *c);

/* The writer is known to be gone (the child exited) but a descendant may still hold the write
 * end: read at most what the writer could have left in it — the pipe's size (F_GETPIPE_SZ) —
 * without blocking, deliver it, then close the fd and report eof. Idempotent. */
void tend_capture_drain(tend_capture *c);
/* Stop reading for now (the consumer is behind: the writer then blocks on a full pipe, which
 * is backpressure, not loss) or resume. A drain still reads up to its bound while paused. */
void tend_capture_pause(tend_capture *c, bool paused);
bool tend_capture_done(const tend_capture *c);
/* The consumer has nowhere left to put the stream (the reader it passes it to went away):
 * stop reading and close the fd now, so that the writer's next write fails with EPIPE (and
 * SIGPIPE) as it would have had it written to that reader itself, instead of writing on into
 * a capture that throws everything away. What was read was delivered; what is still in the
 * pipe is dropped. The capture is then done, with no eof callback. May be called from the
 * data callback. Idempotent. */
void tend_capture_close(tend_capture *c);
/* Bytes taken from the stream so far, spliced ones included. */
uint64_t tend_capture_bytes(const tend_capture *c);
/* Move the stream's data straight into fd with splice(2) from now on, without a copy through
 * user space and without the data callback (which still gets eof). For a consumer whose only
 * job with the data is to write it, unchanged, to fd. fd stays the caller's, must stay open
 * while the capture splices into it, and must not be watched by the same loop; a pipe (best
 * opened O_NONBLOCK) or a file. Never blocks the loop: while a pipe fd is full, the capture
 * stops reading (backpressure) and watches fd instead.
 *
 * The callback must still be ready to write data to fd itself: when fd refuses splice
 * (EINVAL: a file opened O_APPEND, a terminal), on any write error (ENOSPC, EPIPE...), or at
 * the drain when fd is full, the capture stops splicing for good and goes on reading and
 * calling back from the same point in the stream, so nothing is lost or reordered, and the
 * consumer's own write sees and reports the error as before.
 *
 * Do not splice into a file description that other processes write through at the same
 * time: splice(2) does not serialise the file position as write(2) does (seen on Linux 6.18:
 * two processes splicing into one description lost bytes; with write(2), none).
 *
 * fd -1 stops splicing. Returns 0, or -EINVAL in TEND_CAPTURE_LINE mode, after the end, or
 * when the captured fd is not a pipe (a pty). */
int tend_capture_splice_to(tend_capture *c, int fd);

/* ---------------------------------------------------------------------------------------- */
/* Records: checkbox/plainbox .record.gz                                                      */
/* ---------------------------------------------------------------------------------------- */

/* A record is gzip of UTF-8 lines, each `[delay,"stdout"|"stderr","<base64>"]`, delay in
 * seconds since the previous record (the first: since the start). */
typedef struct tend_record tend_record;

/* Create path for writing (0666 & ~umask, truncated). start_usec is the time base. */
int tend_record_open(const char *path, uint64_t start_usec, tend_record **ret_record);
/* Append data of stream 1 (stdout) or 2 (stderr) at now_usec. One record per line: data is
 * split after each '\n'; a partial line is held until its end, a change of stream, or
 * tend_record_close(). */
int tend_record_write(tend_record *r, int stream, const void *data, size_t len,
                      uint64_t now_usec);
/* Flush and close. Returns 0 or the first write error. r is freed in every case. */
int tend_record_close(tend_record *r);

/* Read a record. cb gets each entry in order; a non-zero return from cb stops reading and is
 * returned. Malformed input returns -TEND_EBADRECORD with *ret_line (if not NULL) set to the
 * 1-based line number. */
typedef int (*tend_record_entry_cb)(double delay, int stream, const void *data, size_t len,
                                    void *userdata);
int tend_record_read(const char *path, tend_record_entry_cb cb, void *userdata,
                     unsigned long *ret_line);

/* Encode one entry as a record line (no newline) into a malloc'd string; for tests and tools. */
int tend_record_format_line(double delay, int stream, const void *data, size_t len,
                            char **ret_line);
/* Decode one line. *ret_data is malloc'd. */
int tend_record_parse_line(const char *line, double *ret_delay, int *ret_stream,
                           void **ret_data, size_t *ret_len);

#ifdef __cplusplus
}
#endif
#endif
