/* launch_agent.c — `tend launch-agent`: the remote side of `tend launch` (doc/launch.md).
 *
 * Internal: started by `tend launch` through ssh (or any agent template). In order:
 *  1. the banner on stdout, first thing, so the launcher knows the agent runs;
 *  2. the job line on stdin (JSON, at most 1 MiB), then stdin stays open: the lifeline;
 *  3. at once and side by side: the precheck (/bin/sh -c, own group, output kept up to a
 *     bound) and the callback (non-blocking connects to every address, the first wins);
 *  4. the handshake (the launcher proves it holds our token, then we prove it), then START
 *     or REFUSED when the precheck is done — all within the start deadline;
 *  5. on GO: the guard, then the command in its own group; STARTED, OUT frames as it writes
 *     (paused while the connection's queue is above its high mark), the run deadline with
 *     the ladder, SIGNAL frames forwarded; at the end the leftovers are stopped and EXIT
 *     goes up, then DONE;
 *  6. losing the lifeline (the connection closes or errs, stdin EOF, 3 missed heartbeats, or
 *     a HUP/INT/TERM to us) stops the command's whole group with the ladder, then we exit.
 * Our own messages go to our stderr, which the launcher keeps as the host's diagnostic;
 * never into OUT frames. */
#include "launch.h"
#include "launch_node.h"
#include "run_summary.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define JOB_WAIT_USEC (60u * 1000000u) /* bound for the job line before its deadline is known */
#define ATTEMPTS_MAX (LAUNCH_CALLBACKS_MAX + 1)
#define MAX_LEFTOVERS 256

/* Agent exit codes (the launcher reports them in the diagnostic). */
enum { AGENT_OK = 0, AGENT_LOST = 1, AGENT_BAD_JOB = 2, AGENT_NO_CALLBACK = 3 };

struct attempt {
        int fd;
        tend_watch *watch;
        char addr[80];
};

enum conn_state { CS_NONE, CS_CONNECTING, CS_HELLO, CS_AUTH, CS_GONE };

struct agent {
        tend_loop *loop;
        char self_exe[4096];
        uint64_t banner_usec;
        int code;
        bool finishing;

        /* the job */
        json_t *job;
        const char *host;
        uint32_t index;
        uint8_t token[LP_KEY];
        const char *callbacks[LAUNCH_CALLBACKS_MAX];
        size_t n_callbacks;
        char **command;
        const char *precheck;
        uint64_t start_timeout, run_timeout, heartbeat;
        struct tend_ladder ladder;

        /* stdin: the job line, then the lifeline */
        tend_watch *stdin_watch;
        char *line;
        size_t line_len;
        bool have_job;
        tend_timer *start_timer;

        /* the callback */
        struct attempt att[ATTEMPTS_MAX];
        size_t n_att;
        char last_connect_error[160];
        enum conn_state cs;
        struct lp_conn *conn;
        uint8_t nonce_a[LP_KEY];
        bool start_sent, go;

        /* the precheck */
        tend_group *pre_group;
        tend_proc *pre_proc;
        tend_capture *pre_cap;
        char *pre_out;
        size_t pre_len;
        bool pre_truncated, pre_exited, pre_status_lost, pre_done;
        struct tend_exit pre_exit;

        /* the command */
        tend_group *group;
        tend_proc *proc;
        tend_capture *cap[3];
        int guard_fd;
        tend_proc *guard;
        tend_timer *run_timer;
        uint64_t start_usec;
        bool exited, status_lost, timed_out, stopping, ladder_done, leftovers_checked,
                leftovers_done, exit_sent;
        struct tend_exit exit;
        int stop_step, leftover_step;
        pid_t leftovers[MAX_LEFTOVERS];
        size_t n_leftovers, n_leftovers_total;

        tend_signal *signals[3];

        /* tree mode: the children this agent starts and relays for */
        struct node *node;
        struct node_child *children;
        size_t n_children;
        json_t *tree_cfg;
        bool node_idle, done_sent;
};

static void agent_finish(struct agent *a, int code);
static void lifeline_lost(struct agent *a, const char *why);
static void maybe_send_start(struct agent *a);
static void command_maybe_done(struct agent *a);
static void own_final(struct agent *a);

static void amsg(struct agent *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void amsg(struct agent *a, const char *fmt, ...) {
        char text[1024];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(text, sizeof text, fmt, ap);
        va_end(ap);
        if (a->host)
                msg_error("launch-agent: host '%s': %s", a->host, text);
        else
                msg_error("launch-agent: %s", text);
}

/* ---- shared helpers ---------------------------------------------------------------- */

char *launch_utf8_clean(const char *data, size_t len) {
        /* At worst every byte becomes the 3 bytes of U+FFFD. */
        char *out = malloc(len * 3 + 1);
        if (!out)
                return NULL;
        size_t o = 0;
        const unsigned char *s = (const unsigned char *)data;
        for (size_t i = 0; i < len;) {
                unsigned char c = s[i];
                size_t n = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3
                                         : (c & 0xf8) == 0xf0 ? 4 : 0;
                bool ok = n > 0 && i + n <= len && c != 0;
                for (size_t k = 1; ok && k < n; k++)
                        ok = (s[i + k] & 0xc0) == 0x80;
                if (ok && n == 2)
                        ok = c >= 0xc2;
                if (ok && n == 3) {
                        unsigned cp = (c & 0x0fu) << 12 | (s[i + 1] & 0x3fu) << 6 | (s[i + 2] & 0x3fu);
                        ok = cp >= 0x800 && (cp < 0xd800 || cp > 0xdfff);
                }
                if (ok && n == 4) {
                        unsigned cp = (c & 0x07u) << 18 | (s[i + 1] & 0x3fu) << 12 |
                                      (s[i + 2] & 0x3fu) << 6 | (s[i + 3] & 0x3fu);
                        ok = cp >= 0x10000 && cp <= 0x10ffff;
                }
                if (ok) {
                        memcpy(out + o, s + i, n);
                        o += n;
                        i += n;
                } else {
                        memcpy(out + o, "\xef\xbf\xbd", 3);
                        o += 3;
                        i++;
                }
        }
        out[o] = '\0';
        return out;
}

char *launch_json_text(json_t *o) {
        if (!o)
                return NULL;
        char *t = json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII | JSON_REAL_PRECISION(9));
        json_decref(o);
        return t;
}

/* Send a JSON frame about our own host. */
static int send_json(struct agent *a, int type, json_t *o) {
        char *t = launch_json_text(o);
        if (!t)
                return -ENOMEM;
        int e = a->conn ? lp_conn_send(a->conn, type, 0, a->index, t, strlen(t)) : -EPIPE;
        free(t);
        return e;
}

/* ---- the end ------------------------------------------------------------------------ */

static void agent_finish(struct agent *a, int code) {
        if (a->finishing)
                return;
        a->finishing = true;
        a->code = code;
        tend_loop_stop(a->loop);
}

/* Everything of ours has ended: tell the guard, then go. */
static void guard_release(struct agent *a) {
        if (a->guard_fd >= 0) {
                (void)io_write_all(a->guard_fd, "D", 1);
                a->guard_fd = io_close(a->guard_fd);
        }
}

static void lost_maybe_finish(struct agent *a) {
        if (a->node && !a->node_idle)
                return; /* the children's agents end soon: the node stops them */
        if (a->proc && !(a->exited && tend_group_empty(a->group)) && !a->ladder_done)
                return;
        guard_release(a);
        agent_finish(a, a->exit_sent && a->done_sent ? AGENT_OK : AGENT_LOST);
}

static void on_lost_stopped(tend_group *g, int step, void *userdata) {
        struct agent *a = userdata;
        a->ladder_done = true;
        lost_maybe_finish(a);
}

static void on_lost_proc_stopped(tend_proc *p, int step, void *userdata) {
        on_lost_stopped(NULL, step, userdata);
}

static void lifeline_lost(struct agent *a, const char *why) {
        if (a->stopping || a->finishing)
                return;
        a->stopping = true;
        a->cs = CS_GONE;
        a->conn = lp_conn_free(a->conn);
        a->stdin_watch = tend_watch_free(a->stdin_watch);
        tend_timer_stop(a->start_timer);
        if (a->run_timer)
                tend_timer_stop(a->run_timer);
        if (a->pre_group)
                (void)tend_group_kill(a->pre_group);
        /* Our children lose their lifeline with us: their subtrees stop on their own. */
        if (a->node && !a->node_idle)
                node_abandon(a->node);
        if (a->proc && !(a->exited && tend_group_empty(a->group))) {
                amsg(a, "lifeline lost (%s): stopping the command", why);
                int e = a->exited ? tend_group_stop(a->group, &a->ladder, on_lost_stopped, a)
                                  : tend_proc_stop(a->proc, &a->ladder, a->group,
                                                   on_lost_proc_stopped, a);
                if (e < 0) {
                        amsg(a, "cannot stop the command: %s; killing it", tend_strerror(e));
                        (void)tend_group_kill(a->group);
                        (void)tend_proc_signal(a->proc, SIGKILL);
                        a->ladder_done = true;
                        lost_maybe_finish(a);
                }
                return;
        }
        /* After DONE, the launcher closing is the normal end. */
        if (!a->done_sent)
                amsg(a, "lifeline lost (%s)", why);
        a->ladder_done = true;
        lost_maybe_finish(a);
}

/* ---- the command -------------------------------------------------------------------- */

static void on_out_resume(struct agent *a) {
        for (int i = 1; i <= 2; i++)
                if (a->cap[i] && !tend_capture_done(a->cap[i]))
                        tend_capture_pause(a->cap[i], false);
}

static void on_output(tend_capture *c, const char *data, size_t len, bool eof, void *userdata) {
        struct agent *a = userdata;
        int stream = c == a->cap[2] ? 2 : 1;
        if (eof) {
                command_maybe_done(a);
                return;
        }
        if (!a->conn)
                return; /* stopping: the output has nowhere to go */
        int e = lp_conn_send(a->conn, LP_OUT, stream, a->index, data, len);
        if (e < 0) {
                lifeline_lost(a, "cannot queue output");
                return;
        }
        if (lp_conn_congested(a->conn))
                for (int i = 1; i <= 2; i++)
                        if (a->cap[i] && !tend_capture_done(a->cap[i]))
                                tend_capture_pause(a->cap[i], true);
}

static void send_exit(struct agent *a) {
        if (a->exit_sent)
                return;
        a->exit_sent = true;
        int code;
        if (a->status_lost)
                code = EXIT_TEND_FAILURE;
        else if (a->timed_out)
                code = EXIT_TEND_TIMEOUT;
        else if (a->exit.signo)
                code = 128 + a->exit.signo;
        else
                code = a->exit.code;
        struct run_summary s = {
                .command = a->command[0],
                .exited = true,
                .status_lost = a->status_lost,
                .exit = a->exit,
                .timed_out = a->timed_out,
                .stop_step = a->stop_step,
                .ladder = &a->ladder,
                .start_usec = a->start_usec,
                .stdout_bytes = a->cap[1] ? tend_capture_bytes(a->cap[1]) : 0,
                .stderr_bytes = a->cap[2] ? tend_capture_bytes(a->cap[2]) : 0,
                .leftovers = a->leftovers,
                .n_leftovers = a->n_leftovers,
                .n_leftovers_total = a->n_leftovers_total,
                .leftover_step = a->leftover_step,
                .cgroup = tend_group_kind(a->group) == TEND_GROUP_CGROUP,
                .tend_exit_code = code,
        };
        int e = send_json(a, LP_EXIT, run_summary_json(&s));
        if (e < 0) {
                lifeline_lost(a, "cannot send the exit status");
                return;
        }
        guard_release(a);
        own_final(a);
}

/* Our own host has its result; DONE goes up once the subtree (tree mode) is final too, and
 * we leave once the launcher has it all. */
static void own_final(struct agent *a) {
        a->exit_sent = true;
        if (a->done_sent || a->stopping || (a->node && !a->node_idle) || !a->conn)
                return;
        a->done_sent = true;
        if (lp_conn_send(a->conn, LP_DONE, 0, a->index, NULL, 0) < 0) {
                lifeline_lost(a, "cannot send DONE");
                return;
        }
        lp_conn_want_empty(a->conn);
}

static void on_leftovers_stopped(tend_group *g, int step, void *userdata) {
        struct agent *a = userdata;
        a->leftovers_done = true;
        a->leftover_step = step;
        command_maybe_done(a);
}

static void command_maybe_done(struct agent *a) {
        if (!a->exited || a->stopping)
                return;
        for (int i = 1; i <= 2; i++)
                if (a->cap[i] && !tend_capture_done(a->cap[i]))
                        return;
        if (a->timed_out && !a->ladder_done)
                return;
        if (!a->leftovers_checked) {
                a->leftovers_checked = true;
                int n = tend_group_members(a->group, a->leftovers, MAX_LEFTOVERS);
                if (n > 0) {
                        a->n_leftovers_total = (size_t)n;
                        a->n_leftovers = (size_t)n < MAX_LEFTOVERS ? (size_t)n : MAX_LEFTOVERS;
                        amsg(a, "%d process%s left behind by '%s', stopping", n,
                             n == 1 ? "" : "es", a->command[0]);
                        if (tend_group_stop(a->group, &a->ladder, on_leftovers_stopped, a) < 0) {
                                (void)tend_group_kill(a->group);
                                a->leftovers_done = true;
                        }
                        /* tend_group_stop may have called back already. */
                        if (a->exit_sent || !a->leftovers_done)
                                return;
                } else {
                        a->leftovers_done = true;
                }
        }
        if (!a->leftovers_done)
                return;
        send_exit(a);
}

static void on_command_exit(tend_proc *p, int err, const struct tend_exit *ex, void *userdata) {
        struct agent *a = userdata;
        a->exited = true;
        if (err < 0)
                a->status_lost = true;
        else
                a->exit = *ex;
        if (a->run_timer)
                tend_timer_stop(a->run_timer);
        if (a->timed_out && a->stop_step < 0)
                a->stop_step = tend_proc_stop_step(p);
        for (int i = 1; i <= 2; i++)
                if (a->cap[i])
                        tend_capture_drain(a->cap[i]);
        command_maybe_done(a);
}

static void on_timeout_stopped(tend_proc *p, int step, void *userdata) {
        struct agent *a = userdata;
        if (a->stop_step < 0)
                a->stop_step = step;
        a->ladder_done = true;
        command_maybe_done(a);
}

static void on_run_timeout(tend_timer *t, void *userdata) {
        struct agent *a = userdata;
        if (a->exited || a->stopping)
                return;
        a->timed_out = true;
        amsg(a, "'%s' timed out after %.3gs: stopping it", a->command[0],
             (double)a->run_timeout / 1e6);
        int e = tend_proc_stop(a->proc, &a->ladder, a->group, on_timeout_stopped, a);
        if (e < 0) {
                (void)tend_group_kill(a->group);
                a->ladder_done = true;
        }
}

static void send_spawn_failed(struct agent *a, const char *message) {
        json_t *o = json_pack("{s:s,s:s,s:s}", "reason", "spawn-failed", "message", message,
                              "diagnostic", "");
        int e = send_json(a, LP_FAILED, o);
        if (e < 0) {
                lifeline_lost(a, "cannot send the failure");
                return;
        }
        own_final(a);
}

static int start_guard(struct agent *a) {
        int p[2];
        if (pipe2(p, O_CLOEXEC) < 0)
                return -errno;
        const char *path = tend_group_path(a->group);
        const char *argv[] = { a->self_exe, "launch-agent", "--guard", path ? "cgroup" : "pgroup",
                               path, NULL };
        struct tend_spawn_opts so;
        memset(&so, 0, sizeof so);
        so.argv = argv;
        so.file = a->self_exe;
        so.flags = TEND_SPAWN_SETSID;
        so.stdio[0].kind = TEND_STDIO_FD;
        so.stdio[0].fd = p[0];
        so.stdio[1].kind = TEND_STDIO_NULL;
        int e = tend_spawn(a->loop, &so, &a->guard, NULL);
        io_close(p[0]);
        if (e < 0) {
                io_close(p[1]);
                return e;
        }
        a->guard_fd = p[1];
        return 0;
}

static void on_guard_exit(tend_proc *p, int err, const struct tend_exit *ex, void *userdata) {
        struct agent *a = userdata;
        /* The guard ends when we say done; before that it means someone killed it. */
        if (a->guard_fd >= 0 && !a->finishing)
                amsg(a, "the guard ended early; the command is no longer guarded against our death");
        a->guard_fd = io_close(a->guard_fd);
}

static void command_start(struct agent *a) {
        if (a->go)
                return;
        a->go = true;
        /* The precheck is over (START needs it done, its group was emptied then). Its group
         * goes now: a second process-group group would keep the command's from claiming
         * orphaned descendants, and a populated one costs a walk of /proc at every SIGCHLD. */
        a->pre_cap = tend_capture_free(a->pre_cap);
        a->pre_proc = tend_proc_free(a->pre_proc);
        if (a->pre_group && !tend_group_empty(a->pre_group))
                (void)tend_group_kill(a->pre_group);
        a->pre_group = tend_group_free(a->pre_group);
        char message[4700];
        int e = tend_group_new(a->loop, "launch", 0, &a->group);
        if (e < 0) {
                snprintf(message, sizeof message, "cannot create a group for '%s': %s",
                         a->command[0], tend_strerror(e));
                amsg(a, "%s", message);
                send_spawn_failed(a, message);
                return;
        }
        e = start_guard(a);
        if (e < 0) {
                snprintf(message, sizeof message, "cannot start the guard '%s': %s",
                         a->self_exe, tend_strerror(e));
                amsg(a, "%s", message);
                send_spawn_failed(a, message);
                return;
        }
        tend_proc_on_exit(a->guard, on_guard_exit, a);

        struct tend_spawn_opts so;
        memset(&so, 0, sizeof so);
        so.argv = (const char *const *)a->command;
        so.group = a->group;
        /* Ignored signals are reset: the command must get the SIGNAL frames forwarded to it
         * (a launcher started in the background with INT ignored would otherwise hand that
         * on through a local agent template; over ssh, sshd resets them anyway). */
        so.flags = TEND_SPAWN_SETPGID | TEND_SPAWN_RESET_IGNORED;
        so.stdio[0].kind = TEND_STDIO_NULL;
        so.stdio[1].kind = TEND_STDIO_PIPE;
        so.stdio[2].kind = TEND_STDIO_PIPE;
        /* Between the spawn and the guard learning the process group, only this covers
         * our death (a process group's guard needs the leader's pid). */
        so.pdeathsig = tend_group_kind(a->group) == TEND_GROUP_PGROUP ? SIGKILL : 0;
        enum tend_spawn_step step = TEND_STEP_NONE;
        a->start_usec = tend_now_usec();
        e = tend_spawn(a->loop, &so, &a->proc, &step);
        if (e < 0) {
                if (step == TEND_STEP_EXEC)
                        snprintf(message, sizeof message, "cannot exec '%s': %s", a->command[0],
                                 tend_strerror(e));
                else
                        snprintf(message, sizeof message, "cannot start '%s' (%s): %s",
                                 a->command[0], tend_spawn_step_name(step), tend_strerror(e));
                amsg(a, "%s", message);
                send_spawn_failed(a, message);
                return;
        }
        tend_proc_on_exit(a->proc, on_command_exit, a);
        if (tend_group_kind(a->group) == TEND_GROUP_PGROUP) {
                char text[32];
                int n = snprintf(text, sizeof text, "P%d\n", (int)tend_proc_pid(a->proc));
                (void)io_write_all(a->guard_fd, text, (size_t)n);
        }
        e = tend_capture_new(a->loop, tend_proc_take_stdio_fd(a->proc, 1), NULL, on_output, a,
                             &a->cap[1]);
        if (e == 0)
                e = tend_capture_new(a->loop, tend_proc_take_stdio_fd(a->proc, 2), NULL,
                                     on_output, a, &a->cap[2]);
        if (e < 0) {
                amsg(a, "cannot read the output of '%s': %s", a->command[0], tend_strerror(e));
                lifeline_lost(a, "no output capture");
                return;
        }
        e = send_json(a, LP_STARTED, json_pack("{s:i}", "pid", (int)tend_proc_pid(a->proc)));
        if (e < 0) {
                lifeline_lost(a, "cannot send STARTED");
                return;
        }
        if (a->run_timeout) {
                if (tend_timer_new(a->loop, on_run_timeout, a, &a->run_timer) < 0) {
                        lifeline_lost(a, "cannot arm the timeout");
                        return;
                }
                tend_timer_start(a->run_timer, a->run_timeout);
        }
}

/* ---- tree mode: the children below us ------------------------------------------------- */

static void on_node_frame(struct node *n, const struct lp_frame *f, void *userdata) {
        struct agent *a = userdata;
        /* Frames from below go up unchanged; the host index says whom they are about. */
        if (!a->conn || a->stopping)
                return;
        if (lp_conn_send(a->conn, f->type, f->stream, f->host, f->payload, f->len) < 0) {
                lifeline_lost(a, "cannot relay a frame up");
                return;
        }
        if (lp_conn_congested(a->conn)) {
                node_pause_read(a->node, true);
                for (int i = 1; i <= 2; i++)
                        if (a->cap[i] && !tend_capture_done(a->cap[i]))
                                tend_capture_pause(a->cap[i], true);
        }
}

static void on_node_idle(struct node *n, void *userdata) {
        struct agent *a = userdata;
        a->node_idle = true;
        if (a->stopping)
                lost_maybe_finish(a);
        else if (a->exit_sent)
                own_final(a);
}

static const struct node_ops agent_node_ops = { .frame = on_node_frame, .idle = on_node_idle };

static int tree_parse(struct agent *a, json_t *tree, const char **ret_why) {
        json_t *children = json_object_get(tree, "children");
        json_t *agent = json_object_get(tree, "agent");
        json_t *rt = json_object_get(tree, "remote_tend");
        json_t *fanout = json_object_get(tree, "fanout");
        json_t *ct = json_object_get(tree, "connect_timeout_ms");
        json_t *user = json_object_get(tree, "user");
        if (!json_is_array(children) || !json_is_array(agent) || !json_array_size(agent) ||
            !json_is_string(rt) || !json_is_integer(fanout) || json_integer_value(fanout) < 1 ||
            json_integer_value(fanout) > 65536 || !json_is_integer(ct) ||
            json_integer_value(ct) <= 0 || json_integer_value(ct) > 86400000LL * 365 ||
            (user && !json_is_null(user) && !json_is_string(user))) {
                *ret_why = "bad \"tree\"";
                return -EINVAL;
        }
        for (size_t i = 0; i < json_array_size(agent); i++)
                if (!json_is_string(json_array_get(agent, i))) {
                        *ret_why = "bad \"tree\" agent word";
                        return -EINVAL;
                }
        a->n_children = json_array_size(children);
        a->children = calloc(a->n_children ? a->n_children : 1, sizeof *a->children);
        if (!a->children) {
                *ret_why = "out of memory";
                return -ENOMEM;
        }
        for (size_t i = 0; i < a->n_children; i++) {
                json_t *c = json_array_get(children, i);
                json_t *h = json_object_get(c, "host"), *idx = json_object_get(c, "index"),
                       *tok = json_object_get(c, "token");
                if (!json_is_string(h) || !json_is_integer(idx) || json_integer_value(idx) < 0 ||
                    json_integer_value(idx) > 65535 || !json_is_string(tok) ||
                    lp_key_from_base64(json_string_value(tok), a->children[i].token) < 0) {
                        *ret_why = "bad \"tree\" child";
                        return -EINVAL;
                }
                a->children[i].name = json_string_value(h);
                a->children[i].index = (uint32_t)json_integer_value(idx);
                a->children[i].subtree = json_object_get(c, "children");
        }
        a->tree_cfg = json_deep_copy(tree);
        if (!a->tree_cfg) {
                *ret_why = "out of memory";
                return -ENOMEM;
        }
        json_object_del(a->tree_cfg, "children");
        return 0;
}

/* Start our children once we are authenticated: their frames have a way up then. */
static void tree_start(struct agent *a) {
        if (!a->children || a->node)
                return;
        json_t *agent = json_object_get(a->tree_cfg, "agent");
        size_t nw = json_array_size(agent);
        char **words = calloc(nw + 1, sizeof *words);
        if (!words) {
                lifeline_lost(a, "out of memory");
                return;
        }
        for (size_t i = 0; i < nw; i++)
                words[i] = (char *)json_string_value(json_array_get(agent, i));
        json_t *user = json_object_get(a->tree_cfg, "user");
        char who[400];
        snprintf(who, sizeof who, "launch-agent: host '%s'", a->host);
        struct node_config cfg = {
                .agent = words,
                .remote_tend = json_string_value(json_object_get(a->tree_cfg, "remote_tend")),
                .user = json_is_string(user) ? json_string_value(user) : NULL,
                .fanout = (unsigned)json_integer_value(json_object_get(a->tree_cfg, "fanout")),
                .connect_timeout = (uint64_t)json_integer_value(
                                           json_object_get(a->tree_cfg, "connect_timeout_ms")) * 1000,
                .start_timeout = a->start_timeout,
                .heartbeat = a->heartbeat,
                .job = a->job,
                .tree = a->tree_cfg,
                .who = who,
        };
        int e = node_new(a->loop, &cfg, a->children, a->n_children, &agent_node_ops, a, &a->node);
        if (e == 0)
                e = node_start(a->node);
        free(words); /* node_new keeps copies */
        if (e < 0) {
                amsg(a, "cannot start the hosts below: %s", tend_strerror(e));
                /* Each of them is reported by the node as failed where it can; without a
                 * node, by us. */
                if (!a->node) {
                        for (size_t i = 0; i < a->n_children; i++) {
                                json_t *o = json_pack("{s:s,s:s}", "reason", "parent-failed",
                                                      "message", "its parent could not start it");
                                char *t = launch_json_text(o);
                                if (t)
                                        (void)lp_conn_send(a->conn, LP_FAILED, 0,
                                                           a->children[i].index, t, strlen(t));
                                free(t);
                        }
                        a->node_idle = true;
                }
        }
}

/* ---- the connection ------------------------------------------------------------------ */

static void on_frame(struct lp_conn *c, const struct lp_frame *f, void *userdata) {
        struct agent *a = userdata;
        char why[160];
        if (a->cs == CS_HELLO) {
                if (f->type != LP_CHALLENGE || f->host != a->index) {
                        snprintf(why, sizeof why, "expected CHALLENGE, got %s",
                                 lp_type_name(f->type));
                        goto bad;
                }
                uint8_t proof[LP_KEY];
                int e = lp_challenge_answer(a->token, a->index, a->nonce_a, f->payload, f->len,
                                            proof);
                if (e < 0) {
                        snprintf(why, sizeof why, "the launcher at %s %s", lp_conn_peer(c),
                                 e == -EACCES ? "does not hold our token" : "sent a bad challenge");
                        goto bad;
                }
                if (lp_conn_send(c, LP_PROOF, 0, a->index, proof, sizeof proof) < 0) {
                        snprintf(why, sizeof why, "cannot send PROOF");
                        goto bad;
                }
                a->cs = CS_AUTH;
                lp_conn_set_max_payload(c, LP_MAX_PAYLOAD);
                (void)lp_conn_heartbeat(c, a->heartbeat);
                maybe_send_start(a);
                tree_start(a);
                return;
        }
        if (f->host != a->index && (f->type == LP_GO || f->type == LP_ABORT)) {
                /* For a host below us: pass it down. A host already final has no way down
                 * any more; that is no error. */
                if (a->node)
                        (void)node_send(a->node, f->host, f->type, f->payload, f->len);
                return;
        }
        switch (f->type) {
        case LP_HEARTBEAT:
                return;
        case LP_GO:
                if (!a->start_sent || f->host != a->index)
                        break;
                command_start(a);
                return;
        case LP_ABORT:
                if (f->host != a->index)
                        break;
                if (a->proc) {
                        lifeline_lost(a, "ABORT after GO");
                        return;
                }
                if (a->pre_group)
                        (void)tend_group_kill(a->pre_group);
                tend_timer_stop(a->start_timer);
                /* Our host is final (cancelled); in tree mode the subtree goes on. */
                if (!a->exit_sent)
                        own_final(a);
                return;
        case LP_SIGNAL: {
                if (f->len != 4)
                        break;
                int signo = (int)((uint32_t)f->payload[0] << 24 | (uint32_t)f->payload[1] << 16 |
                                  (uint32_t)f->payload[2] << 8 | f->payload[3]);
                if (signo <= 0 || signo >= NSIG)
                        break;
                if (a->group && !a->exited)
                        (void)tend_group_signal(a->group, signo);
                if (a->node)
                        node_signal_all(a->node, signo);
                return;
        }
        default:
                break;
        }
        snprintf(why, sizeof why, "unexpected %s frame from the launcher", lp_type_name(f->type));
bad:
        amsg(a, "%s", why);
        lifeline_lost(a, why);
}

static void on_closed(struct lp_conn *c, int err, const char *why, void *userdata) {
        struct agent *a = userdata;
        lifeline_lost(a, why);
}

static void on_drained(struct lp_conn *c, void *userdata) {
        struct agent *a = userdata;
        on_out_resume(a);
        if (a->node)
                node_pause_read(a->node, false);
}

static void on_empty(struct lp_conn *c, void *userdata) {
        struct agent *a = userdata;
        /* All said: half-close, and leave when the launcher closes (it does on DONE), or
         * when its heartbeats stop. Closing now, with its heartbeats unread, would reset
         * the connection, and a reset can lose our last frames on the launcher's side. */
        if (a->done_sent)
                lp_conn_shutdown(c);
}

static const struct lp_conn_ops conn_ops = {
        .frame = on_frame, .closed = on_closed, .drained = on_drained, .empty = on_empty,
};

static void attempts_close(struct agent *a) {
        for (size_t i = 0; i < a->n_att; i++) {
                a->att[i].watch = tend_watch_free(a->att[i].watch);
                a->att[i].fd = io_close(a->att[i].fd);
        }
}

static void on_connect(tend_watch *w, int fd, uint32_t revents, void *userdata);

static void attempt_failed(struct agent *a, struct attempt *t, int err) {
        snprintf(a->last_connect_error, sizeof a->last_connect_error, "%s: %s", t->addr,
                 strerror(err));
        t->watch = tend_watch_free(t->watch);
        t->fd = io_close(t->fd);
        for (size_t i = 0; i < a->n_att; i++)
                if (a->att[i].fd >= 0)
                        return;
        amsg(a, "cannot call back the launcher (last: %s)", a->last_connect_error);
        if (a->pre_group)
                (void)tend_group_kill(a->pre_group);
        agent_finish(a, AGENT_NO_CALLBACK);
}

static void on_connect(tend_watch *w, int fd, uint32_t revents, void *userdata) {
        struct agent *a = userdata;
        struct attempt *t = NULL;
        for (size_t i = 0; i < a->n_att; i++)
                if (a->att[i].watch == w)
                        t = &a->att[i];
        if (!t)
                return;
        int err = 0;
        socklen_t sl = sizeof err;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &sl) < 0)
                err = errno;
        if (err) {
                attempt_failed(a, t, err);
                return;
        }
        /* The first to connect wins. */
        t->watch = tend_watch_free(t->watch);
        int cfd = t->fd;
        t->fd = -1;
        attempts_close(a);
        int e = lp_conn_new(a->loop, cfd, &conn_ops, a, &a->conn);
        if (e < 0) {
                amsg(a, "cannot set up the callback connection: %s", tend_strerror(e));
                agent_finish(a, AGENT_NO_CALLBACK);
                return;
        }
        lp_conn_set_max_payload(a->conn, LP_PREAUTH_MAX_PAYLOAD);
        uint8_t hello[LP_HELLO_LEN];
        lp_hello_make(a->nonce_a, hello);
        a->cs = CS_HELLO;
        (void)lp_conn_send(a->conn, LP_HELLO, 0, a->index, hello, sizeof hello);
}

static void attempt_add(struct agent *a, const char *text, int default_port) {
        if (a->n_att >= ATTEMPTS_MAX)
                return;
        struct sockaddr_storage ss;
        unsigned len;
        if (lp_addr_parse(text, default_port, &ss, &len) < 0) {
                amsg(a, "ignoring bad callback address '%s'", text);
                return;
        }
        struct attempt *t = &a->att[a->n_att];
        lp_addr_format(&ss, t->addr, sizeof t->addr);
        for (size_t i = 0; i < a->n_att; i++)
                if (!strcmp(a->att[i].addr, t->addr))
                        return; /* SSH_CONNECTION's address is often in the list too */
        t->fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (t->fd < 0) {
                snprintf(a->last_connect_error, sizeof a->last_connect_error, "%s: %s",
                         t->addr, strerror(errno));
                return;
        }
        t->watch = NULL;
        a->n_att++;
        if (connect(t->fd, (struct sockaddr *)&ss, len) < 0 && errno != EINPROGRESS) {
                snprintf(a->last_connect_error, sizeof a->last_connect_error, "%s: %s",
                         t->addr, strerror(errno));
                t->fd = io_close(t->fd);
                return;
        }
        /* Connected at once or not: writable says which (SO_ERROR). */
        if (tend_watch_new(a->loop, t->fd, EPOLLOUT, on_connect, a, &t->watch) < 0)
                t->fd = io_close(t->fd);
}

static void callback_start(struct agent *a) {
        a->cs = CS_CONNECTING;
        struct sockaddr_storage first;
        unsigned len;
        int port = -1;
        if (a->n_callbacks && lp_addr_parse(a->callbacks[0], -1, &first, &len) == 0)
                port = ntohs(first.ss_family == AF_INET
                                     ? ((struct sockaddr_in *)&first)->sin_port
                                     : ((struct sockaddr_in6 *)&first)->sin6_port);
        /* The launcher's address as ssh saw it comes first: it is the one most likely to
         * route back. */
        const char *sc = getenv("SSH_CONNECTION");
        if (sc && port >= 0) {
                char addr[128];
                size_t n = strcspn(sc, " ");
                if (n > 0 && n < sizeof addr - 1) {
                        memcpy(addr, sc, n);
                        addr[n] = '\0';
                        char bracketed[140];
                        snprintf(bracketed, sizeof bracketed, strchr(addr, ':') ? "[%s]" : "%s",
                                 addr);
                        attempt_add(a, bracketed, port);
                }
        }
        for (size_t i = 0; i < a->n_callbacks; i++)
                attempt_add(a, a->callbacks[i], -1);
        bool any = false;
        for (size_t i = 0; i < a->n_att; i++)
                any |= a->att[i].fd >= 0;
        if (!any) {
                amsg(a, "cannot call back the launcher (%s)",
                     a->last_connect_error[0] ? a->last_connect_error : "no address");
                agent_finish(a, AGENT_NO_CALLBACK);
        }
}

/* ---- the precheck -------------------------------------------------------------------- */

static void maybe_send_start(struct agent *a) {
        if (a->cs != CS_AUTH || a->start_sent || !a->pre_done)
                return;
        a->start_sent = true;
        tend_timer_stop(a->start_timer);
        bool passed = !a->precheck ||
                      (!a->pre_status_lost && !a->pre_exit.signo && a->pre_exit.code == 0);
        if (passed) {
                if (lp_conn_send(a->conn, LP_START, 0, a->index, NULL, 0) < 0)
                        lifeline_lost(a, "cannot send START");
                return;
        }
        /* Refused: the output goes up (bounded), then we leave. */
        size_t keep = a->pre_len;
        for (;;) {
                char *text = launch_utf8_clean(a->pre_out ? a->pre_out : "", keep);
                json_t *o = json_object();
                if (!text || !o) {
                        free(text);
                        json_decref(o);
                        lifeline_lost(a, "out of memory");
                        return;
                }
                json_object_set_new(o, "exit_code", a->pre_status_lost || a->pre_exit.signo
                                                            ? json_null()
                                                            : json_integer(a->pre_exit.code));
                json_object_set_new(o, "signal", a->pre_exit.signo
                                                         ? json_string(tend_signal_name(a->pre_exit.signo))
                                                         : json_null());
                json_object_set_new(o, "output", json_string(text));
                json_object_set_new(o, "truncated", json_boolean(a->pre_truncated ||
                                                                 keep < a->pre_len));
                free(text);
                char *t = launch_json_text(o);
                if (!t) {
                        lifeline_lost(a, "out of memory");
                        return;
                }
                size_t tl = strlen(t);
                if (tl > LP_MAX_PAYLOAD && keep > 0) {
                        /* Escaping made it too long for one frame: keep less. */
                        free(t);
                        keep /= 2;
                        continue;
                }
                int e = lp_conn_send(a->conn, LP_REFUSED, 0, a->index, t, tl);
                free(t);
                if (e < 0) {
                        lifeline_lost(a, "cannot send REFUSED");
                        return;
                }
                own_final(a);
                return;
        }
}

static void precheck_maybe_done(struct agent *a) {
        if (!a->pre_exited || (a->pre_cap && !tend_capture_done(a->pre_cap)) || a->pre_done)
                return;
        a->pre_done = true;
        /* Whatever the precheck left running is not wanted. */
        if (!tend_group_empty(a->pre_group))
                (void)tend_group_kill(a->pre_group);
        maybe_send_start(a);
}

static void on_pre_output(tend_capture *c, const char *data, size_t len, bool eof,
                          void *userdata) {
        struct agent *a = userdata;
        if (eof) {
                precheck_maybe_done(a);
                return;
        }
        size_t room = LAUNCH_REFUSED_OUTPUT_MAX - a->pre_len;
        if (len > room) {
                a->pre_truncated = true;
                len = room;
        }
        if (len) {
                memcpy(a->pre_out + a->pre_len, data, len);
                a->pre_len += len;
        }
}

static void on_pre_exit(tend_proc *p, int err, const struct tend_exit *ex, void *userdata) {
        struct agent *a = userdata;
        a->pre_exited = true;
        if (err < 0)
                a->pre_status_lost = true;
        else
                a->pre_exit = *ex;
        if (a->pre_cap)
                tend_capture_drain(a->pre_cap);
        precheck_maybe_done(a);
}

static int precheck_start(struct agent *a) {
        if (!a->precheck) {
                a->pre_done = true;
                return 0;
        }
        a->pre_out = malloc(LAUNCH_REFUSED_OUTPUT_MAX);
        if (!a->pre_out)
                return -ENOMEM;
        int e = tend_group_new(a->loop, "launch-precheck", 0, &a->pre_group);
        if (e < 0)
                return e;
        int p[2];
        if (pipe2(p, O_CLOEXEC) < 0)
                return -errno;
        const char *argv[] = { "/bin/sh", "-c", a->precheck, NULL };
        struct tend_spawn_opts so;
        memset(&so, 0, sizeof so);
        so.argv = argv;
        so.group = a->pre_group;
        so.flags = TEND_SPAWN_SETPGID;
        so.stdio[0].kind = TEND_STDIO_NULL;
        /* stdout and stderr on one pipe: the refusal shows them as the host printed them. */
        so.stdio[1].kind = TEND_STDIO_FD;
        so.stdio[1].fd = p[1];
        so.stdio[2].kind = TEND_STDIO_FD;
        so.stdio[2].fd = p[1];
        /* The guard starts with the command; before that, our death takes the precheck's
         * shell along (its children are killed with its group by every normal end). */
        so.pdeathsig = SIGKILL;
        e = tend_spawn(a->loop, &so, &a->pre_proc, NULL);
        io_close(p[1]);
        if (e < 0) {
                io_close(p[0]);
                return e;
        }
        tend_proc_on_exit(a->pre_proc, on_pre_exit, a);
        return tend_capture_new(a->loop, p[0], NULL, on_pre_output, a, &a->pre_cap);
}

/* ---- the job line and the lifeline on stdin ------------------------------------------ */

static int job_parse(struct agent *a, const char **ret_why) {
        json_error_t jerr;
        a->job = json_loadb(a->line, a->line_len, JSON_REJECT_DUPLICATES, &jerr);
        if (!a->job || !json_is_object(a->job)) {
                *ret_why = "not a JSON object";
                return -EINVAL;
        }
        json_t *j = a->job;
        json_t *v = json_object_get(j, "v");
        if (!json_is_integer(v) || json_integer_value(v) != 1) {
                *ret_why = "unknown version (want \"v\":1)";
                return -EINVAL;
        }
        json_t *host = json_object_get(j, "host"), *index = json_object_get(j, "index"),
               *token = json_object_get(j, "token"), *cb = json_object_get(j, "callback"),
               *cmd = json_object_get(j, "command"), *pre = json_object_get(j, "precheck"),
               *st = json_object_get(j, "start_timeout_ms"),
               *to = json_object_get(j, "timeout_ms"), *stop = json_object_get(j, "stop"),
               *hb = json_object_get(j, "heartbeat_ms");
        if (!json_is_string(host) || !json_string_length(host)) {
                *ret_why = "no \"host\"";
                return -EINVAL;
        }
        a->host = json_string_value(host);
        if (!json_is_integer(index) || json_integer_value(index) < 0 ||
            json_integer_value(index) > 65535) {
                *ret_why = "bad \"index\"";
                return -EINVAL;
        }
        a->index = (uint32_t)json_integer_value(index);
        if (!json_is_string(token) || lp_key_from_base64(json_string_value(token), a->token) < 0) {
                *ret_why = "bad \"token\"";
                return -EINVAL;
        }
        if (!json_is_array(cb) || json_array_size(cb) == 0 ||
            json_array_size(cb) > LAUNCH_CALLBACKS_MAX) {
                *ret_why = "bad \"callback\" list";
                return -EINVAL;
        }
        for (size_t i = 0; i < json_array_size(cb); i++) {
                json_t *s = json_array_get(cb, i);
                if (!json_is_string(s)) {
                        *ret_why = "bad \"callback\" entry";
                        return -EINVAL;
                }
                a->callbacks[a->n_callbacks++] = json_string_value(s);
        }
        if (!json_is_array(cmd) || json_array_size(cmd) == 0) {
                *ret_why = "bad \"command\"";
                return -EINVAL;
        }
        a->command = calloc(json_array_size(cmd) + 1, sizeof *a->command);
        if (!a->command) {
                *ret_why = "out of memory";
                return -ENOMEM;
        }
        for (size_t i = 0; i < json_array_size(cmd); i++) {
                json_t *s = json_array_get(cmd, i);
                if (!json_is_string(s) || strlen(json_string_value(s)) != json_string_length(s)) {
                        *ret_why = "bad \"command\" word";
                        return -EINVAL;
                }
                a->command[i] = (char *)json_string_value(s);
        }
        if (json_is_string(pre))
                a->precheck = json_string_value(pre);
        else if (pre && !json_is_null(pre)) {
                *ret_why = "bad \"precheck\"";
                return -EINVAL;
        }
        if (!json_is_integer(st) || json_integer_value(st) <= 0 || !json_is_integer(to) ||
            json_integer_value(to) < 0 || !json_is_integer(hb) || json_integer_value(hb) <= 0 ||
            json_integer_value(st) > 86400000LL * 365 || json_integer_value(to) > 86400000LL * 365 ||
            json_integer_value(hb) > 86400000LL) {
                *ret_why = "bad deadline or heartbeat";
                return -EINVAL;
        }
        a->start_timeout = (uint64_t)json_integer_value(st) * 1000;
        a->run_timeout = (uint64_t)json_integer_value(to) * 1000;
        a->heartbeat = (uint64_t)json_integer_value(hb) * 1000;
        if (!json_is_string(stop) || tend_ladder_parse(json_string_value(stop), &a->ladder) < 0) {
                *ret_why = "bad \"stop\" ladder";
                return -EINVAL;
        }
        json_t *tree = json_object_get(j, "tree");
        if (tree && !json_is_null(tree)) {
                if (!json_is_object(tree)) {
                        *ret_why = "bad \"tree\"";
                        return -EINVAL;
                }
                return tree_parse(a, tree, ret_why);
        }
        return 0;
}

static void on_start_timeout(tend_timer *t, void *userdata) {
        struct agent *a = userdata;
        if (!a->have_job) {
                amsg(a, "no job line on stdin after %.3gs", (double)JOB_WAIT_USEC / 1e6);
                agent_finish(a, AGENT_BAD_JOB);
                return;
        }
        amsg(a, "start deadline (%.3gs, and a margin) passed before the launcher answered%s",
             (double)a->start_timeout / 1e6, a->pre_done ? "" : " (precheck still running)");
        if (a->pre_group)
                (void)tend_group_kill(a->pre_group);
        agent_finish(a, AGENT_LOST);
}

static void job_received(struct agent *a) {
        const char *why = "?";
        if (job_parse(a, &why) < 0) {
                amsg(a, "bad job line: %s", why);
                agent_finish(a, AGENT_BAD_JOB);
                return;
        }
        a->have_job = true;
        free(a->line);
        a->line = NULL;
        /* The start deadline counts from the banner, as on the launcher's side. The launcher's
         * clock decides (it reports start-timeout and kills the agent, whose stdin then ends);
         * ours is only the backstop for a launcher that cannot tell us, so it runs a margin
         * longer — at the same instant the agent won the race about one time in five, and the
         * host was reported as agent-exited instead of start-timeout. */
        uint64_t limit = a->start_timeout + a->start_timeout / 4 + 1000000;
        uint64_t spent = tend_now_usec() - a->banner_usec;
        tend_timer_start(a->start_timer, spent < limit ? limit - spent : 0);
        int e = precheck_start(a);
        if (e < 0) {
                amsg(a, "cannot run the precheck: %s", tend_strerror(e));
                /* Reported as a refusal: the host cannot do what was asked of it. */
                a->pre_exited = a->pre_done = true;
                a->pre_status_lost = true;
        }
        callback_start(a);
}

static void on_stdin(tend_watch *w, int fd, uint32_t revents, void *userdata) {
        struct agent *a = userdata;
        if (a->have_job) {
                /* The launcher writes nothing after the job line: anything is read and
                 * dropped; EOF or an error is the end of the lifeline. */
                char scratch[4096];
                ssize_t n = io_read(fd, scratch, sizeof scratch);
                if (n == 0 || (n < 0 && n != -EAGAIN))
                        lifeline_lost(a, "stdin closed");
                return;
        }
        size_t room = LAUNCH_JOB_LINE_MAX + 1 - a->line_len;
        ssize_t n = io_read(fd, a->line + a->line_len, room);
        if (n == -EAGAIN)
                return;
        if (n <= 0) {
                amsg(a, "stdin %s before the job line", n == 0 ? "closed" : "failed");
                agent_finish(a, AGENT_BAD_JOB);
                return;
        }
        char *nl = memchr(a->line + a->line_len, '\n', (size_t)n);
        a->line_len += (size_t)n;
        if (!nl) {
                if (a->line_len > LAUNCH_JOB_LINE_MAX) {
                        amsg(a, "job line longer than %u bytes", LAUNCH_JOB_LINE_MAX);
                        agent_finish(a, AGENT_BAD_JOB);
                }
                return;
        }
        /* Bytes after the newline are not part of the protocol; they are dropped. */
        a->line_len = (size_t)(nl - a->line);
        job_received(a);
}

static void on_signal(tend_signal *s, const struct signalfd_siginfo *si, void *userdata) {
        struct agent *a = userdata;
        char why[64];
        snprintf(why, sizeof why, "got SIG%s", tend_signal_name((int)si->ssi_signo));
        lifeline_lost(a, why);
}

int cmd_launch_agent(int argc, char **argv) {
        if (argc >= 2 && !strcmp(argv[1], "--guard"))
                return launch_guard_main(argc, argv);
        if (argc >= 2) {
                msg_error("launch-agent: internal command of 'tend launch', takes no arguments");
                return AGENT_BAD_JOB;
        }
        /* First thing: the banner, so the launcher's connect deadline ends here. */
        static const char banner[] = LP_BANNER;
        if (io_write_all(STDOUT_FILENO, banner, sizeof banner - 1) < 0) {
                msg_error("launch-agent: cannot write the banner: %s", strerror(errno));
                return AGENT_LOST;
        }
        struct agent agent;
        struct agent *a = &agent;
        memset(a, 0, sizeof *a);
        a->banner_usec = tend_now_usec();
        a->guard_fd = -1;
        a->stop_step = a->leftover_step = -1;
        a->code = AGENT_LOST;
        for (size_t i = 0; i < ATTEMPTS_MAX; i++)
                a->att[i].fd = -1;
        ssize_t sl = readlink("/proc/self/exe", a->self_exe, sizeof a->self_exe - 1);
        if (sl <= 0) {
                msg_error("launch-agent: cannot find our own program: %s", strerror(errno));
                return AGENT_LOST;
        }
        a->self_exe[sl] = '\0';
        if (sodium_init() < 0) {
                msg_error("launch-agent: cannot initialise libsodium");
                return AGENT_LOST;
        }
        a->line = malloc(LAUNCH_JOB_LINE_MAX + 1);
        if (!a->line || prog_owner_loop(&a->loop, NULL, NULL) < 0)
                return AGENT_LOST;
        static const int sigs[] = { SIGHUP, SIGINT, SIGTERM };
        int e = 0;
        for (size_t i = 0; i < 3 && e == 0; i++)
                e = tend_signal_new(a->loop, sigs[i], on_signal, a, &a->signals[i]);
        if (e == 0)
                e = tend_timer_new(a->loop, on_start_timeout, a, &a->start_timer);
        if (e == 0) {
                e = tend_watch_new(a->loop, STDIN_FILENO, EPOLLIN, on_stdin, a, &a->stdin_watch);
                if (e < 0)
                        msg_error("launch-agent: cannot watch stdin (want a pipe or socket): %s",
                                  tend_strerror(e));
        }
        if (e == 0) {
                tend_timer_start(a->start_timer, JOB_WAIT_USEC);
                e = tend_loop_run(a->loop);
                if (e < 0)
                        msg_error("launch-agent: event loop failed: %s", tend_strerror(e));
        }

        /* Nothing of ours may be left running. The normal ends have stopped everything; an
         * abnormal one (no memory, a loop failure) kills what is left. */
        if (a->proc && !tend_proc_exited(a->proc)) {
                (void)tend_group_kill(a->group);
                (void)tend_proc_signal(a->proc, SIGKILL);
                struct tend_exit ex;
                (void)tend_proc_wait(a->proc, &ex);
        }
        if (a->pre_proc && !tend_proc_exited(a->pre_proc)) {
                (void)tend_group_kill(a->pre_group);
                (void)tend_proc_signal(a->pre_proc, SIGKILL);
                struct tend_exit ex;
                (void)tend_proc_wait(a->pre_proc, &ex);
        }
        if (a->group && !tend_group_empty(a->group))
                (void)tend_group_kill(a->group);
        if (a->pre_group && !tend_group_empty(a->pre_group))
                (void)tend_group_kill(a->pre_group);
        guard_release(a);
        a->node = node_free(a->node);
        if (a->guard) {
                /* It exits on the done byte; wait so it is not left a zombie for the sshd. */
                struct tend_exit ex;
                (void)tend_proc_wait(a->guard, &ex);
        }
        attempts_close(a);
        lp_conn_free(a->conn);
        for (int i = 1; i <= 2; i++)
                tend_capture_free(a->cap[i]);
        tend_capture_free(a->pre_cap);
        tend_timer_free(a->run_timer);
        tend_timer_free(a->start_timer);
        tend_watch_free(a->stdin_watch);
        tend_proc_free(a->proc);
        tend_proc_free(a->pre_proc);
        tend_proc_free(a->guard);
        tend_group_free(a->group);
        tend_group_free(a->pre_group);
        for (size_t i = 0; i < 3; i++)
                tend_signal_free(a->signals[i]);
        node_free(a->node);
        tend_loop_free(a->loop);
        free(a->children);
        json_decref(a->tree_cfg);
        free(a->command);
        free(a->pre_out);
        free(a->line);
        json_decref(a->job);
        return a->code;
}
