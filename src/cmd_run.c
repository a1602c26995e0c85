/* cmd_run.c — `tend run`: one command, to the end, with nothing lost and nothing left behind.
 *
 * The data path (DESIGN §2): argv -> tend_spawn() -> loop: pidfd readable -> status; pipes
 * readable -> sinks (our stdout/stderr, files, record); timer -> next ladder step; signalfd ->
 * forward to the child. Done when the status is known, the pipes are at EOF or drained to
 * their bound, and the group is empty, stopped, or left alone on request. */
#include "cmd.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include "account.h"
#include "help-run.h"
#include "outq.h"
#include "run_summary.h"

extern char **environ;

#define MAX_LEFTOVERS 4096
/* What a spliced pipe that the command keeps full grows to: fewer, larger splices and
 * wake-ups (benchmark 3, two streams: 256 KiB took another 6-10 % off tend's CPU per GiB
 * after splicing; 1 MiB did about as well and counts four times as much against the user's
 * pipe-user-pages-soft). */
#define RUN_PIPE_GROW (256u * 1024u)

/* Outside struct run, which lives on the stack and is zeroed: 16 KiB there were four more
 * page faults (~2-3 us each in this VM) at every `tend run`; in .bss, pages are only touched
 * when there are leftovers to list. */
static pid_t run_leftovers[MAX_LEFTOVERS];
/* --pty's input on its way to the terminal: here for the same reason (one more stack page
 * zeroed at every start, used only with --pty). */
static char run_in_buf[4096];

struct sink {
        struct run *run;
        int stream;
        bool pass;        /* pass through to our own stdout/stderr (not --quiet) */
        bool pass_error_reported;
        bool ends_line;   /* what was passed through so far ends with a newline (or is empty) */
        struct outq out;  /* our stdout/stderr, written without blocking the loop */
        int file_fd;      /* --stdout/--stderr FILE, or -1 */
        const char *file_name;
        bool file_failed;
};

struct run {
        tend_loop *loop;
        tend_group *group;
        tend_proc *proc;
        tend_capture *cap[3]; /* [1] stdout (or the pty), [2] stderr */
        struct sink sink[3];
        tend_record *record;
        const char *record_path;
        int record_error;
        tend_timer *timeout_timer;
        tend_watch *stdin_watch;
        int pty_write_fd;
        tend_watch *pty_in_watch; /* the terminal taking our input, watched while it is full */
        size_t in_len, in_off;    /* of run_in_buf */
        bool in_eof;
        bool in_pollable; /* stdin can be watched (not a regular file or /dev/null) */
        tend_signal *signals[16];
        size_t n_signals;
        struct tend_ladder ladder;
        uint64_t timeout_usec;
        bool keep_leftovers;
        bool use_pty;
        bool gave_foreground;

        /* What happened. */
        bool exited;
        bool status_lost;
        struct tend_exit exit;
        bool timed_out;
        bool timeout_ladder_done;
        int stop_step;        /* ladder step that ended the child, -1 if no ladder ran */
        bool leftovers_checked;
        bool leftovers_done;
        int leftover_step;
        pid_t *leftovers;     /* run_leftovers */
        size_t n_leftovers;
        size_t n_leftovers_total;
        uint64_t start_usec;
        const char *command;
};

static void maybe_finish(struct run *r);

/* ---- output ------------------------------------------------------------------------- */

static void sink_write(struct run *r, int stream, const char *data, size_t len) {
        struct sink *s = &r->sink[stream];
        if (s->pass && len > 0)
                s->ends_line = data[len - 1] == '\n';
        if (s->pass) {
                /* A slow reader pauses the capture: the child then waits on its full pipe,
                 * and nothing is lost. */
                if (outq_write(&s->out, data, len) && r->cap[stream])
                        tend_capture_pause(r->cap[stream], true);
                if (s->out.error && !s->pass_error_reported) {
                        /* The reader is gone (EPIPE is no news: see the end). */
                        s->pass_error_reported = true;
                        if (s->out.error != EPIPE)
                                msg_error("cannot write to %s: %s",
                                          stream == 1 ? "stdout" : "stderr",
                                          strerror(s->out.error));
                }
        }
        if (s->file_fd >= 0 && !s->file_failed) {
                int e = io_write_all(s->file_fd, data, len);
                if (e < 0) {
                        msg_error("cannot write to '%s': %s", s->file_name, strerror(-e));
                        s->file_failed = true;
                }
        }
        if (r->record && !r->record_error) {
                int e = tend_record_write(r->record, stream, data, len, tend_now_usec());
                if (e < 0) {
                        r->record_error = e;
                        msg_error("cannot write record '%s': %s", r->record_path,
                                  tend_strerror(e));
                }
        }
        /* Our reader left. With a file or the record still taking the stream, read on: they
         * get all of it (as `tee -p` does). With nothing else, close the command's pipe so
         * that it meets EPIPE (SIGPIPE) as it would have without us: reading on into nowhere,
         * `tend run --json - -- yes | head -1` would never end. Last: data is the capture's
         * buffer. */
        if (s->pass && s->out.error == EPIPE) {
                s->pass = false;
                if ((s->file_fd < 0 || s->file_failed) && (!r->record || r->record_error) &&
                    r->cap[stream])
                        tend_capture_close(r->cap[stream]);
        }
}

static void on_output_resume(void *userdata) {
        struct sink *s = userdata;
        if (s->run->cap[s->stream])
                tend_capture_pause(s->run->cap[s->stream], false);
}

static void on_output(tend_capture *c, const char *data, size_t len, bool eof, void *userdata) {
        struct run *r = userdata;
        int stream = c == r->cap[2] ? 2 : 1;
        if (!eof) {
                sink_write(r, stream, data, len);
                return;
        }
        maybe_finish(r);
}

/* A stream with one destination that takes its bytes as they are (no record, no second copy,
 * no look at them for the newline before --json -) is spliced there, pipe to file or pipe,
 * without a copy through user space (tend_capture_splice_to; the callback above stays ready
 * for when splice cannot go on). Only into file descriptions nobody else writes through:
 * splice(2) does not take the file position lock that write(2) takes on a shared description
 * (seen on 6.18: two processes splicing into one description lost bytes), so a regular file
 * given to us as stdout keeps write(2). Our own --stdout/--stderr files are ours alone (one
 * description for both when they name the same file, spliced into one call at a time), and
 * pipes have no position; our stdout pipe is spliced into through the outq's own
 * non-blocking reopen, so it never blocks the loop. */
static void sink_try_splice(struct run *r, int stream, bool wants_ends_line) {
        struct sink *s = &r->sink[stream];
        if (r->record || !r->cap[stream])
                return;
        int fd = -1;
        if (s->file_fd >= 0 && !s->pass)
                fd = s->file_fd;
        else if (s->pass && s->file_fd < 0 && s->out.own_fd && !wants_ends_line)
                fd = s->out.fd;
        struct stat st;
        if (fd < 0 || fstat(fd, &st) < 0)
                return;
        if (S_ISREG(st.st_mode) ? fd == s->file_fd : S_ISFIFO(st.st_mode))
                (void)tend_capture_splice_to(r->cap[stream], fd); /* a pty: not a pipe, no */
}

/* ---- stdin for --pty ------------------------------------------------------------------ */

/* Our input goes to the terminal without ever blocking the loop (output, signals and the
 * timeout go on while the terminal is full): one buffer at a time. While the terminal cannot
 * take it, stdin is not watched (not even for a hang-up, which epoll reports whatever events
 * were asked for) and the terminal is watched instead. */

static void on_stdin(tend_watch *w, int fd, uint32_t revents, void *userdata);

static void input_end(struct run *r) {
        r->stdin_watch = tend_watch_free(r->stdin_watch);
        r->pty_in_watch = tend_watch_free(r->pty_in_watch);
}

static void input_push(struct run *r) {
        while (r->in_off < r->in_len) {
                ssize_t n = write(r->pty_write_fd, run_in_buf + r->in_off, r->in_len - r->in_off);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0 && errno == EAGAIN) {
                        r->stdin_watch = tend_watch_free(r->stdin_watch);
                        (void)tend_watch_set_events(r->pty_in_watch, EPOLLOUT);
                        return;
                }
                if (n < 0) {
                        input_end(r); /* the terminal is gone */
                        return;
                }
                r->in_off += (size_t)n;
        }
        r->in_off = r->in_len = 0;
        if (r->in_eof) {
                input_end(r);
        } else if (r->in_pollable) {
                (void)tend_watch_set_events(r->pty_in_watch, 0);
                if (!r->stdin_watch && tend_watch_new(r->loop, STDIN_FILENO, EPOLLIN, on_stdin,
                                                      r, &r->stdin_watch) < 0)
                        input_end(r);
        } else {
                /* A regular file or /dev/null, which epoll cannot watch: always readable, it
                 * is read as fast as the terminal takes it. */
                (void)tend_watch_set_events(r->pty_in_watch, EPOLLOUT);
        }
}

static void input_read(struct run *r) {
        if (r->in_off < r->in_len)
                return; /* still on its way */
        ssize_t n = read(STDIN_FILENO, run_in_buf, sizeof run_in_buf);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
                return;
        if (n > 0) {
                r->in_len = (size_t)n;
        } else {
                /* End of our input: the terminal's end-of-file character tells a canonical-mode
                 * reader the same. */
                struct termios t;
                run_in_buf[0] = 4;
                if (tcgetattr(r->pty_write_fd, &t) == 0 && t.c_cc[VEOF])
                        run_in_buf[0] = (char)t.c_cc[VEOF];
                r->in_len = 1;
                r->in_eof = true;
        }
        r->in_off = 0;
        input_push(r);
}

static void on_stdin(tend_watch *w, int fd, uint32_t revents, void *userdata) {
        input_read(userdata);
}

static void on_pty_writable(tend_watch *w, int fd, uint32_t revents, void *userdata) {
        struct run *r = userdata;
        if (!(revents & EPOLLOUT) && (revents & (EPOLLHUP | EPOLLERR)))
                input_end(r);
        else if (r->in_off < r->in_len)
                input_push(r);
        else
                input_read(r);
}

/* ---- the end -------------------------------------------------------------------------- */

static void on_leftovers_stopped(tend_group *g, int step, void *userdata) {
        struct run *r = userdata;
        r->leftovers_done = true;
        r->leftover_step = step;
        maybe_finish(r);
}

static void check_leftovers(struct run *r) {
        if (r->leftovers_checked)
                return;
        r->leftovers_checked = true;
        /* The usual end: the cgroup is empty, and removing it now proves it in one call. */
        if (tend_group_remove_if_empty(r->group) > 0) {
                r->leftovers_done = true;
                return;
        }
        int n = tend_group_members(r->group, r->leftovers, MAX_LEFTOVERS);
        if (n <= 0) {
                r->leftovers_done = true;
                return;
        }
        r->n_leftovers_total = (size_t)n;
        r->n_leftovers = (size_t)n < MAX_LEFTOVERS ? (size_t)n : MAX_LEFTOVERS;
        char list[256] = "";
        size_t used = 0;
        for (size_t i = 0; i < r->n_leftovers && used < sizeof list - 16; i++)
                used += (size_t)snprintf(list + used, sizeof list - used, "%s%d", i ? " " : "",
                                         (int)r->leftovers[i]);
        if (r->keep_leftovers) {
                msg_error("%d process%s left behind by '%s', kept: %s%s", n, n == 1 ? "" : "es",
                          r->command, list, r->n_leftovers < (size_t)n ? " ..." : "");
                r->leftovers_done = true;
                return;
        }
        msg_error("%d process%s left behind by '%s', stopping: %s%s", n, n == 1 ? "" : "es",
                  r->command, list, r->n_leftovers < (size_t)n ? " ..." : "");
        int e = tend_group_stop(r->group, &r->ladder, on_leftovers_stopped, r);
        if (e < 0) {
                msg_error("cannot stop leftover processes: %s", tend_strerror(e));
                r->leftovers_done = true;
        }
}

static void maybe_finish(struct run *r) {
        if (!r->exited)
                return;
        for (int i = 1; i <= 2; i++)
                if (r->cap[i] && !tend_capture_done(r->cap[i]))
                        return;
        /* The timeout's ladder stops the whole group: what it is still killing was not left
         * behind by the command, so wait for it before looking for leftovers. */
        if (r->timed_out && !r->timeout_ladder_done)
                return;
        check_leftovers(r);
        if (!r->leftovers_done)
                return;
        tend_loop_stop(r->loop);
}

static void restore_foreground(struct run *r) {
        if (!r->gave_foreground)
                return;
        r->gave_foreground = false;
        prog_take_terminal_back();
}

static void on_exit_cb(tend_proc *p, int err, const struct tend_exit *ex, void *userdata) {
        struct run *r = userdata;
        r->exited = true;
        if (err < 0)
                r->status_lost = true;
        else
                r->exit = *ex;
        if (r->timeout_timer)
                tend_timer_stop(r->timeout_timer);
        /* The step that ended the command is the one in effect now. The ladder's own callback
         * (on_stopped) comes only once the whole group is empty too, which may be after the
         * leftovers were handled and the loop stopped. */
        if (r->timed_out && r->stop_step < 0)
                r->stop_step = tend_proc_stop_step(p);
        restore_foreground(r);
        input_end(r);
        /* The child is gone: what it wrote is in the pipes now. Read that much, not more —
         * a descendant holding a pipe must not keep us here (DESIGN §1.1). */
        for (int i = 1; i <= 2; i++)
                if (r->cap[i])
                        tend_capture_drain(r->cap[i]);
        maybe_finish(r);
}

static void on_stopped(tend_proc *p, int step, void *userdata) {
        struct run *r = userdata;
        /* The step that ended the command itself was taken at its exit; this one is the step
         * that emptied the group, which may be later. */
        if (r->stop_step < 0)
                r->stop_step = step;
        r->timeout_ladder_done = true;
        maybe_finish(r);
}

static void on_timeout(tend_timer *t, void *userdata) {
        struct run *r = userdata;
        if (r->exited)
                return;
        r->timed_out = true;
        int e = tend_proc_stop(r->proc, &r->ladder, r->group, on_stopped, r);
        if (e < 0)
                msg_error("cannot stop '%s': %s", r->command, tend_strerror(e));
}

static void on_signal(tend_signal *s, const struct signalfd_siginfo *si, void *userdata) {
        struct run *r = userdata;
        int signo = (int)si->ssi_signo;
        if (signo == SIGWINCH && r->use_pty) {
                struct winsize ws;
                if (ioctl(STDIN_FILENO, TIOCGWINSZ, &ws) == 0 ||
                    ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0)
                        (void)ioctl(r->pty_write_fd, TIOCSWINSZ, &ws);
                return; /* the kernel tells the pty's foreground group itself */
        }
        if (!r->exited)
                (void)tend_proc_signal(r->proc, signo);
}

/* ---- summary ---------------------------------------------------------------------------- */

static int write_json(struct run *r, const char *path, int exit_code) {
        struct run_summary sum = {
                .command = r->command,
                .exited = r->exited,
                .status_lost = r->status_lost,
                .exit = r->exit,
                .timed_out = r->timed_out,
                .stop_step = r->stop_step,
                .ladder = &r->ladder,
                .start_usec = r->start_usec,
                .stdout_bytes = r->cap[1] ? tend_capture_bytes(r->cap[1]) : 0,
                .stderr_bytes = r->cap[2] ? tend_capture_bytes(r->cap[2]) : 0,
                .leftovers = r->leftovers,
                .n_leftovers = r->n_leftovers,
                .n_leftovers_total = r->n_leftovers_total,
                .leftover_step = r->leftover_step,
                .keep_leftovers = r->keep_leftovers,
                .cgroup = tend_group_kind(r->group) == TEND_GROUP_CGROUP,
                .tend_exit_code = exit_code,
        };
        json_t *o = run_summary_json(&sum);
        if (!o)
                return -ENOMEM;
        char *text = json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII | JSON_REAL_PRECISION(9));
        json_decref(o);
        if (!text)
                return -ENOMEM;
        /* On stderr, on a line of its own, even after output that did not end its last line. */
        if (!strcmp(path, "-") && !r->sink[2].ends_line)
                (void)io_write_all(STDERR_FILENO, "\n", 1);
        int e = prog_write_line_to(path, text);
        free(text);
        return e;
}

/* ---- setup ---------------------------------------------------------------------------- */

static int exit_code_for_spawn_error(int err, enum tend_spawn_step step) {
        if (step != TEND_STEP_EXEC)
                return EXIT_TEND_FAILURE;
        if (err == -ENOENT || err == -ENOTDIR)
                return EXIT_TEND_NOTFOUND;
        return EXIT_TEND_NOEXEC;
}

static void report_spawn_error(const char *cmd, const struct tend_spawn_opts *o, int err,
                               enum tend_spawn_step step) {
        const char *why = tend_strerror(err);
        switch (step) {
        case TEND_STEP_EXEC:
                msg_error("cannot exec '%s': %s", cmd, why);
                break;
        case TEND_STEP_CWD:
                msg_error("cannot change directory to '%s': %s", o->cwd, why);
                break;
        case TEND_STEP_UID:
        case TEND_STEP_GID:
        case TEND_STEP_GROUPS:
                msg_error("cannot switch to the user (%s): %s", tend_spawn_step_name(step), why);
                break;
        default:
                msg_error("cannot start '%s' (%s): %s", cmd, tend_spawn_step_name(step), why);
        }
}

static char **build_env(char **overrides, size_t n_overrides) {
        size_t n = 0;
        while (environ[n])
                n++;
        char **env = calloc(n + n_overrides + 1, sizeof *env);
        if (!env)
                return NULL;
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
                size_t len = strcspn(environ[i], "=");
                bool replaced = false;
                for (size_t j = 0; j < n_overrides; j++)
                        if (!strncmp(overrides[j], environ[i], len) && overrides[j][len] == '=')
                                replaced = true;
                if (!replaced)
                        env[k++] = environ[i];
        }
        for (size_t j = 0; j < n_overrides; j++) {
                /* A later --env of the same name wins. */
                size_t len = strcspn(overrides[j], "=");
                bool later = false;
                for (size_t m = j + 1; m < n_overrides; m++)
                        if (!strncmp(overrides[m], overrides[j], len + 1))
                                later = true;
                if (!later)
                        env[k++] = overrides[j];
        }
        env[k] = NULL;
        return env;
}

enum {
        OPT_TIMEOUT = 1000, OPT_STOP, OPT_QUIET, OPT_STDOUT, OPT_STDERR, OPT_RECORD, OPT_JSON,
        OPT_KEEP, OPT_PTY, OPT_CWD, OPT_ENV, OPT_USER, OPT_NO_CGROUP, OPT_RESET_SIGNALS,
        OPT_HELP,
};

static const struct option options[] = {
        { "timeout", required_argument, NULL, OPT_TIMEOUT },
        { "stop", required_argument, NULL, OPT_STOP },
        { "quiet", no_argument, NULL, OPT_QUIET },
        { "stdout", required_argument, NULL, OPT_STDOUT },
        { "stderr", required_argument, NULL, OPT_STDERR },
        { "record", required_argument, NULL, OPT_RECORD },
        { "json", required_argument, NULL, OPT_JSON },
        { "keep-leftovers", no_argument, NULL, OPT_KEEP },
        { "pty", no_argument, NULL, OPT_PTY },
        { "cwd", required_argument, NULL, OPT_CWD },
        { "env", required_argument, NULL, OPT_ENV },
        { "user", required_argument, NULL, OPT_USER },
        { "no-cgroup", no_argument, NULL, OPT_NO_CGROUP },
        { "reset-signals", no_argument, NULL, OPT_RESET_SIGNALS },
        { "help", no_argument, NULL, OPT_HELP },
        { NULL, 0, NULL, 0 },
};

struct user_info {
        uid_t uid;
        gid_t gid;
        gid_t groups[NGROUPS_MAX];
        int n_groups;
        char home[PATH_MAX + 8], user[256 + 8], logname[256 + 16];
};

static int lookup_user(const char *name, struct user_info *u) {
        memset(u, 0, sizeof *u); /* no account, no HOME/USER/LOGNAME */
        struct account_user *pw = NULL;
        if (account_user_by_name(name, &pw) < 0) {
                char *end;
                unsigned long v = strtoul(name, &end, 10);
                if (!*name || *end || v >= (unsigned long)UINT32_MAX) {
                        msg_error("unknown user '%s'", name);
                        return -1;
                }
                /* A number is the account with that uid, if there is one (its groups and
                 * HOME, as for its name); a number that names no account is still a uid to
                 * run as. */
                if (account_user_by_uid((uid_t)v, &pw) < 0) {
                        u->uid = (uid_t)v;
                        u->gid = (gid_t)v;
                        u->n_groups = 0;
                        return 0;
                }
        }
        u->uid = pw->uid;
        u->gid = pw->gid;
        size_t n = NGROUPS_MAX;
        if (account_user_groups(pw->name, pw->gid, u->groups, &n) < 0) {
                u->groups[0] = pw->gid;
                n = 1;
        }
        u->n_groups = (int)n;
        snprintf(u->home, sizeof u->home, "HOME=%s", pw->home);
        snprintf(u->user, sizeof u->user, "USER=%s", pw->name);
        snprintf(u->logname, sizeof u->logname, "LOGNAME=%s", pw->name);
        account_user_free(pw);
        return 0;
}

static bool same_file(int a, int b) {
        struct stat sa, sb;
        return a >= 0 && b >= 0 && fstat(a, &sa) == 0 && fstat(b, &sb) == 0 &&
               S_ISREG(sa.st_mode) && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

static int open_output(const char *path) {
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOCTTY, 0666);
        if (fd < 0)
                msg_error("cannot open '%s': %s", path, strerror(errno));
        return fd;
}

int cmd_run(int argc, char **argv) {
        struct run run;
        struct run *r = &run;
        memset(r, 0, sizeof *r);
        r->stop_step = -1;
        r->leftover_step = -1;
        r->pty_write_fd = -1;
        r->leftovers = run_leftovers;
        for (int i = 0; i < 3; i++)
                r->sink[i] = (struct sink){ .run = r, .stream = i, .pass = true, .file_fd = -1,
                                            .ends_line = true };
        tend_ladder_default(&r->ladder);

        const char *stdout_path = NULL, *stderr_path = NULL, *json_path = NULL, *cwd = NULL;
        const char *user = NULL;
        bool quiet = false, no_cgroup = false, reset_signals = false;
        char **env_over = calloc((size_t)argc + 1, sizeof *env_over);
        size_t n_env = 0;
        if (!env_over) {
                msg_error("out of memory");
                return EXIT_TEND_FAILURE;
        }
        int code = EXIT_TEND_FAILURE;
        int opt;
        optind = 1;
        opterr = 0;
        while ((opt = getopt_long(argc, argv, "+h", options, NULL)) != -1) {
                int e;
                switch (opt) {
                case OPT_TIMEOUT:
                        e = tend_parse_duration(optarg, &r->timeout_usec);
                        if (e < 0 || r->timeout_usec == 0) {
                                msg_error("invalid duration '%s' for --timeout (try 500ms, 10s, 2m)",
                                          optarg);
                                goto out_free;
                        }
                        break;
                case OPT_STOP:
                        if (tend_ladder_parse(optarg, &r->ladder) < 0) {
                                msg_error("invalid ladder '%s' for --stop (try TERM/5s,QUIT/5s,KILL)",
                                          optarg);
                                goto out_free;
                        }
                        break;
                case OPT_QUIET: quiet = true; break;
                case OPT_STDOUT: stdout_path = optarg; break;
                case OPT_STDERR: stderr_path = optarg; break;
                case OPT_RECORD: r->record_path = optarg; break;
                case OPT_JSON: json_path = optarg; break;
                case OPT_KEEP: r->keep_leftovers = true; break;
                case OPT_PTY: r->use_pty = true; break;
                case OPT_CWD: cwd = optarg; break;
                case OPT_ENV:
                        if (!strchr(optarg, '=') || optarg[0] == '=') {
                                msg_error("invalid --env '%s' (want NAME=VALUE)", optarg);
                                goto out_free;
                        }
                        env_over[n_env++] = optarg;
                        break;
                case OPT_USER: user = optarg; break;
                case OPT_NO_CGROUP: no_cgroup = true; break;
                case OPT_RESET_SIGNALS: reset_signals = true; break;
                case 'h':
                case OPT_HELP:
                        fputs(help_run, stdout);
                        code = 0;
                        goto out_free;
                case '?':
                default:
                        if (optopt)
                                msg_error("unknown option '-%c' for run (try 'tend run --help')",
                                          optopt);
                        else
                                msg_error("unknown or incomplete option '%s' for run (try 'tend run --help')",
                                          argv[optind - 1]);
                        goto out_free;
                }
        }
        if (optind >= argc) {
                msg_error("no command given (usage: tend run [OPTIONS] [--] COMMAND [ARGS...])");
                goto out_free;
        }
        char **cmd = argv + optind;
        r->command = cmd[0];

        /* Static, not on the stack: it is 260 KiB (NGROUPS_MAX groups). On the stack, every
         * call below cmd_run ran on fresh pages a quarter of a megabyte down, each a page
         * fault (~2.5 us here), in every run with or without --user. */
        static struct user_info ui;
        if (user) {
                if (lookup_user(user, &ui) < 0)
                        goto out_free;
                /* A login-like environment for the new user, unless --env said otherwise. */
                if (ui.home[0]) {
                        char **more = realloc(env_over, ((size_t)argc + 4) * sizeof *more);
                        if (!more)
                                goto out_free;
                        env_over = more;
                        memmove(env_over + 3, env_over, n_env * sizeof *env_over);
                        env_over[0] = ui.home;
                        env_over[1] = ui.user;
                        env_over[2] = ui.logname;
                        n_env += 3;
                }
        }
        char **env = NULL;
        if (n_env) {
                env = build_env(env_over, n_env);
                if (!env) {
                        msg_error("out of memory");
                        goto out_free;
                }
        }

        if (stdout_path && (r->sink[1].file_fd = open_output(stdout_path)) < 0)
                goto out;
        r->sink[1].file_name = stdout_path;
        if (stderr_path && (r->sink[2].file_fd = open_output(stderr_path)) < 0)
                goto out;
        r->sink[2].file_name = stderr_path;
        if (same_file(r->sink[1].file_fd, r->sink[2].file_fd)) {
                /* --stdout F --stderr F: two opens would each keep an offset of their own and
                 * write over each other. One open file shared by both (as `>F 2>&1`) keeps
                 * every chunk, in the order the streams were read. */
                int fd = fcntl(r->sink[1].file_fd, F_DUPFD_CLOEXEC, 0);
                if (fd < 0) {
                        msg_error("cannot open '%s': %s", stderr_path, strerror(errno));
                        goto out;
                }
                io_close(r->sink[2].file_fd);
                r->sink[2].file_fd = fd;
        }
        if (quiet)
                r->sink[1].pass = r->sink[2].pass = false;

        int e = prog_owner_loop(&r->loop, NULL, NULL);
        if (e < 0)
                goto out;
        e = tend_group_new(r->loop, "run", no_cgroup ? TEND_GROUP_NO_CGROUP : 0, &r->group);
        if (e < 0) {
                msg_error("cannot create a process group: %s", tend_strerror(e));
                goto out;
        }
        static const int forwarded[] = { SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2,
                                         SIGWINCH, SIGCONT };
        e = tend_signals_new(r->loop, forwarded, ARRAY_SIZE(forwarded), on_signal, r, r->signals);
        if (e < 0) {
                msg_error("cannot watch the signals to forward: %s", tend_strerror(e));
                goto out;
        }
        r->n_signals = ARRAY_SIZE(forwarded);
        for (int i = 1; i <= 2; i++)
                outq_init(&r->sink[i].out, r->loop, r->sink[i].pass ? i : -1, on_output_resume,
                          &r->sink[i]);
        if (r->record_path) {
                e = tend_record_open(r->record_path, tend_now_usec(), &r->record);
                if (e < 0) {
                        msg_error("cannot open record '%s': %s", r->record_path, tend_strerror(e));
                        goto out;
                }
        }

        struct tend_spawn_opts so;
        memset(&so, 0, sizeof so);
        so.argv = (const char *const *)cmd;
        so.envp = (const char *const *)env;
        so.cwd = cwd;
        so.group = r->group;
        if (reset_signals)
                so.flags |= TEND_SPAWN_RESET_IGNORED;
        if (user) {
                so.flags |= TEND_SPAWN_SET_USER | TEND_SPAWN_SET_GROUP | TEND_SPAWN_SET_GROUPS;
                so.uid = ui.uid;
                so.gid = ui.gid;
                so.groups = ui.groups;
                so.n_groups = (size_t)ui.n_groups;
        }
        if (r->use_pty) {
                so.flags |= TEND_SPAWN_SETSID;
                for (int i = 0; i < 3; i++)
                        so.stdio[i].kind = TEND_STDIO_PTY;
                struct winsize ws;
                if (ioctl(STDIN_FILENO, TIOCGWINSZ, &ws) == 0 ||
                    ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0) {
                        so.pty.rows = ws.ws_row;
                        so.pty.cols = ws.ws_col;
                }
        } else {
                so.flags |= TEND_SPAWN_SETPGID;
                /* A stream that goes only to our own stdout/stderr (or, with --quiet, nowhere)
                 * and is neither counted (--json), recorded, nor needs cutting off from
                 * leftovers that are kept is not piped through us: the command writes to our
                 * fd itself, as under timeout(1) or tini. It sees the terminal, a reader that
                 * goes away ends it with SIGPIPE, and we have nothing to copy or drain. No
                 * leftover keeps the fd once we exit: they are stopped first. */
                for (int i = 1; i <= 2; i++) {
                        bool alone = !r->record_path && !json_path && !r->keep_leftovers &&
                                     r->sink[i].file_fd < 0;
                        so.stdio[i].kind = !alone             ? TEND_STDIO_PIPE
                                           : r->sink[i].pass ? TEND_STDIO_INHERIT
                                                              : TEND_STDIO_NULL;
                }
                /* On a terminal we own, the child takes the foreground so that it can read the
                 * terminal and the keyboard's signals reach it (and not us twice). */
                if (isatty(STDIN_FILENO) && tcgetpgrp(STDIN_FILENO) == getpgrp()) {
                        so.flags |= TEND_SPAWN_FOREGROUND;
                        r->gave_foreground = true;
                }
        }

        r->start_usec = tend_now_usec();
        enum tend_spawn_step step = TEND_STEP_NONE;
        e = tend_spawn(r->loop, &so, &r->proc, &step);
        if (e < 0) {
                r->gave_foreground = false;
                report_spawn_error(cmd[0], &so, e, step);
                code = exit_code_for_spawn_error(e, step);
                if (json_path) {
                        r->exited = false;
                        (void)write_json(r, json_path, code);
                }
                goto out;
        }
        tend_proc_on_exit(r->proc, on_exit_cb, r);

        if (r->use_pty) {
                int master = tend_proc_take_pty_fd(r->proc);
                r->pty_write_fd = fcntl(master, F_DUPFD_CLOEXEC, 3);
                e = tend_capture_new(r->loop, master, NULL, on_output, r, &r->cap[1]);
                if (e == 0 && r->pty_write_fd >= 0 &&
                    io_set_nonblock(r->pty_write_fd, true) == 0 &&
                    tend_watch_new(r->loop, r->pty_write_fd, 0, on_pty_writable, r,
                                   &r->pty_in_watch) == 0) {
                        int w = tend_watch_new(r->loop, STDIN_FILENO, EPOLLIN, on_stdin, r,
                                               &r->stdin_watch);
                        r->in_pollable = w == 0;
                        if (w == -EPERM) /* epoll refuses a regular file or /dev/null */
                                (void)tend_watch_set_events(r->pty_in_watch, EPOLLOUT);
                        else if (w < 0)
                                r->pty_in_watch = tend_watch_free(r->pty_in_watch);
                }
        } else {
                struct tend_capture_opts co = { .grow_pipe_to = RUN_PIPE_GROW };
                for (int i = 1; i <= 2 && e == 0; i++)
                        if (so.stdio[i].kind == TEND_STDIO_PIPE)
                                e = tend_capture_new(r->loop, tend_proc_take_stdio_fd(r->proc, i),
                                                     &co, on_output, r, &r->cap[i]);
        }
        if (e < 0) {
                /* Without capture we cannot keep the contract; stop what we started. */
                msg_error("cannot read the output of '%s': %s", cmd[0], tend_strerror(e));
                (void)tend_group_kill(r->group);
                (void)tend_proc_signal(r->proc, SIGKILL);
                struct tend_exit ex;
                (void)tend_proc_wait(r->proc, &ex);
                goto out;
        }
        for (int i = 1; i <= 2; i++)
                sink_try_splice(r, i, i == 2 && json_path && !strcmp(json_path, "-"));
        if (r->timeout_usec) {
                e = tend_timer_new(r->loop, on_timeout, r, &r->timeout_timer);
                if (e < 0) {
                        msg_error("cannot arm the timeout: %s", tend_strerror(e));
                        goto out;
                }
                tend_timer_start(r->timeout_timer, r->timeout_usec);
        }

        e = tend_loop_run(r->loop);
        if (e < 0)
                msg_error("event loop failed: %s", tend_strerror(e));

        if (!r->exited) {
                code = EXIT_TEND_FAILURE;
        } else if (r->status_lost) {
                msg_error("the exit status of '%s' was lost", cmd[0]);
                code = EXIT_TEND_FAILURE;
        } else if (r->timed_out) {
                code = EXIT_TEND_TIMEOUT;
        } else if (r->exit.signo) {
                code = 128 + r->exit.signo;
        } else {
                code = r->exit.code;
        }
        if (r->timed_out && r->stop_step >= 0)
                msg_error("'%s' timed out after %.3fs; ended by %s (step %d of the ladder)",
                          cmd[0], (double)r->timeout_usec / 1e6,
                          tend_signal_name(r->ladder.step[r->stop_step].signo), r->stop_step + 1);
        for (int i = 1; i <= 2; i++)
                outq_finish(&r->sink[i].out);
        if (r->record) {
                e = tend_record_close(r->record);
                r->record = NULL;
                if (e < 0 && !r->record_error)
                        msg_error("cannot write record '%s': %s", r->record_path, tend_strerror(e));
        }
        if (json_path) {
                e = write_json(r, json_path, code);
                if (e < 0)
                        msg_error("cannot write summary '%s': %s", json_path, tend_strerror(e));
        }
out:
        restore_foreground(r);
        if (r->record)
                (void)tend_record_close(r->record);
        for (int i = 1; i <= 2; i++) {
                outq_free(&r->sink[i].out);
                tend_capture_free(r->cap[i]);
                io_close(r->sink[i].file_fd);
        }
        input_end(r);
        io_close(r->pty_write_fd);
        tend_timer_free(r->timeout_timer);
        tend_proc_free(r->proc);
        tend_group_free(r->group);
        tend_signals_free(r->signals, r->n_signals);
        tend_loop_free(r->loop);
        free(env);
out_free:
        free(env_over);
        return code;
}
