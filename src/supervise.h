/* supervise.h — what the files of `tend supervise` share.
 *
 *   cmd_supervise.c     the command: options, signals, start-up, reload, shutdown, the
 *                       dependency pass that lets waiting services go on
 *   supervise_service.c one service at run time: drives its state machine (lib/service.c)
 *                       and carries out the actions: hooks, spawn, stop ladder
 *   supervise_ready.c   readiness: sd_notify socket, notification fd, SIGSTOP, tcp and exec
 *                       probes, the forking start command and its pidfile
 *   supervise_log.c     each service's output: a pipe held across restarts, to a rotated
 *                       file with timestamps, to our own stdout/stderr, or nowhere
 *   supervise_status.c  a service described as JSON (for status dumps and `tend ctl`)
 *   control.c           the control socket: JSON-lines requests of `tend ctl` (cmd_ctl.c)
 *
 * One process, one loop: every service is a handful of fds and timers in it, no thread. */
#ifndef TEND_SUPERVISE_H
#define TEND_SUPERVISE_H

#include "cmd.h"
#include "config.h"
#include "notify.h"
#include "outq.h"
#include "service.h"

#include <jansson.h>

struct sv;
struct svc;
struct svc_logger;
struct control;

/* ---- one service ----------------------------------------------------------------------- */

/* Readiness of the current run and the sd_notify socket (supervise_ready.c). */
struct svc_readiness {
        int ready_fd;                /* fd:N: read end of the pipe */
        tend_watch *ready_watch;
        int tcp_fd;
        tend_watch *tcp_watch;
        tend_timer *probe_timer;
        uint64_t probe_interval;
        tend_proc *probe;
        bool wait_stop;              /* ready = stop: waiting for the main to stop itself */
        bool ready_pending;          /* forking: ready before the start command was done */
        char *ready_cause;           /* its cause (malloc'd; NULL: none kept) */
        int inotify_fd;              /* forking + pidfile */
        tend_watch *inotify_watch;
        bool pidfile_complained;

        /* sd_notify. */
        int notify_fd;
        tend_watch *notify_watch;
        char *notify_path;
        dev_t notify_dev;            /* the socket file we made (not a successor's) */
        ino_t notify_ino;
        char *notify_env;            /* "NOTIFY_SOCKET=..." */
        char *status_text;           /* last STATUS= */
        bool stopping_said;
        int notify_errno;
        unsigned long notify_dropped;
};

struct svc {
        struct sv *sv;
        struct svc_config *cfg;      /* owned */
        struct svc_config *next_cfg; /* reload: the definition to switch to once down (owned) */
        struct svc_machine m;
        tend_group *group;
        tend_timer *timer;           /* the machine's deadline (NULL while it has none) */
        uint64_t armed;              /* the deadline the timer is set to (0: none) */

        /* The main process. main is NULL for a forking service whose main process could not
         * be told apart (then the group stands for it). */
        tend_proc *main;
        tend_proc *start_proc;       /* forking: the start command */
        tend_proc *hook;             /* the hook running now */
        tend_proc *stop_proc;        /* the stop command */
        tend_proc **dead;            /* procs to free once exited (see svc_bury) */
        uint64_t last_exit_wall;     /* CLOCK_REALTIME usec */

        /* Readiness and sd_notify: NULL when the configuration needs none of it (ready = none,
         * type = simple, no watchdog — most services; svc_needs_ready()). */
        struct svc_readiness *rd;
        struct svc_logger *log;

        pid_t main_pid;
        int last_code, last_signo;   /* of the last main process (no rusage: status shows
                                        only these, and this is per service) */
        int hook_kind;               /* enum svc_hook */
        unsigned n_dead, cap_dead;
        /* Flags last, packed: a supervisor holds one struct per service. */
        bool remove;                 /* reload: removed; freed once down */
        bool freed;                  /* gone; waiting for the collector */
        bool main_exited;
        bool start_done;             /* forking: the start command has exited successfully */
        bool have_exit;
        bool last_exit_lost;
};

int svc_new(struct sv *sv, struct svc_config *cfg, struct svc **ret);
/* Does a service of this configuration need a struct svc_readiness? */
bool svc_needs_ready(const struct svc_config *cfg);
/* Release everything (the processes must be gone: the caller stopped the service). */
void svc_free(struct svc *s);
/* Feed an event to the machine and carry out what it asks, follow-ups included. */
void svc_post(struct svc *s, enum svc_event ev, const char *cause);
void svc_post_full(struct svc *s, const struct svc_input *in);
/* Keep p until it has exited, then free it (never from inside its own callbacks). */
void svc_bury(struct svc *s, tend_proc *p);
/* Free what svc_bury kept and has exited. */
void svc_collect(struct svc *s);
/* Spawn a helper command of the service (hook, probe, stop command) in its group with its
 * environment and output. Returns 0 or -errno with a message in cause. */
int svc_spawn_command(struct svc *s, const struct svc_command *cmd, tend_exit_cb cb,
                      tend_proc **ret, char *cause, size_t cause_size);
/* "exited with code 3", "killed by SIGSEGV (core dumped)". */
void svc_describe_exit(int err, const struct tend_exit *ex, char *buf, size_t size);
/* The main process ended (from its exit callback or the group). */
void svc_main_ended(struct svc *s, int err, const struct tend_exit *ex);
/* Follow pid as the main process, if it is a live process of the service's group (forking
 * start, pidfile, MAINPID=). The former main process is no longer followed. */
int svc_adopt_main(struct svc *s, pid_t pid);

/* ---- readiness (supervise_ready.c) ------------------------------------------------------- */

/* Socket for sd_notify, made once per service. */
int ready_notify_open(struct svc *s);
void ready_notify_close(struct svc *s);
/* Before the spawn of the main process: make what the child needs (fd:N pipe). Fills
 * *fd_map when the child gets an extra fd. */
int ready_before_spawn(struct svc *s, struct tend_fd_map *fd_map, bool *has_map);
/* After the spawn: start watching (probes, stop). Returns an event to post now (READY for
 * ready = none) or SVC_EV_COUNT for none; cause gets its text. */
enum svc_event ready_after_spawn(struct svc *s, char *cause, size_t size);
/* Forking: the start command exited successfully. Find the main process. */
enum svc_event ready_start_command_done(struct svc *s, char *cause, size_t size);
/* Stop every readiness watch of the current run. */
void ready_cancel(struct svc *s);
/* SIGCHLD: a main process waiting to stop itself may have done so. */
void ready_check_stopped(struct svc *s);


/* ---- logs (supervise_log.c) -------------------------------------------------------------- */

int logger_new(struct sv *sv, const struct svc_config *cfg, struct svc_logger **ret);
/* Reads what is still in the pipes, then frees. */
void logger_free(struct svc_logger *l);
/* The fd to hand to a child as its stdout (stream 1) or stderr (2): -1 means /dev/null. */
int logger_fd(const struct svc_logger *l, int stream);
void logger_describe(const struct svc_logger *l, json_t *o);
enum svc_log logger_kind(const struct svc_logger *l);
/* log = file: the file and how many rotated ones are kept (PATH.1 newest ... PATH.keep). */
const char *logger_path(const struct svc_logger *l);
unsigned logger_keep(const struct svc_logger *l);

/* ---- the supervisor (cmd_supervise.c) ------------------------------------------------------- */

struct sv {
        tend_loop *loop;
        struct svc **svcs;           /* sorted by name */
        size_t n_svcs;
        const char *config_path;
        char *runtime_dir;
        unsigned group_flags;
        struct outq out[3];          /* [1] our stdout, [2] our stderr, written without blocking */
        unsigned long out_dropped[3];
        uint64_t rng;
        bool shutting_down;
        bool exiting;
        bool settling;
        bool dirty;
        tend_timer *gc_timer;
        tend_timer *shutdown_timer;
        bool shutdown_killed;
        uint64_t shutdown_timeout;
        unsigned long orphans_reaped;
        size_t n_wait_stop;          /* services with ready = stop waiting for the stop */
        struct control *control;     /* the control socket (NULL: none) */
        uint64_t control_idle_usec;  /* a control connection's bound to send a request (0: none) */
};

/* "tend: <text>" on our stderr, through the non-blocking queue. */
void sv_say(struct sv *sv, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Output of a service for our stdout (1) or stderr (2): dropped (and counted) when the reader
 * is too far behind, never blocking. Returns false when dropped. */
bool sv_output(struct sv *sv, int stream, const char *data, size_t len);
struct svc *sv_find(struct sv *sv, const char *name);
uint32_t sv_random(struct sv *sv);
/* After events: let waiting services go on, apply reloads, collect, end the shutdown. */
void sv_settle(struct sv *sv);
/* Free buried procs and removed services at the next turn of the loop. */
void sv_schedule_gc(struct sv *sv);
/* Read the configuration again and apply the differences (SIGHUP). Returns 0, or -1 when it
 * has errors and nothing changed; msg gets the summary. */
int sv_reload(struct sv *sv, char *msg, size_t msg_size);
/* Stop every service in reverse dependency order, then exit (SIGTERM). */
void sv_shutdown(struct sv *sv, const char *why);

/* ---- status (supervise_status.c) ------------------------------------------------------------ */

json_t *svc_status_json(const struct svc *s);

/* ---- the control socket (control.c) ------------------------------------------------------- */

/* Where the socket is by default: $XDG_RUNTIME_DIR/tend-supervise.sock, /run/..., or
 * /tmp/tend-supervise.UID.sock. The server takes the first it may write in; a client
 * (for_server false) the first that exists. */
char *control_default_path(bool for_server);
/* Listen on path (mode 0600; 0660 and owned by group when given: its members may read
 * status). Sets sv->control. Returns 0 or -errno with a message in err. */
int control_open(struct sv *sv, const char *path, const char *group, char *err,
                 size_t err_size);
void control_free(struct sv *sv);
/* s changed state: answer the waits it ends. */
void control_on_transition(struct sv *sv, struct svc *s);
/* The service named name is gone (a reload removed it). */
void control_on_removed(struct sv *sv, const char *name);
/* A line of service name was written to its log file or passed to our stdout/stderr: pass
 * it to the followers (`tend ctl logs --follow`). head is its timestamp and stream. */
bool control_has_followers(const struct sv *sv);
void control_on_log_line(struct sv *sv, const char *name, const char *head, size_t head_len,
                         const char *data, size_t len);

#endif
