/* launch_node.c — see launch_node.h. */
#include "launch_node.h"
#include "config.h"
#include "account.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define PENDING_MAX 64                         /* unauthenticated connections at a time */
#define HANDSHAKE_USEC (10u * 1000000u)        /* bound for a handshake */
#define DIAG_MAX 4096                          /* last bytes of an agent's stderr kept */
#define BANNER_LINE_MAX 256                    /* a line of the agent's stdout before the banner */
#define BANNER_NOISE_MAX (64u * 1024u)         /* bytes of other lines allowed before it */
#define AGENT_KILL_USEC (5u * 1000000u)        /* from TERM to KILL for an agent we stop */

enum phase { PH_WAITING, PH_SPAWNED, PH_BANNER, PH_CALLED, PH_RUNNING, PH_FINISHED };

struct child {
        struct node *node;
        size_t slot_index;
        const char *name;
        uint32_t index;
        uint8_t token[LP_KEY];
        json_t *subtree;
        uint32_t *sub;      /* sub[0] = index, then every host below, in order */
        uint8_t *sub_state; /* per sub[i]: bit 1 started, 2 final, 4 done */
        size_t n_sub;

        enum phase phase;
        bool slot;          /* counts against the fanout */
        tend_proc *agent;
        bool agent_exited, agent_reaped_reported;
        struct tend_exit agent_exit;
        bool agent_status_lost;
        int stdin_fd;
        tend_watch *stdin_watch;
        char *job;
        size_t job_len, job_off;
        tend_capture *out_cap, *err_cap;
        char bline[BANNER_LINE_MAX];
        size_t bline_len, noise;
        char diag[DIAG_MAX];
        size_t diag_len;
        bool diag_cut;
        tend_timer *timer;      /* connect, then start deadline */
        tend_timer *kill_timer; /* TERM -> KILL of a stopped agent */
        struct lp_conn *conn;
        char failure[256];
};

struct pending {
        struct node *node;
        bool heard; /* a frame came: its end is then a refusal, not a lost race */
        struct lp_conn *conn;
        tend_timer *timer;
        int state; /* 0: want HELLO, 1: want PROOF */
        struct child *child;
        uint8_t nonce_a[LP_KEY], nonce_l[LP_KEY];
        bool aborting; /* authenticated for a final host: ABORT sent, closing */
};

struct route {
        uint32_t child; /* slot + 1; 0 = not ours */
        uint32_t pos;
};

struct node {
        tend_loop *loop;
        struct node_config cfg;
        const struct node_ops *ops;
        void *userdata;
        struct child *children;
        size_t n_children;
        struct route *routes;
        size_t n_routes;
        size_t next_spawn;
        unsigned active;       /* children holding a fanout slot */
        int listen_fd;
        tend_watch *listen_watch;
        bool listen_paused;
        char listen_addr[80];
        char **callbacks;
        size_t n_callbacks;
        struct pending *pending[PENDING_MAX];
        unsigned refused;
        bool cancelled, paused, idle_reported, freeing, abandoned;
        char local_user[256];
};

static void child_fail(struct child *c, const char *reason, const char *message);
static void node_check_idle(struct node *n);
static void spawn_more(struct node *n);

static void nmsg(struct node *n, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void nmsg(struct node *n, const char *fmt, ...) {
        char text[1024];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(text, sizeof text, fmt, ap);
        va_end(ap);
        msg_error("%s: %s", n->cfg.who, text);
}

static double secs(uint64_t usec) {
        return (double)usec / 1e6;
}

/* ---- frames to the owner ------------------------------------------------------------- */

static void emit(struct node *n, int type, int stream, uint32_t host, const void *payload,
                 size_t len) {
        if (n->abandoned)
                return;
        struct lp_frame f = { .type = (uint8_t)type, .stream = (uint8_t)stream, .host = host,
                              .len = (uint32_t)len, .payload = payload };
        n->ops->frame(n, &f, n->userdata);
}

static void emit_json(struct node *n, int type, uint32_t host, json_t *o) {
        char *t = launch_json_text(o);
        if (!t) {
                /* No memory for the details: the frame still goes up, bare. */
                emit(n, type, 0, host, "{}", 2);
                return;
        }
        emit(n, type, 0, host, t, strlen(t));
        free(t);
}

/* The diagnostic as valid UTF-8 text. */
static json_t *diag_json(struct child *c) {
        char *t = launch_utf8_clean(c->diag, c->diag_len);
        json_t *s = json_string(t ? t : "");
        free(t);
        return s;
}

/* ---- the agent process --------------------------------------------------------------- */

static void diag_add(struct child *c, const char *data, size_t len) {
        if (len >= DIAG_MAX) {
                memcpy(c->diag, data + len - DIAG_MAX, DIAG_MAX);
                c->diag_len = DIAG_MAX;
                c->diag_cut = true;
                return;
        }
        if (c->diag_len + len > DIAG_MAX) {
                size_t drop = c->diag_len + len - DIAG_MAX;
                memmove(c->diag, c->diag + drop, c->diag_len - drop);
                c->diag_len -= drop;
                c->diag_cut = true;
        }
        memcpy(c->diag + c->diag_len, data, len);
        c->diag_len += len;
}

static void agent_stop(struct child *c) {
        c->stdin_watch = tend_watch_free(c->stdin_watch);
        c->stdin_fd = io_close(c->stdin_fd);
        if (c->agent && !c->agent_exited) {
                /* TERM first: an agent running here (a local template) stops its precheck
                 * and command on it; KILL later for ssh that does not go. The agent is our
                 * unreaped child and the leader of its session, so the group id is its. */
                (void)kill(-tend_proc_pid(c->agent), SIGTERM);
                (void)tend_proc_signal(c->agent, SIGTERM);
                tend_timer_start(c->kill_timer, AGENT_KILL_USEC);
        }
}

static void on_kill_timer(tend_timer *t, void *userdata) {
        struct child *c = userdata;
        if (c->agent && !c->agent_exited) {
                (void)kill(-tend_proc_pid(c->agent), SIGKILL);
                (void)tend_proc_signal(c->agent, SIGKILL);
        }
}

static void slot_release(struct child *c) {
        if (!c->slot)
                return;
        c->slot = false;
        c->node->active--;
        spawn_more(c->node);
}

static void on_agent_stdout(tend_capture *cap, const char *data, size_t len, bool eof,
                            void *userdata) {
        struct child *c = userdata;
        if (eof || c->phase != PH_SPAWNED)
                return; /* after the banner the agent writes nothing we need */
        for (size_t i = 0; i < len && c->phase == PH_SPAWNED; i++) {
                if (data[i] != '\n') {
                        if (c->bline_len < BANNER_LINE_MAX)
                                c->bline[c->bline_len++] = data[i];
                        continue;
                }
                if (c->bline_len == strlen(LP_BANNER) - 1 &&
                    !memcmp(c->bline, LP_BANNER, c->bline_len)) {
                        c->phase = PH_BANNER;
                        tend_timer_start(c->timer, c->node->cfg.start_timeout);
                        if (c->node->cfg.verbose)
                                nmsg(c->node, "host '%s': agent running, waiting for its callback",
                                     c->name);
                        emit(c->node, LP_CONNECTED, 0, c->index, NULL, 0);
                        return;
                }
                /* A login script's chatter: part of the diagnostic, within a bound. */
                diag_add(c, c->bline, c->bline_len);
                diag_add(c, "\n", 1);
                c->noise += c->bline_len + 1;
                c->bline_len = 0;
                if (c->noise > BANNER_NOISE_MAX) {
                        child_fail(c, "protocol", "no banner in the first 64 KiB of the agent's output");
                        return;
                }
        }
}

static void on_agent_stderr(tend_capture *cap, const char *data, size_t len, bool eof,
                            void *userdata) {
        struct child *c = userdata;
        if (!eof)
                diag_add(c, data, len);
}

static void exit_text(struct child *c, char *buf, size_t size) {
        if (c->agent_status_lost)
                snprintf(buf, size, "status lost");
        else if (c->agent_exit.signo)
                snprintf(buf, size, "killed by SIG%s", tend_signal_name(c->agent_exit.signo));
        else
                snprintf(buf, size, "exit code %d", c->agent_exit.code);
}

static void on_agent_exit(tend_proc *p, int err, const struct tend_exit *ex, void *userdata) {
        struct child *c = userdata;
        c->agent_exited = true;
        if (err < 0)
                c->agent_status_lost = true;
        else
                c->agent_exit = *ex;
        tend_timer_stop(c->kill_timer);
        /* What it wrote last is in the pipes now: take it, bounded, for the diagnostic. */
        if (c->err_cap)
                tend_capture_drain(c->err_cap);
        if (c->out_cap)
                tend_capture_drain(c->out_cap);
        c->stdin_watch = tend_watch_free(c->stdin_watch);
        c->stdin_fd = io_close(c->stdin_fd);
        char st[64], msg[160];
        exit_text(c, st, sizeof st);
        if (c->phase == PH_SPAWNED) {
                snprintf(msg, sizeof msg, "the agent ended before its banner (%s)", st);
                child_fail(c, "unreachable", msg);
        } else if (c->phase == PH_BANNER) {
                snprintf(msg, sizeof msg, "the agent ended before calling back (%s)", st);
                child_fail(c, "agent-exited", msg);
        }
        node_check_idle(c->node);
}

static void on_stdin_writable(tend_watch *w, int fd, uint32_t revents, void *userdata) {
        struct child *c = userdata;
        while (c->job_off < c->job_len) {
                ssize_t k = io_write(fd, c->job + c->job_off, c->job_len - c->job_off);
                if (k == -EAGAIN)
                        return;
                if (k < 0) {
                        /* The agent is gone; its exit says how. */
                        c->stdin_watch = tend_watch_free(c->stdin_watch);
                        break;
                }
                c->job_off += (size_t)k;
        }
        /* Written: stdin stays open, unwatched — the lifeline. The job line is a secret
         * (the token): do not keep it around. */
        c->stdin_watch = tend_watch_free(c->stdin_watch);
        if (c->job) {
                memset(c->job, 0, c->job_len);
                free(c->job);
                c->job = NULL;
        }
}

static char *expand_word(struct node *n, struct child *c, const char *w) {
        size_t cap = strlen(w) + strlen(c->name) * 4 + 600;
        char *out = malloc(cap);
        if (!out)
                return NULL;
        size_t o = 0;
        for (const char *p = w; *p; p++) {
                const char *add = NULL;
                char num[16];
                if (*p == '%' && p[1]) {
                        switch (p[1]) {
                        case 'h': add = c->name; break;
                        case 'u': add = n->cfg.user ? n->cfg.user : n->local_user; break;
                        case 'n':
                                snprintf(num, sizeof num, "%u", c->index);
                                add = num;
                                break;
                        case '%': add = "%"; break;
                        }
                }
                if (add) {
                        size_t l = strlen(add);
                        if (o + l + 1 > cap) {
                                free(out);
                                return NULL;
                        }
                        memcpy(out + o, add, l);
                        o += l;
                        p++;
                } else {
                        if (o + 2 > cap) {
                                free(out);
                                return NULL;
                        }
                        out[o++] = *p;
                }
        }
        out[o] = '\0';
        return out;
}

static char *make_job_line(struct node *n, struct child *c, size_t *ret_len) {
        json_t *j = json_deep_copy(n->cfg.job);
        if (!j)
                return NULL;
        char tok[64];
        lp_key_to_base64(c->token, tok);
        json_object_set_new(j, "host", json_string(c->name));
        json_object_set_new(j, "index", json_integer(c->index));
        json_object_set_new(j, "token", json_string(tok));
        sodium_memzero(tok, sizeof tok);
        json_t *cb = json_array();
        for (size_t i = 0; i < n->n_callbacks; i++)
                json_array_append_new(cb, json_string(n->callbacks[i]));
        json_object_set_new(j, "callback", cb);
        if (n->cfg.tree && c->subtree && json_array_size(c->subtree) > 0) {
                json_t *t = json_deep_copy(n->cfg.tree);
                json_object_set(t, "children", c->subtree);
                json_object_set_new(j, "tree", t);
        } else {
                json_object_set_new(j, "tree", json_null());
        }
        char *text = json_dumps(j, JSON_COMPACT | JSON_ENSURE_ASCII);
        json_decref(j);
        if (!text)
                return NULL;
        size_t len = strlen(text);
        if (len > LAUNCH_JOB_LINE_MAX) {
                free(text);
                errno = E2BIG;
                return NULL;
        }
        char *line = realloc(text, len + 2);
        if (!line) {
                free(text);
                return NULL;
        }
        line[len] = '\n';
        line[len + 1] = '\0';
        *ret_len = len + 1;
        return line;
}

static void child_spawn(struct child *c) {
        struct node *n = c->node;
        size_t nw = 0;
        while (n->cfg.agent[nw])
                nw++;
        char **argv = calloc(nw + 3, sizeof *argv);
        char msg[300];
        if (!argv) {
                child_fail(c, "spawn-failed", "out of memory");
                return;
        }
        bool ok = true;
        for (size_t i = 0; i < nw && ok; i++)
                ok = (argv[i] = expand_word(n, c, n->cfg.agent[i])) != NULL;
        argv[nw] = (char *)n->cfg.remote_tend;
        argv[nw + 1] = (char *)"launch-agent";
        c->job = ok ? make_job_line(n, c, &c->job_len) : NULL;
        if (!ok || !c->job) {
                child_fail(c, "spawn-failed", errno == E2BIG ? "job line longer than 1 MiB"
                                                             : "out of memory");
                goto out;
        }
        struct tend_spawn_opts so;
        memset(&so, 0, sizeof so);
        so.argv = (const char *const *)argv;
        /* Its own session: a deadline kills the template's whole process group. */
        so.flags = TEND_SPAWN_SETSID;
        so.stdio[0].kind = so.stdio[1].kind = so.stdio[2].kind = TEND_STDIO_PIPE;
        /* If we die, the agent hears it at once (a local agent stops its command). */
        so.pdeathsig = SIGTERM;
        enum tend_spawn_step step = TEND_STEP_NONE;
        int e = tend_spawn(n->loop, &so, &c->agent, &step);
        if (e < 0) {
                snprintf(msg, sizeof msg, "cannot start the agent '%s' (%s): %s", argv[0],
                         tend_spawn_step_name(step), tend_strerror(e));
                child_fail(c, "unreachable", msg);
                goto out;
        }
        tend_proc_on_exit(c->agent, on_agent_exit, c);
        c->phase = PH_SPAWNED;
        c->stdin_fd = tend_proc_take_stdio_fd(c->agent, 0);
        (void)io_set_nonblock(c->stdin_fd, true);
        e = tend_capture_new(n->loop, tend_proc_take_stdio_fd(c->agent, 1), NULL, on_agent_stdout,
                             c, &c->out_cap);
        if (e == 0)
                e = tend_capture_new(n->loop, tend_proc_take_stdio_fd(c->agent, 2), NULL,
                                     on_agent_stderr, c, &c->err_cap);
        if (e == 0)
                e = tend_watch_new(n->loop, c->stdin_fd, EPOLLOUT, on_stdin_writable, c,
                                   &c->stdin_watch);
        if (e < 0) {
                snprintf(msg, sizeof msg, "cannot talk to the agent: %s", tend_strerror(e));
                child_fail(c, "unreachable", msg);
                goto out;
        }
        tend_timer_start(c->timer, n->cfg.connect_timeout);
        if (n->cfg.verbose)
                nmsg(n, "host '%s': agent started (pid %d)", c->name, (int)tend_proc_pid(c->agent));
out:
        for (size_t i = 0; i < nw; i++)
                free(argv[i]);
        free(argv);
}

static void spawn_more(struct node *n) {
        while (!n->cancelled && !n->freeing && n->next_spawn < n->n_children &&
               n->active < n->cfg.fanout) {
                struct child *c = &n->children[n->next_spawn++];
                if (c->phase != PH_WAITING)
                        continue;
                c->slot = true;
                n->active++;
                child_spawn(c);
        }
}

/* ---- failure and the end of a child ------------------------------------------------- */

/* The host `c` (and what of its subtree is not final) will not give more: report for each. */
static void child_fail(struct child *c, const char *reason, const char *message) {
        struct node *n = c->node;
        if (c->phase == PH_FINISHED)
                return;
        bool started_self = c->sub_state[0] & 1;
        c->phase = PH_FINISHED;
        tend_timer_stop(c->timer);
        snprintf(c->failure, sizeof c->failure, "%s", message);
        c->conn = lp_conn_free(c->conn);
        agent_stop(c);
        slot_release(c);
        if (n->cfg.verbose || strcmp(reason, "cancelled"))
                nmsg(n, "host '%s': %s", c->name, message);
        for (size_t i = 0; i < c->n_sub; i++) {
                if (!(c->sub_state[i] & 2)) {
                        bool started = c->sub_state[i] & 1;
                        json_t *o = json_object();
                        const char *r = i == 0 ? reason
                                        : started ? (started_self ? "parent-lost" : "parent-failed")
                                                  : "parent-failed";
                        json_object_set_new(o, "reason", json_string(r));
                        json_object_set_new(o, "message", json_string(message));
                        if (i == 0)
                                json_object_set_new(o, "diagnostic", diag_json(c));
                        emit_json(n, started ? LP_LOST : LP_FAILED, c->sub[i], o);
                        c->sub_state[i] |= 2;
                }
                if (!(c->sub_state[i] & 4)) {
                        c->sub_state[i] |= 4;
                        emit(n, LP_DONE, 0, c->sub[i], NULL, 0);
                }
        }
        node_check_idle(n);
}

static void on_deadline(tend_timer *t, void *userdata) {
        struct child *c = userdata;
        char msg[128];
        if (c->phase == PH_SPAWNED) {
                snprintf(msg, sizeof msg, "connect timeout after %.3gs",
                         secs(c->node->cfg.connect_timeout));
                child_fail(c, "connect-timeout", msg);
        } else if (c->phase == PH_BANNER || c->phase == PH_CALLED) {
                snprintf(msg, sizeof msg, "start timeout after %.3gs%s",
                         secs(c->node->cfg.start_timeout),
                         c->phase == PH_BANNER ? " (no callback)" : " (no START)");
                child_fail(c, "start-timeout", msg);
        }
}

/* ---- the child connection ------------------------------------------------------------ */

static void on_child_frame(struct lp_conn *conn, const struct lp_frame *f, void *userdata) {
        struct child *c = userdata;
        struct node *n = c->node;
        if (f->type == LP_HEARTBEAT)
                return;
        struct route *r = f->host < n->n_routes ? &n->routes[f->host] : NULL;
        char msg[160];
        if (!r || r->child != c->slot_index + 1) {
                snprintf(msg, sizeof msg, "protocol error: %s frame about host %u, not below it",
                         lp_type_name(f->type), f->host);
                child_fail(c, "protocol", msg);
                return;
        }
        uint8_t *st = &c->sub_state[r->pos];
        /* A result is believed only when it is what it says: a JSON object. */
        if (f->type == LP_REFUSED || f->type == LP_STARTED || f->type == LP_EXIT ||
            f->type == LP_FAILED || f->type == LP_LOST) {
                json_t *o = json_loadb((const char *)f->payload, f->len, 0, NULL);
                bool ok = json_is_object(o);
                json_decref(o);
                if (!ok) {
                        snprintf(msg, sizeof msg, "protocol error: %s frame about host %u is not a JSON object",
                                 lp_type_name(f->type), f->host);
                        child_fail(c, "protocol", msg);
                        return;
                }
        }
        if (f->type == LP_OUT && f->stream != 1 && f->stream != 2) {
                snprintf(msg, sizeof msg, "protocol error: OUT frame for stream %u", f->stream);
                child_fail(c, "protocol", msg);
                return;
        }
        switch (f->type) {
        case LP_START:
        case LP_REFUSED:
                if (r->pos == 0 && c->phase == PH_CALLED) {
                        tend_timer_stop(c->timer);
                        c->phase = PH_RUNNING;
                }
                if (f->type == LP_REFUSED)
                        *st |= 2;
                break;
        case LP_STARTED:
                *st |= 1;
                break;
        case LP_OUT:
        case LP_CONNECTED:
                break;
        case LP_EXIT:
        case LP_FAILED:
        case LP_LOST:
                *st |= 2;
                break;
        case LP_DONE:
                *st |= 2 | 4;
                break;
        default:
                snprintf(msg, sizeof msg, "protocol error: unexpected %s frame from the agent",
                         lp_type_name(f->type));
                child_fail(c, "protocol", msg);
                return;
        }
        emit(n, f->type, f->stream, f->host, f->payload, f->len);
        if (f->type == LP_DONE && r->pos == 0 && c->phase != PH_FINISHED) {
                /* Its whole subtree is final: any host below not reported is a fault. */
                for (size_t i = 1; i < c->n_sub; i++)
                        if (!(c->sub_state[i] & 4)) {
                                child_fail(c, "protocol", "DONE before its subtree was done");
                                return;
                        }
                c->phase = PH_FINISHED;
                tend_timer_stop(c->timer);
                c->conn = lp_conn_free(c->conn);
                /* Closing stdin ends the agent's channel (ssh exits); KILL if it lingers. */
                c->stdin_watch = tend_watch_free(c->stdin_watch);
                c->stdin_fd = io_close(c->stdin_fd);
                if (!c->agent_exited)
                        tend_timer_start(c->kill_timer, AGENT_KILL_USEC);
                node_check_idle(n);
        }
}

static void on_child_closed(struct lp_conn *conn, int err, const char *why, void *userdata) {
        struct child *c = userdata;
        char msg[200];
        bool started = c->sub_state[0] & 1;
        if (started)
                snprintf(msg, sizeof msg, "lost: %s", why);
        else
                snprintf(msg, sizeof msg, "the agent's connection ended before it started: %s",
                         why);
        if (err == -EPROTO)
                child_fail(c, "protocol", msg);
        else
                child_fail(c, started ? (err == -ETIMEDOUT ? "heartbeat" : "connection-closed")
                                      : "agent-exited",
                           msg);
}

static const struct lp_conn_ops child_conn_ops = {
        .frame = on_child_frame, .closed = on_child_closed,
};

/* ---- callbacks: the listener and the handshake --------------------------------------- */

static void pending_free(struct node *n, struct pending *p) {
        for (size_t i = 0; i < PENDING_MAX; i++)
                if (n->pending[i] == p)
                        n->pending[i] = NULL;
        lp_conn_free(p->conn);
        tend_timer_free(p->timer);
        free(p);
        if (n->listen_paused && n->listen_watch) {
                n->listen_paused = false;
                (void)tend_watch_set_events(n->listen_watch, EPOLLIN);
        }
        node_check_idle(n);
}

static void refuse(struct node *n, struct pending *p, const char *why) {
        n->refused++;
        msg_error("%s: callback from %s refused: %s", n->cfg.who, lp_conn_peer(p->conn), why);
        pending_free(n, p);
}

static void on_pending_frame(struct lp_conn *conn, const struct lp_frame *f, void *userdata) {
        struct pending *p = userdata;
        struct node *n = p->node;
        char why[160];
        if (p->aborting)
                return;
        p->heard = true;
        if (p->state == 0) {
                if (f->type != LP_HELLO) {
                        snprintf(why, sizeof why, "expected HELLO, got %s", lp_type_name(f->type));
                        refuse(n, p, why);
                        return;
                }
                if (lp_hello_read(f->payload, f->len, p->nonce_a) < 0) {
                        refuse(n, p, "bad HELLO (length or version)");
                        return;
                }
                struct route *r = f->host < n->n_routes ? &n->routes[f->host] : NULL;
                if (!r || !r->child || r->pos != 0) {
                        snprintf(why, sizeof why, "unknown host index %u", f->host);
                        refuse(n, p, why);
                        return;
                }
                struct child *c = &n->children[r->child - 1];
                if (c->phase == PH_WAITING) {
                        snprintf(why, sizeof why, "host '%s' was not started", c->name);
                        refuse(n, p, why);
                        return;
                }
                if (c->conn || c->phase == PH_CALLED || c->phase == PH_RUNNING) {
                        snprintf(why, sizeof why, "host '%s' already called back", c->name);
                        refuse(n, p, why);
                        return;
                }
                p->child = c;
                uint8_t ch[LP_CHALLENGE_LEN];
                lp_challenge_make(c->token, c->index, p->nonce_a, p->nonce_l, ch);
                (void)lp_conn_send(conn, LP_CHALLENGE, 0, c->index, ch, sizeof ch);
                p->state = 1;
                return;
        }
        if (f->type != LP_PROOF || f->host != p->child->index) {
                snprintf(why, sizeof why, "expected PROOF, got %s", lp_type_name(f->type));
                refuse(n, p, why);
                return;
        }
        struct child *c = p->child;
        if (lp_proof_check(c->token, c->index, p->nonce_a, p->nonce_l, f->payload, f->len) < 0) {
                snprintf(why, sizeof why, "wrong proof for host '%s'", c->name);
                refuse(n, p, why);
                return;
        }
        if (c->phase == PH_FINISHED || c->conn) {
                /* Too late (deadline passed, cancelled): it must not start. */
                if (n->cfg.verbose)
                        nmsg(n, "host '%s': late callback, sending ABORT", c->name);
                (void)lp_conn_send(conn, LP_ABORT, 0, c->index, NULL, 0);
                p->aborting = true;
                lp_conn_want_empty(conn);
                return;
        }
        /* Authenticated: the connection is the child's now. */
        for (size_t i = 0; i < PENDING_MAX; i++)
                if (n->pending[i] == p)
                        n->pending[i] = NULL;
        c->conn = p->conn;
        p->conn = NULL;
        tend_timer_free(p->timer);
        free(p);
        if (n->listen_paused && n->listen_watch) {
                n->listen_paused = false;
                (void)tend_watch_set_events(n->listen_watch, EPOLLIN);
        }
        /* A callback can overtake the banner (two channels): it proves the agent runs. */
        if (c->phase == PH_SPAWNED) {
                tend_timer_start(c->timer, n->cfg.start_timeout);
                emit(n, LP_CONNECTED, 0, c->index, NULL, 0);
        }
        lp_conn_set_ops(c->conn, &child_conn_ops);
        lp_conn_set_userdata(c->conn, c);
        lp_conn_set_max_payload(c->conn, LP_MAX_PAYLOAD);
        (void)lp_conn_heartbeat(c->conn, n->cfg.heartbeat);
        if (n->paused)
                lp_conn_pause_read(c->conn, true);
        c->phase = PH_CALLED;
        if (n->cfg.verbose)
                nmsg(n, "host '%s': called back from %s", c->name, lp_conn_peer(c->conn));
        slot_release(c);
}

static void on_pending_closed(struct lp_conn *conn, int err, const char *why, void *userdata) {
        struct pending *p = userdata;
        /* An agent connects to every callback address at once and keeps the first that
         * answers: the others close without a word, which is no refusal. */
        if (p->aborting || (!p->heard && err == 0)) {
                pending_free(p->node, p);
                return;
        }
        refuse(p->node, p, why);
}

static void on_pending_empty(struct lp_conn *conn, void *userdata) {
        struct pending *p = userdata;
        if (p->aborting)
                pending_free(p->node, p);
}

static const struct lp_conn_ops pending_ops = {
        .frame = on_pending_frame, .closed = on_pending_closed, .empty = on_pending_empty,
};

static void on_pending_timeout(tend_timer *t, void *userdata) {
        struct pending *p = userdata;
        if (p->aborting) {
                pending_free(p->node, p);
                return;
        }
        refuse(p->node, p, "handshake not done within 10s");
}

static void on_accept(tend_watch *w, int fd, uint32_t revents, void *userdata) {
        struct node *n = userdata;
        for (int k = 0; k < 64; k++) {
                struct sockaddr_storage ss;
                socklen_t sl = sizeof ss;
                int cfd = accept4(fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (cfd < 0) {
                        if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED)
                                return;
                        /* Out of fds or memory: stop accepting until a connection ends,
                         * rather than spin on a listener that stays readable. */
                        nmsg(n, "cannot accept a callback: %s", strerror(errno));
                        n->listen_paused = true;
                        (void)tend_watch_set_events(w, 0);
                        return;
                }
                size_t slot = PENDING_MAX;
                for (size_t i = 0; i < PENDING_MAX; i++)
                        if (!n->pending[i]) {
                                slot = i;
                                break;
                        }
                if (slot == PENDING_MAX) {
                        char addr[80];
                        lp_addr_format(&ss, addr, sizeof addr);
                        n->refused++;
                        msg_error("%s: callback from %s refused: %d handshakes already waiting",
                                  n->cfg.who, addr, PENDING_MAX);
                        io_close(cfd);
                        continue;
                }
                struct pending *p = calloc(1, sizeof *p);
                if (!p) {
                        io_close(cfd);
                        continue;
                }
                p->node = n;
                if (lp_conn_new(n->loop, cfd, &pending_ops, p, &p->conn) < 0 ||
                    tend_timer_new(n->loop, on_pending_timeout, p, &p->timer) < 0) {
                        lp_conn_free(p->conn);
                        free(p);
                        continue;
                }
                lp_conn_set_max_payload(p->conn, LP_PREAUTH_MAX_PAYLOAD);
                uint64_t bound = HANDSHAKE_USEC < n->cfg.start_timeout ? HANDSHAKE_USEC
                                                                        : n->cfg.start_timeout;
                tend_timer_start(p->timer, bound);
                n->pending[slot] = p;
        }
}

static int callbacks_add(struct node *n, const char *text) {
        if (n->n_callbacks >= LAUNCH_CALLBACKS_MAX)
                return 0;
        for (size_t i = 0; i < n->n_callbacks; i++)
                if (!strcmp(n->callbacks[i], text))
                        return 0;
        char *s = strdup(text);
        if (!s)
                return -ENOMEM;
        n->callbacks[n->n_callbacks++] = s;
        return 0;
}

static int callbacks_make(struct node *n, int family, int port) {
        n->callbacks = calloc(LAUNCH_CALLBACKS_MAX, sizeof *n->callbacks);
        if (!n->callbacks)
                return -ENOMEM;
        char text[96];
        if (n->cfg.callbacks) {
                for (size_t i = 0; n->cfg.callbacks[i]; i++) {
                        struct sockaddr_storage ss;
                        unsigned len;
                        if (lp_addr_parse(n->cfg.callbacks[i], port, &ss, &len) < 0) {
                                nmsg(n, "invalid --callback address '%s'", n->cfg.callbacks[i]);
                                return -EINVAL;
                        }
                        lp_addr_format(&ss, text, sizeof text);
                        if (callbacks_add(n, text) < 0)
                                return -ENOMEM;
                }
                return 0;
        }
        struct ifaddrs *ifa = NULL;
        if (getifaddrs(&ifa) < 0)
                return -errno;
        /* Routable addresses first, loopback last (for agents on this machine). */
        for (int loop = 0; loop < 2; loop++) {
                for (struct ifaddrs *i = ifa; i; i = i->ifa_next) {
                        if (!i->ifa_addr || !(i->ifa_flags & IFF_UP))
                                continue;
                        int fam = i->ifa_addr->sa_family;
                        if (fam != AF_INET && fam != AF_INET6)
                                continue;
                        if (fam == AF_INET6 && family == AF_INET)
                                continue;
                        if (!!(i->ifa_flags & IFF_LOOPBACK) != loop)
                                continue;
                        struct sockaddr_storage ss;
                        memset(&ss, 0, sizeof ss);
                        if (fam == AF_INET) {
                                struct sockaddr_in *a = (struct sockaddr_in *)&ss;
                                memcpy(a, i->ifa_addr, sizeof *a);
                                uint32_t h = ntohl(a->sin_addr.s_addr);
                                if ((h >> 16) == 0xa9fe) /* 169.254/16: link-local */
                                        continue;
                                a->sin_port = htons((uint16_t)port);
                        } else {
                                struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
                                memcpy(a, i->ifa_addr, sizeof *a);
                                if (IN6_IS_ADDR_LINKLOCAL(&a->sin6_addr))
                                        continue;
                                a->sin6_port = htons((uint16_t)port);
                        }
                        lp_addr_format(&ss, text, sizeof text);
                        if (callbacks_add(n, text) < 0) {
                                freeifaddrs(ifa);
                                return -ENOMEM;
                        }
                }
        }
        freeifaddrs(ifa);
        if (n->n_callbacks == 0)
                return -EADDRNOTAVAIL;
        return 0;
}

static int listen_start(struct node *n) {
        struct sockaddr_storage ss;
        unsigned len = 0;
        int fd = -1;
        if (n->cfg.listen) {
                if (lp_addr_parse(n->cfg.listen, 0, &ss, &len) < 0) {
                        nmsg(n, "invalid --listen address '%s'", n->cfg.listen);
                        return -EINVAL;
                }
                fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        } else {
                /* The IPv6 any address, dual-stack; IPv4 any where there is no IPv6. */
                struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
                memset(&ss, 0, sizeof ss);
                a6->sin6_family = AF_INET6;
                a6->sin6_addr = in6addr_any;
                len = sizeof *a6;
                fd = socket(AF_INET6, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
                if (fd >= 0) {
                        int off = 0;
                        (void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off);
                        if (bind(fd, (struct sockaddr *)&ss, len) < 0)
                                fd = io_close(fd);
                }
                if (fd < 0) {
                        struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
                        memset(&ss, 0, sizeof ss);
                        a4->sin_family = AF_INET;
                        a4->sin_addr.s_addr = htonl(INADDR_ANY);
                        len = sizeof *a4;
                        fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
                } else {
                        len = 0; /* bound already */
                }
        }
        if (fd < 0) {
                int e = -errno;
                nmsg(n, "cannot make the callback socket: %s", strerror(errno));
                return e;
        }
        n->listen_fd = fd;
        if (len && bind(fd, (struct sockaddr *)&ss, len) < 0) {
                int e = -errno;
                nmsg(n, "cannot listen on %s: %s", n->cfg.listen ? n->cfg.listen : "any address",
                     strerror(errno));
                return e;
        }
        if (listen(fd, 1024) < 0) {
                int e = -errno;
                nmsg(n, "cannot listen: %s", strerror(errno));
                return e;
        }
        socklen_t sl = sizeof ss;
        if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0)
                return -errno;
        lp_addr_format(&ss, n->listen_addr, sizeof n->listen_addr);
        int port = ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                                 : ((struct sockaddr_in6 *)&ss)->sin6_port);
        int e = callbacks_make(n, ss.ss_family, port);
        if (e < 0) {
                if (e != -EINVAL)
                        nmsg(n, "cannot list the local addresses for callbacks: %s",
                             tend_strerror(e));
                return e;
        }
        if (n->cfg.verbose) {
                nmsg(n, "listening on %s", n->listen_addr);
                for (size_t i = 0; i < n->n_callbacks; i++)
                        nmsg(n, "callback address %s", n->callbacks[i]);
        }
        return tend_watch_new(n->loop, fd, EPOLLIN, on_accept, n, &n->listen_watch);
}

/* ---- the node ------------------------------------------------------------------------ */

static void node_check_idle(struct node *n) {
        if (n->idle_reported || n->freeing)
                return;
        for (size_t i = 0; i < n->n_children; i++) {
                struct child *c = &n->children[i];
                if (c->phase != PH_FINISHED && !(n->cancelled && c->phase == PH_WAITING))
                        return;
                if (c->agent && !c->agent_exited)
                        return;
        }
        for (size_t i = 0; i < PENDING_MAX; i++)
                if (n->pending[i] && n->pending[i]->aborting)
                        return;
        n->idle_reported = true;
        if (n->ops->idle)
                n->ops->idle(n, n->userdata);
}

/* Walk a "children" array of the tree: add every index to c's subtree. */
static int subtree_collect(struct child *c, json_t *arr, size_t *cap) {
        if (!arr || !json_is_array(arr))
                return 0;
        for (size_t i = 0; i < json_array_size(arr); i++) {
                json_t *e = json_array_get(arr, i);
                json_t *idx = json_object_get(e, "index");
                if (!json_is_integer(idx) || json_integer_value(idx) < 0 ||
                    json_integer_value(idx) >= 65536)
                        return -EINVAL;
                if (c->n_sub == *cap) {
                        size_t nc = *cap * 2;
                        uint32_t *s = realloc(c->sub, nc * sizeof *s);
                        if (!s)
                                return -ENOMEM;
                        c->sub = s;
                        uint8_t *st = realloc(c->sub_state, nc);
                        if (!st)
                                return -ENOMEM;
                        c->sub_state = st;
                        *cap = nc;
                }
                c->sub[c->n_sub] = (uint32_t)json_integer_value(idx);
                c->sub_state[c->n_sub++] = 0;
                int r = subtree_collect(c, json_object_get(e, "children"), cap);
                if (r < 0)
                        return r;
        }
        return 0;
}

int node_new(tend_loop *loop, const struct node_config *cfg, const struct node_child *children,
             size_t n_children, const struct node_ops *ops, void *userdata,
             struct node **ret_node) {
        struct node *n = calloc(1, sizeof *n);
        if (!n)
                return -ENOMEM;
        n->loop = loop;
        n->cfg = *cfg;
        /* The words and the prefix are ours: the caller's may be gone after this call. */
        size_t nw = 0;
        while (cfg->agent[nw])
                nw++;
        n->cfg.agent = calloc(nw + 1, sizeof *n->cfg.agent);
        n->cfg.who = strdup(cfg->who);
        if (!n->cfg.agent || !n->cfg.who)
                goto nomem;
        for (size_t i = 0; i < nw; i++)
                if (!(n->cfg.agent[i] = strdup(cfg->agent[i])))
                        goto nomem;
        if (!n->cfg.fanout)
                n->cfg.fanout = 32;
        n->ops = ops;
        n->userdata = userdata;
        n->listen_fd = -1;
        struct account_user *pw = NULL;
        account_user_by_uid(getuid(), &pw);
        snprintf(n->local_user, sizeof n->local_user, "%s", pw ? pw->name : "root");
        account_user_free(pw);
        n->children = calloc(n_children ? n_children : 1, sizeof *n->children);
        n->n_routes = 65536;
        n->routes = calloc(n->n_routes, sizeof *n->routes);
        if (!n->children || !n->routes)
                goto nomem;
        n->n_children = n_children;
        for (size_t i = 0; i < n_children; i++) {
                struct child *c = &n->children[i];
                c->node = n;
                c->slot_index = i;
                c->name = children[i].name;
                c->index = children[i].index;
                memcpy(c->token, children[i].token, LP_KEY);
                c->subtree = children[i].subtree;
                c->stdin_fd = -1;
                size_t cap = 4;
                c->sub = malloc(cap * sizeof *c->sub);
                c->sub_state = malloc(cap);
                if (!c->sub || !c->sub_state)
                        goto nomem;
                c->sub[0] = c->index;
                c->sub_state[0] = 0;
                c->n_sub = 1;
                int r = subtree_collect(c, c->subtree, &cap);
                if (r < 0) {
                        node_free(n);
                        return r;
                }
                for (size_t k = 0; k < c->n_sub; k++) {
                        if (c->sub[k] >= n->n_routes || n->routes[c->sub[k]].child) {
                                node_free(n);
                                return -EINVAL;
                        }
                        n->routes[c->sub[k]] = (struct route){ .child = (uint32_t)i + 1,
                                                               .pos = (uint32_t)k };
                }
                if (tend_timer_new(loop, on_deadline, c, &c->timer) < 0 ||
                    tend_timer_new(loop, on_kill_timer, c, &c->kill_timer) < 0)
                        goto nomem;
        }
        *ret_node = n;
        return 0;
nomem:
        node_free(n);
        return -ENOMEM;
}

int node_start(struct node *n) {
        int e = listen_start(n);
        if (e < 0)
                return e;
        spawn_more(n);
        node_check_idle(n);
        return 0;
}

struct node *node_free(struct node *n) {
        if (!n)
                return NULL;
        n->freeing = true;
        for (size_t i = 0; i < PENDING_MAX; i++)
                if (n->pending[i]) {
                        lp_conn_free(n->pending[i]->conn);
                        tend_timer_free(n->pending[i]->timer);
                        free(n->pending[i]);
                }
        for (size_t i = 0; i < n->n_children; i++) {
                struct child *c = &n->children[i];
                lp_conn_free(c->conn);
                tend_watch_free(c->stdin_watch);
                io_close(c->stdin_fd);
                if (c->agent && !c->agent_exited) {
                        (void)kill(-tend_proc_pid(c->agent), SIGKILL);
                        (void)tend_proc_signal(c->agent, SIGKILL);
                        struct tend_exit ex;
                        (void)tend_proc_wait(c->agent, &ex);
                }
                tend_capture_free(c->out_cap);
                tend_capture_free(c->err_cap);
                tend_proc_free(c->agent);
                tend_timer_free(c->timer);
                tend_timer_free(c->kill_timer);
                free(c->job);
                free(c->sub);
                free(c->sub_state);
        }
        tend_watch_free(n->listen_watch);
        io_close(n->listen_fd);
        for (size_t i = 0; i < n->n_callbacks; i++)
                free(n->callbacks[i]);
        free(n->callbacks);
        free(n->children);
        free(n->routes);
        config_strv_free(n->cfg.agent);
        free((char *)n->cfg.who);
        free(n);
        return NULL;
}

int node_send(struct node *n, uint32_t host, int type, const void *payload, size_t len) {
        if (host >= n->n_routes || !n->routes[host].child)
                return -ENOENT;
        struct child *c = &n->children[n->routes[host].child - 1];
        if (!c->conn || c->phase == PH_FINISHED)
                return -ENOENT;
        int e = lp_conn_send(c->conn, type, 0, host, payload, len);
        if (e == -ENOBUFS)
                child_fail(c, "protocol", "the agent does not read its connection");
        return e;
}

void node_signal_all(struct node *n, int signo) {
        uint8_t p[4] = { (uint8_t)(signo >> 24), (uint8_t)(signo >> 16), (uint8_t)(signo >> 8),
                         (uint8_t)signo };
        for (size_t i = 0; i < n->n_children; i++) {
                struct child *c = &n->children[i];
                if (c->conn && c->phase != PH_FINISHED)
                        (void)lp_conn_send(c->conn, LP_SIGNAL, 0, c->index, p, sizeof p);
        }
}

void node_cancel(struct node *n) {
        n->cancelled = true;
        for (size_t i = 0; i < n->n_children; i++) {
                struct child *c = &n->children[i];
                if (c->phase == PH_WAITING || c->phase == PH_SPAWNED || c->phase == PH_BANNER)
                        child_fail(c, "cancelled", "cancelled before it called back");
        }
        node_check_idle(n);
}

void node_abandon(struct node *n) {
        n->abandoned = true;
        n->cancelled = true;
        for (size_t i = 0; i < n->n_children; i++) {
                struct child *c = &n->children[i];
                if (c->phase == PH_FINISHED)
                        continue;
                c->phase = PH_FINISHED;
                tend_timer_stop(c->timer);
                c->conn = lp_conn_free(c->conn);
                agent_stop(c);
                slot_release(c);
        }
        node_check_idle(n);
}

void node_pause_read(struct node *n, bool paused) {
        if (n->paused == paused)
                return;
        n->paused = paused;
        for (size_t i = 0; i < n->n_children; i++)
                if (n->children[i].conn)
                        lp_conn_pause_read(n->children[i].conn, paused);
}

char *node_diagnostic(const struct node *n, uint32_t host) {
        if (host >= n->n_routes || !n->routes[host].child || n->routes[host].pos != 0)
                return NULL;
        const struct child *c = &n->children[n->routes[host].child - 1];
        if (!c->diag_len)
                return NULL;
        return launch_utf8_clean(c->diag, c->diag_len);
}

unsigned node_refused(const struct node *n) {
        return n->refused;
}

const char *node_listen_address(const struct node *n) {
        return n->listen_addr;
}
