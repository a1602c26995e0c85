/* control.c — the control socket of `tend supervise`: what `tend ctl` speaks to.
 *
 * A Unix stream socket in the supervisor's one loop. The protocol is JSON lines: each request
 * is one JSON object on one line, each reply one JSON object on one line (tend-ctl(1),
 * PROTOCOL). Everything a peer controls is bounded, because a peer must never be able to
 * harm the supervisor, which keeps everything else up:
 *   - a request line is at most CTL_LINE_MAX bytes: a longer one gets an error reply and the
 *     connection is closed (we cannot find where the next request starts);
 *   - a malformed line gets an error reply and the connection goes on;
 *   - replies are queued without blocking. One reply may be up to CTL_REPLY_MAX bytes (a
 *     longer one is replaced by an error reply); a new reply is queued only while less than
 *     CTL_OUT_MAX bytes of earlier ones are unsent: a peer that does not read its replies
 *     (or a --follow it cannot keep up with) is dropped. So a connection holds at most
 *     CTL_OUT_MAX + CTL_REPLY_MAX bytes, and a big buffer is freed once it is sent;
 *   - a connection must send a complete request within the idle bound (--control-idle-
 *     timeout, 10 s by default) of connecting or of its last request, else it gets an error
 *     line and is closed; one in a wait or a logs --follow is exempt, and one whose reply is
 *     still being sent is kept while the peer reads;
 *   - at most CTL_CONN_MAX connections at a time. When the table is full, a newcomer takes
 *     the place of the connection idle the longest; with none idle, a newcomer with every
 *     right (root, the supervisor's user) takes the place of the oldest wait or follow of a
 *     read-only peer; otherwise it is told so and closed. So peers who may only read cannot
 *     lock root out, and a full table of silent connections empties within the idle bound.
 * Peers are authorised once, when they connect, by SO_PEERCRED (and SO_PEERGROUPS for
 * their supplementary groups): root and the supervisor's own user may do everything, members
 * of the --control-group may read (status, wait), anybody else is refused.
 *
 * Requests of one connection are handled in order; a `wait` holds the ones after it until
 * its reply is sent. A connection is never freed inside the code that uses it: conn_drop
 * closes it at once and the struct is freed at the next turn of the loop (control->kick),
 * which also resumes connections whose wait has ended — never from inside a transition of
 * a service, so a request never runs in the middle of the state machine's work. */
#include "supervise.h"
#include "account.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define CTL_LINE_MAX (64u * 1024u)     /* a request line, newline included */
#define CTL_OUT_MAX (1024u * 1024u)    /* unsent replies before another is queued */
#define CTL_REPLY_MAX (64u * 1024u * 1024u) /* one reply line (status of 10,000 services
                                               with 4 KiB status texts: about 50 MiB) */
#define CTL_OUT_KEEP (64u * 1024u)     /* an output buffer above this is freed once sent */
#define CTL_CONN_MAX 64
#define CTL_LOG_LINES_MAX 10000        /* logs -n */
#define CTL_LOG_READ_MAX (512u * 1024u) /* bytes read back from the end of a log file */

struct conn {
        struct control *ctl;
        struct conn *next;
        int fd;
        tend_watch *watch;
        uint32_t events;             /* what the watch is set to */
        uid_t uid;
        pid_t pid;
        bool full;                   /* may do everything (else: read only) */
        bool dead;                   /* closed; freed by the kick */
        bool closing;                /* close once the output is written; read no more */
        bool eof;
        bool resume;                 /* a wait has ended: handle the buffered requests */
        char *in;                    /* CTL_LINE_MAX bytes */
        size_t in_len;
        char *out;
        size_t out_head, out_len, out_cap;
        /* wait */
        bool waiting;
        char *wait_name;
        enum svc_state wait_state;
        uint64_t wait_usec;
        json_t *wait_id;
        tend_timer *wait_timer;
        /* logs --follow */
        char *follow_name;
        /* the idle bound */
        tend_timer *idle_timer;
        uint64_t since;              /* accepted, or its last request handled */
        uint64_t sent_total, sent_seen; /* bytes sent, and at the last idle check */
};

struct control {
        struct sv *sv;
        char *path;
        dev_t dev;
        ino_t ino;
        int fd;
        tend_watch *watch;
        tend_timer *kick;
        int reserve_fd;              /* /dev/null, given up to answer a peer at EMFILE */
        struct conn *conns;
        size_t n_conns;
        bool has_group;
        gid_t group;
        size_t n_waiting, n_following;
        uint64_t idle_usec;          /* 0: no idle bound */
        bool paused;                 /* not accepting (no fd to accept with) */
};

/* ---- paths ----------------------------------------------------------------------------------- */

char *control_default_path(bool for_server) {
        char *cand[3] = { NULL, NULL, NULL };
        const char *xdg = getenv("XDG_RUNTIME_DIR");
        size_t n = 0;
        if (xdg && xdg[0] == '/' && (!for_server || access(xdg, W_OK) == 0))
                if (asprintf(&cand[n], "%s/tend-supervise.sock", xdg) >= 0)
                        n++;
        if (!for_server || access("/run", W_OK) == 0)
                if (asprintf(&cand[n], "/run/tend-supervise.sock") >= 0)
                        n++;
        if (asprintf(&cand[n], "/tmp/tend-supervise.%u.sock", (unsigned)geteuid()) >= 0)
                n++;
        /* The server takes the first place it may write to; a client the first socket that
         * exists (a member of the control group reads a root supervisor's /run socket). */
        size_t pick = 0;
        if (!for_server) {
                struct stat st;
                for (size_t i = 0; i < n; i++)
                        if (stat(cand[i], &st) == 0 && S_ISSOCK(st.st_mode)) {
                                pick = i;
                                break;
                        }
        }
        char *r = n ? cand[pick] : NULL;
        for (size_t i = 0; i < n; i++)
                if (i != pick)
                        free(cand[i]);
        return r;
}

/* ---- connections: output ------------------------------------------------------------------ */

static void conn_drop(struct conn *c);

static void conn_update_events(struct conn *c) {
        if (c->dead)
                return;
        uint32_t ev = 0;
        if (c->out_len > c->out_head)
                ev |= EPOLLOUT;
        /* While a wait holds the requests, read on until the buffer is full (to see the
         * peer leave), then leave the rest in the socket. */
        if (!c->closing && !c->eof && c->in_len < CTL_LINE_MAX)
                ev |= EPOLLIN;
        if (ev != c->events) {
                c->events = ev;
                (void)tend_watch_set_events(c->watch, ev);
        }
}

/* Write what is queued without blocking. Returns false if the connection was dropped. */
static bool conn_flush(struct conn *c) {
        while (c->out_head < c->out_len) {
                ssize_t n = send(c->fd, c->out + c->out_head, c->out_len - c->out_head,
                                 MSG_NOSIGNAL | MSG_DONTWAIT);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN)
                                break;
                        conn_drop(c); /* EPIPE, ECONNRESET: the peer has gone */
                        return false;
                }
                c->out_head += (size_t)n;
                c->sent_total += (size_t)n;
        }
        if (c->out_head == c->out_len) {
                c->out_head = c->out_len = 0;
                if (c->out_cap > CTL_OUT_KEEP) {
                        /* A big reply is out: give its memory back. */
                        free(c->out);
                        c->out = NULL;
                        c->out_cap = 0;
                }
        }
        if (c->closing && c->out_len == 0) {
                conn_drop(c);
                return false;
        }
        conn_update_events(c);
        return true;
}

/* Queue one reply line. A peer that lets more than CTL_OUT_MAX pile up is dropped. */
static bool conn_send(struct conn *c, json_t *o) {
        if (c->dead || !o)
                return false;
        char *text = json_dumps(o, JSON_COMPACT);
        if (!text) {
                conn_drop(c);
                return false;
        }
        size_t len = strlen(text);
        if (c->out_len - c->out_head > CTL_OUT_MAX) {
                free(text);
                sv_say(c->ctl->sv, "control: uid %u (pid %d) does not read its replies; dropped",
                       (unsigned)c->uid, (int)c->pid);
                conn_drop(c);
                return false;
        }
        if (len + 1 > CTL_REPLY_MAX) {
                free(text);
                json_t *e = json_object();
                json_t *id = json_object_get(o, "id");
                if (id)
                        json_object_set(e, "id", id);
                json_object_set_new(e, "ok", json_false());
                json_object_set_new(e, "error", json_sprintf("reply too long (%zu bytes; the limit is %u): ask for fewer services",
                                                             len + 1, CTL_REPLY_MAX));
                bool r = conn_send(c, e);
                json_decref(e);
                return r;
        }
        if (c->out_len == 0 && len + 1 > CTL_OUT_KEEP) {
                /* A big reply to an idle connection: send jansson's buffer itself rather
                 * than a copy (a status of thousands of services is megabytes). */
                char *nb = realloc(text, len + 1);
                if (nb) {
                        free(c->out);
                        nb[len] = '\n';
                        c->out = nb;
                        c->out_cap = len + 1;
                        c->out_head = 0;
                        c->out_len = len + 1;
                        return conn_flush(c);
                }
        }
        if (c->out_head > 0 && c->out_len + len + 1 > c->out_cap) {
                memmove(c->out, c->out + c->out_head, c->out_len - c->out_head);
                c->out_len -= c->out_head;
                c->out_head = 0;
        }
        if (c->out_len + len + 1 > c->out_cap) {
                size_t cap = c->out_cap ? c->out_cap : 4096;
                while (cap < c->out_len + len + 1)
                        cap *= 2;
                char *nb = realloc(c->out, cap);
                if (!nb) {
                        free(text);
                        conn_drop(c);
                        return false;
                }
                c->out = nb;
                c->out_cap = cap;
        }
        memcpy(c->out + c->out_len, text, len);
        c->out[c->out_len + len] = '\n';
        c->out_len += len + 1;
        free(text);
        return conn_flush(c);
}

static json_t *reply_new(json_t *id, bool ok) {
        json_t *o = json_object();
        if (!o)
                return NULL;
        if (id)
                json_object_set(o, "id", id);
        json_object_set_new(o, "ok", json_boolean(ok));
        return o;
}

static bool send_error(struct conn *c, json_t *id, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
static bool send_error(struct conn *c, json_t *id, const char *fmt, ...) {
        char text[512];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(text, sizeof text, fmt, ap);
        va_end(ap);
        json_t *o = reply_new(id, false);
        json_t *s = json_string(text);
        if (!s) /* a name from the peer that is not UTF-8 */
                s = json_string("invalid request");
        json_object_set_new(o, "error", s);
        bool r = conn_send(c, o);
        json_decref(o);
        return r;
}

/* JSON text for bytes that may not be UTF-8 (a service's output): bad bytes become '?'. */
static json_t *text_json(const char *data, size_t len) {
        json_t *s = json_stringn(data, len);
        if (s)
                return s;
        char *copy = malloc(len + 1);
        if (!copy)
                return NULL;
        for (size_t i = 0; i < len; i++)
                copy[i] = (unsigned char)data[i] < 0x80 && data[i] ? data[i] : '?';
        s = json_stringn(copy, len);
        free(copy);
        return s;
}

/* ---- connections: life ---------------------------------------------------------------------- */

static void wait_end(struct conn *c) {
        if (!c->waiting)
                return;
        c->waiting = false;
        c->ctl->n_waiting--;
        free(c->wait_name);
        c->wait_name = NULL;
        json_decref(c->wait_id);
        c->wait_id = NULL;
        if (c->wait_timer)
                tend_timer_stop(c->wait_timer);
}

static void conn_drop(struct conn *c) {
        if (c->dead)
                return;
        c->dead = true;
        c->ctl->n_conns--; /* the live ones: a dead one waits only to be freed */
        wait_end(c);
        if (c->follow_name) {
                free(c->follow_name);
                c->follow_name = NULL;
                c->ctl->n_following--;
        }
        c->watch = tend_watch_free(c->watch);
        c->fd = io_close(c->fd);
        c->wait_timer = tend_timer_free(c->wait_timer);
        c->idle_timer = tend_timer_free(c->idle_timer);
        tend_timer_start(c->ctl->kick, 0);
        if (c->ctl->paused && c->ctl->watch) {
                /* An fd is free again: take connections again. */
                c->ctl->paused = false;
                (void)tend_watch_set_events(c->ctl->watch, EPOLLIN);
        }
}

/* Start counting the idle bound from now, unless the connection is exempt: in a wait or a
 * follow (those end by an event or by the peer leaving), or already closing. */
static void conn_idle_arm(struct conn *c) {
        if (!c->idle_timer || c->dead)
                return;
        c->since = tend_now_usec();
        c->sent_seen = c->sent_total;
        if (c->waiting || c->follow_name || c->closing || !c->ctl->idle_usec)
                tend_timer_stop(c->idle_timer);
        else
                tend_timer_start(c->idle_timer, c->ctl->idle_usec);
}

static void on_idle(tend_timer *t, void *userdata) {
        struct conn *c = userdata;
        if (c->dead || c->waiting || c->follow_name || c->closing)
                return;
        if (c->out_len > c->out_head) {
                /* A reply is still on its way: keep the connection while the peer reads it;
                 * one that has read nothing for the whole bound is gone. */
                if (c->sent_total != c->sent_seen) {
                        c->sent_seen = c->sent_total;
                        tend_timer_start(t, c->ctl->idle_usec);
                        return;
                }
                sv_say(c->ctl->sv, "control: uid %u (pid %d) reads nothing; closed",
                       (unsigned)c->uid, (int)c->pid);
                conn_drop(c);
                return;
        }
        char d[32];
        snprintf(d, sizeof d, "%.3gs", (double)c->ctl->idle_usec / 1e6);
        send_error(c, NULL, "no request within %s: closing the connection (--control-idle-timeout)",
                   d);
        if (c->dead)
                return;
        c->closing = true;
        (void)conn_flush(c);
}

static void conn_free(struct conn *c) {
        free(c->in);
        free(c->out);
        free(c);
}

/* ---- requests ---------------------------------------------------------------------------------- */

static bool handle_line(struct conn *c, const char *line, size_t len);

/* Handle the complete lines in the buffer, unless a wait holds them. */
static void conn_process(struct conn *c) {
        bool handled = false;
        while (!c->dead && !c->closing && !c->waiting) {
                char *nl = memchr(c->in, '\n', c->in_len);
                if (!nl)
                        break;
                size_t n = (size_t)(nl - c->in);
                /* The request may end the connection; keep the rest of the buffer valid. */
                char *line = malloc(n + 1);
                if (!line) {
                        conn_drop(c);
                        return;
                }
                memcpy(line, c->in, n);
                line[n] = 0;
                memmove(c->in, nl + 1, c->in_len - n - 1);
                c->in_len -= n + 1;
                (void)handle_line(c, line, n);
                free(line);
                handled = true;
        }
        /* Only a whole request counts as activity: a peer that sends a byte now and then
         * is still idle. */
        if (handled && !c->dead)
                conn_idle_arm(c);
        if (c->dead || c->closing || c->waiting)
                goto out;
        if (c->in_len >= CTL_LINE_MAX) {
                send_error(c, NULL, "request too long (the limit is %u bytes per line)",
                           CTL_LINE_MAX);
                c->closing = true;
        } else if (c->eof) {
                if (c->in_len > 0)
                        send_error(c, NULL, "truncated request: the connection ended in the middle of a line");
                c->closing = true;
        }
        if (!c->dead)
                (void)conn_flush(c);
out:
        if (!c->dead)
                conn_update_events(c);
}

static void on_conn(tend_watch *w, int fd, uint32_t revents, void *userdata) {
        struct conn *c = userdata;
        if ((revents & EPOLLOUT) && !conn_flush(c))
                return;
        if (!(revents & (EPOLLIN | EPOLLHUP | EPOLLERR)) || c->closing || c->eof)
                return;
        if (c->in_len >= CTL_LINE_MAX) {
                conn_update_events(c);
                return;
        }
        ssize_t n = io_read(c->fd, c->in + c->in_len, CTL_LINE_MAX - c->in_len);
        if (n < 0) {
                if (n == -EAGAIN)
                        return;
                conn_drop(c);
                return;
        }
        if (n == 0) {
                c->eof = true;
                if (c->waiting || c->follow_name) {
                        conn_drop(c); /* the peer left: nobody for the reply */
                        return;
                }
        }
        c->in_len += (size_t)n;
        conn_process(c);
}

/* The connection to close for a newcomer when the table is full (see the top), or NULL. */
static struct conn *conn_victim(struct control *ctl, bool newcomer_full) {
        struct conn *idle = NULL, *reader = NULL;
        for (struct conn *c = ctl->conns; c; c = c->next) {
                if (c->dead)
                        continue;
                if (!c->waiting && !c->follow_name) {
                        if (!idle || c->since < idle->since)
                                idle = c;
                } else if (!c->full && (!reader || c->since < reader->since)) {
                        reader = c;
                }
        }
        if (idle)
                return idle;
        return newcomer_full ? reader : NULL;
}

static void on_accept(tend_watch *w, int fd, uint32_t revents, void *userdata) {
        struct control *ctl = userdata;
        for (int i = 0; i < 16; i++) {
                int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (cfd < 0 && (errno == EMFILE || errno == ENFILE) && ctl->reserve_fd >= 0) {
                        /* Out of fds, the peer would stay in the backlog and the socket
                         * readable: the loop would spin. Give up the reserve fd to take the
                         * peer, tell it why, and close it. */
                        ctl->reserve_fd = io_close(ctl->reserve_fd);
                        cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                        if (cfd >= 0) {
                                static const char nofd[] =
                                        "{\"ok\":false,\"error\":\"the supervisor is out of file descriptors\"}\n";
                                (void)send(cfd, nofd, sizeof nofd - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
                                io_close(cfd);
                        }
                        ctl->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
                        if (cfd >= 0)
                                continue;
                }
                if (cfd < 0) {
                        if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED) {
                                /* Nothing to take the peer with (no reserve left): stop
                                 * listening rather than spin; a connection that ends
                                 * frees an fd and listening resumes. */
                                sv_say(ctl->sv, "control: cannot accept a connection: %s; "
                                                "not listening until a connection ends",
                                       strerror(errno));
                                (void)tend_watch_set_events(ctl->watch, 0);
                                ctl->paused = true;
                        }
                        return;
                }
                struct ucred cred;
                socklen_t cl = sizeof cred;
                if (getsockopt(cfd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) < 0) {
                        io_close(cfd);
                        continue;
                }
                bool full = cred.uid == 0 || cred.uid == geteuid();
                bool reader = false;
                if (!full && ctl->has_group) {
                        reader = cred.gid == ctl->group;
                        /* Supplementary groups (Linux 4.13): ERANGE tells the size. */
                        gid_t small[64], *groups = small;
                        socklen_t gl = sizeof small;
                        int r = reader ? -1 : getsockopt(cfd, SOL_SOCKET, SO_PEERGROUPS,
                                                         groups, &gl);
                        if (r < 0 && errno == ERANGE && gl <= 65536 * sizeof(gid_t) &&
                            (groups = malloc(gl)))
                                r = getsockopt(cfd, SOL_SOCKET, SO_PEERGROUPS, groups, &gl);
                        for (size_t k = 0; r == 0 && k < gl / sizeof(gid_t) && !reader; k++)
                                reader = groups[k] == ctl->group;
                        if (groups != small)
                                free(groups);
                }
                if (ctl->n_conns >= CTL_CONN_MAX && (full || reader)) {
                        struct conn *v = conn_victim(ctl, full);
                        if (v) {
                                sv_say(ctl->sv, "control: %u connections; closing the one of uid %u "
                                                "(pid %d) for a new one",
                                       (unsigned)CTL_CONN_MAX, (unsigned)v->uid, (int)v->pid);
                                send_error(v, NULL, "closed to make room for a new connection "
                                                    "(%u at most)", (unsigned)CTL_CONN_MAX);
                                conn_drop(v);
                        }
                }
                if (ctl->n_conns >= CTL_CONN_MAX) {
                        static const char busy[] =
                                "{\"ok\":false,\"error\":\"too many control connections\"}\n";
                        (void)send(cfd, busy, sizeof busy - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
                        io_close(cfd);
                        continue;
                }
                struct conn *c = calloc(1, sizeof *c);
                char *in = malloc(CTL_LINE_MAX);
                if (!c || !in || tend_watch_new(ctl->sv->loop, cfd, EPOLLIN, on_conn, c,
                                                &c->watch) < 0) {
                        free(c);
                        free(in);
                        io_close(cfd);
                        continue;
                }
                if (tend_timer_new(ctl->sv->loop, on_idle, c, &c->idle_timer) < 0) {
                        tend_watch_free(c->watch);
                        free(c);
                        free(in);
                        io_close(cfd);
                        continue;
                }
                c->ctl = ctl;
                c->fd = cfd;
                c->in = in;
                c->events = EPOLLIN;
                c->uid = cred.uid;
                c->pid = cred.pid;
                c->full = full;
                c->next = ctl->conns;
                ctl->conns = c;
                ctl->n_conns++;
                if (!c->full && !reader) {
                        sv_say(ctl->sv, "control: uid %u (pid %d) refused", (unsigned)cred.uid,
                               (int)cred.pid);
                        send_error(c, NULL, "permission denied: uid %u may not use this supervisor",
                                   (unsigned)cred.uid);
                        c->closing = true;
                        if (!c->dead)
                                conn_flush(c);
                        continue;
                }
                conn_idle_arm(c);
        }
}

/* ---- verbs ------------------------------------------------------------------------------------- */

static int state_from_name(const char *name) {
        for (int i = 0; i < SVC_STATE_COUNT; i++)
                if (!strcmp(svc_state_name((enum svc_state)i), name))
                        return i;
        return -1;
}

/* The services named in req's "names" (all of them when allowed and none is named). Returns
 * the count, or -1 after an error reply. */
static ssize_t collect_names(struct conn *c, json_t *req, json_t *id, bool all_if_none,
                             struct svc ***ret) {
        struct sv *sv = c->ctl->sv;
        json_t *names = json_object_get(req, "names");
        if (names && !json_is_array(names)) {
                send_error(c, id, "\"names\" must be an array of service names");
                return -1;
        }
        size_t n = names ? json_array_size(names) : 0;
        if (n == 0 && !all_if_none) {
                send_error(c, id, "which service? (\"names\" is empty)");
                return -1;
        }
        size_t count = n ? n : sv->n_svcs;
        struct svc **v = calloc(count ? count : 1, sizeof *v);
        if (!v) {
                send_error(c, id, "out of memory");
                return -1;
        }
        if (n == 0)
                for (size_t i = 0; i < count; i++)
                        v[i] = sv->svcs[i];
        for (size_t i = 0; i < n; i++) {
                const char *name = json_string_value(json_array_get(names, i));
                if (!name) {
                        free(v);
                        send_error(c, id, "\"names\" must be an array of service names");
                        return -1;
                }
                v[i] = sv_find(sv, name);
                if (!v[i]) {
                        send_error(c, id, "unknown service '%.100s'", name);
                        free(v);
                        return -1;
                }
        }
        *ret = v;
        return (ssize_t)count;
}

static void verb_status(struct conn *c, json_t *req, json_t *id) {
        struct svc **v;
        ssize_t n = collect_names(c, req, id, true, &v);
        if (n < 0)
                return;
        json_t *o = reply_new(id, true);
        json_t *a = json_array();
        for (ssize_t i = 0; i < n; i++)
                json_array_append_new(a, svc_status_json(v[i]));
        json_object_set_new(o, "services", a);
        free(v);
        conn_send(c, o);
        json_decref(o);
}

enum { DO_START, DO_STOP, DO_RESTART };

static void verb_startstop(struct conn *c, json_t *req, json_t *id, int what) {
        struct sv *sv = c->ctl->sv;
        if (sv->shutting_down && what != DO_STOP) {
                send_error(c, id, "the supervisor is shutting down");
                return;
        }
        struct svc **v;
        ssize_t n = collect_names(c, req, id, false, &v);
        if (n < 0)
                return;
        char cause[64];
        static const char *const verbs[] = { "start", "stop", "restart" };
        snprintf(cause, sizeof cause, "tend ctl %s (uid %u)", verbs[what], (unsigned)c->uid);
        /* Names, not pointers: an event may retire a service (a reload waiting for it to
         * be down), and the collector frees it only at the next turn of the loop. */
        for (ssize_t i = 0; i < n; i++) {
                struct svc *s = v[i];
                if (what == DO_STOP) {
                        svc_post(s, SVC_EV_STOP, cause);
                } else if (what == DO_START) {
                        svc_post(s, SVC_EV_START, cause);
                } else {
                        if (svc_is_up(&s->m) || s->m.state == SVC_STARTING ||
                            s->m.state == SVC_STOPPING)
                                svc_post(s, SVC_EV_STOP, cause);
                        svc_post(s, SVC_EV_START, cause);
                }
        }
        json_t *o = reply_new(id, true);
        json_t *a = json_array();
        for (ssize_t i = 0; i < n; i++) {
                json_t *e = json_object();
                json_object_set_new(e, "name", json_string(v[i]->cfg->name));
                json_object_set_new(e, "state", json_string(svc_state_name(v[i]->m.state)));
                json_array_append_new(a, e);
        }
        json_object_set_new(o, "services", a);
        free(v);
        conn_send(c, o);
        json_decref(o);
        sv_settle(sv);
}

static void verb_signal(struct conn *c, json_t *req, json_t *id) {
        const char *name = json_string_value(json_object_get(req, "name"));
        json_t *sj = json_object_get(req, "signal");
        if (!name || !sj) {
                send_error(c, id, "signal wants \"name\" and \"signal\"");
                return;
        }
        struct svc *s = sv_find(c->ctl->sv, name);
        if (!s) {
                send_error(c, id, "unknown service '%.100s'", name);
                return;
        }
        int signo = -EINVAL;
        if (json_is_string(sj))
                signo = tend_signal_from_name(json_string_value(sj));
        else if (json_is_integer(sj) && json_integer_value(sj) > 0 &&
                 json_integer_value(sj) < 65)
                signo = (int)json_integer_value(sj);
        if (signo <= 0 || signo > 64) {
                send_error(c, id, "unknown signal");
                return;
        }
        bool all = json_is_true(json_object_get(req, "all"));
        int e;
        if (all) {
                e = tend_group_signal(s->group, signo);
        } else if (s->main && !s->main_exited) {
                e = tend_proc_signal(s->main, signo);
        } else {
                send_error(c, id, "service '%s' has no main process (it is %s)", name,
                           svc_state_name(s->m.state));
                return;
        }
        if (e < 0) {
                send_error(c, id, "cannot signal '%s': %s", name, tend_strerror(e));
                return;
        }
        json_t *o = reply_new(id, true);
        json_object_set_new(o, "signal", json_string(tend_signal_name(signo)));
        if (!all)
                json_object_set_new(o, "pid", json_integer(s->main_pid));
        conn_send(c, o);
        json_decref(o);
}

static void verb_reload(struct conn *c, json_t *id) {
        char msg[256];
        int e = sv_reload(c->ctl->sv, msg, sizeof msg);
        if (e < 0) {
                send_error(c, id, "%s", msg);
                return;
        }
        json_t *o = reply_new(id, true);
        json_object_set_new(o, "message", json_string(msg));
        conn_send(c, o);
        json_decref(o);
        sv_settle(c->ctl->sv);
}

static void verb_shutdown(struct conn *c, json_t *id) {
        json_t *o = reply_new(id, true);
        conn_send(c, o);
        json_decref(o);
        char why[64];
        snprintf(why, sizeof why, "tend ctl shutdown, uid %u", (unsigned)c->uid);
        sv_shutdown(c->ctl->sv, why);
}

static void wait_reply(struct conn *c, struct svc *s, bool ok, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));
static void wait_reply(struct conn *c, struct svc *s, bool ok, const char *fmt, ...) {
        /* The text first: its arguments may point into the wait that ends here. */
        char text[400];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(text, sizeof text, fmt, ap);
        va_end(ap);
        json_t *id = json_incref(c->wait_id);
        wait_end(c);
        if (ok) {
                json_t *o = reply_new(id, true);
                json_object_set_new(o, "service", svc_status_json(s));
                conn_send(c, o);
                json_decref(o);
        } else {
                send_error(c, id, "%s", text);
        }
        json_decref(id);
        conn_idle_arm(c); /* the wait's end counts as its request's */
        /* Requests sent after the wait go on at the next turn of the loop. */
        c->resume = true;
        tend_timer_start(c->ctl->kick, 0);
}

static void on_wait_timeout(tend_timer *t, void *userdata) {
        struct conn *c = userdata;
        struct svc *s = sv_find(c->ctl->sv, c->wait_name);
        char d[32];
        snprintf(d, sizeof d, "%.3gs", (double)c->wait_usec / 1e6);
        wait_reply(c, s, false, "timeout: '%s' did not become %s within %s (it is %s)",
                   c->wait_name, svc_state_name(c->wait_state), d,
                   s ? svc_state_name(s->m.state) : "gone");
}

static void verb_wait(struct conn *c, json_t *req, json_t *id) {
        const char *name = json_string_value(json_object_get(req, "name"));
        const char *state = json_string_value(json_object_get(req, "state"));
        json_t *tj = json_object_get(req, "timeout");
        if (!name || !state) {
                send_error(c, id, "wait wants \"name\" and \"state\"");
                return;
        }
        struct svc *s = sv_find(c->ctl->sv, name);
        if (!s) {
                send_error(c, id, "unknown service '%.100s'", name);
                return;
        }
        int st = state_from_name(state);
        if (st < 0) {
                send_error(c, id, "unknown state '%.40s' (stopped, starting, running, reloading, stopping, backoff, failed)",
                           state);
                return;
        }
        if (tj && !json_is_null(tj) && (!json_is_number(tj) || json_number_value(tj) < 0 ||
                                        json_number_value(tj) > 1e9)) {
                send_error(c, id, "\"timeout\" must be a number of seconds");
                return;
        }
        if (s->m.state == (enum svc_state)st) {
                json_t *o = reply_new(id, true);
                json_object_set_new(o, "service", svc_status_json(s));
                conn_send(c, o);
                json_decref(o);
                return;
        }
        if (s->m.state == SVC_FAILED) {
                /* It will not get there by itself: `start` first. */
                send_error(c, id, "service '%s' failed: %s", name,
                           s->m.reason[0] ? s->m.reason : "-");
                return;
        }
        char *nm = strdup(name);
        if (!nm || (!c->wait_timer &&
                    tend_timer_new(c->ctl->sv->loop, on_wait_timeout, c, &c->wait_timer) < 0)) {
                free(nm);
                send_error(c, id, "out of memory");
                return;
        }
        c->waiting = true;
        c->ctl->n_waiting++;
        c->wait_name = nm;
        c->wait_state = (enum svc_state)st;
        c->wait_id = json_incref(id);
        c->wait_usec = 0;
        if (tj && json_is_number(tj)) {
                c->wait_usec = (uint64_t)(json_number_value(tj) * 1e6);
                tend_timer_start(c->wait_timer, c->wait_usec);
        }
}

void control_on_transition(struct sv *sv, struct svc *s) {
        struct control *ctl = sv->control;
        if (!ctl || !ctl->n_waiting)
                return;
        for (struct conn *c = ctl->conns; c; c = c->next) {
                if (c->dead || !c->waiting || strcmp(c->wait_name, s->cfg->name))
                        continue;
                if (s->m.state == c->wait_state)
                        wait_reply(c, s, true, " ");
                else if (s->m.state == SVC_FAILED)
                        wait_reply(c, s, false, "service '%s' failed: %s", s->cfg->name,
                                   s->m.reason[0] ? s->m.reason : "-");
        }
}

void control_on_removed(struct sv *sv, const char *name) {
        struct control *ctl = sv->control;
        if (!ctl || !(ctl->n_waiting || ctl->n_following))
                return;
        for (struct conn *c = ctl->conns; c; c = c->next) {
                if (c->dead)
                        continue;
                if (c->waiting && !strcmp(c->wait_name, name))
                        wait_reply(c, NULL, false, "service '%s' was removed by a reload", name);
                if (c->follow_name && !strcmp(c->follow_name, name)) {
                        json_t *o = reply_new(NULL, true);
                        json_object_set_new(o, "end", json_string("the service was removed by a reload"));
                        conn_send(c, o);
                        json_decref(o);
                        if (!c->dead) {
                                c->closing = true;
                                conn_flush(c);
                        }
                }
        }
}

/* The last lines of one log file. */
struct tail_part {
        char *buf;
        size_t start, end; /* the lines: buf[start, end), each ending in '\n' but the last */
        long lines;
};

/* The last n lines (at most) of the file at path, reading at most *budget bytes from its
 * end (then less what was read). Returns the number of lines, -ENOENT when there is no such
 * file, or -errno. */
static long tail_file(const char *path, long n, size_t *budget, struct tail_part *out) {
        *out = (struct tail_part){ 0 };
        int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        if (fd < 0)
                return -errno;
        struct stat st;
        if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
                io_close(fd);
                return -EINVAL;
        }
        off_t size = st.st_size;
        size_t want = size > (off_t)*budget ? *budget : (size_t)size;
        char *buf = malloc(want + 1);
        if (!buf) {
                io_close(fd);
                return -ENOMEM;
        }
        ssize_t got = pread(fd, buf, want, size - (off_t)want);
        io_close(fd);
        if (got < 0) {
                free(buf);
                return -errno;
        }
        *budget -= (size_t)got;
        size_t len = (size_t)got;
        /* Lines end with '\n'; start after the n+1-th newline from the end. */
        size_t end = len;
        if (end > 0 && buf[end - 1] == '\n')
                end--;
        size_t start = end;
        long lines = 0;
        while (start > 0 && lines < n) {
                if (buf[start - 1] == '\n')
                        lines++;
                if (lines < n)
                        start--;
        }
        if (start == 0 && want < (size_t)size) {
                /* The first line is cut by the read limit: skip it. */
                char *nl = memchr(buf, '\n', end);
                start = nl ? (size_t)(nl - buf) + 1 : end;
        }
        long count = 0;
        for (size_t p = start; p < end; count++) {
                char *nl = memchr(buf + p, '\n', end - p);
                p = nl ? (size_t)(nl - buf) + 1 : end;
        }
        *out = (struct tail_part){ .buf = buf, .start = start, .end = end, .lines = count };
        return count;
}

/* The last n lines of the log at path, reading back through its rotated files (path.1, the
 * newest, to path.keep) when the current one has fewer, as {"log": line} replies from the
 * oldest line to the newest. At most CTL_LOG_READ_MAX bytes are read in all. Nothing else
 * writes or rotates the files meanwhile: the supervisor does both, in this same loop.
 * Returns the count sent or -errno. */
static long send_tail(struct conn *c, const char *path, unsigned keep, long n) {
        size_t nparts = (size_t)keep + 1;
        struct tail_part *parts = calloc(nparts, sizeof *parts);
        size_t plen = strlen(path) + 16;
        char *name = malloc(plen);
        if (!parts || !name) {
                free(parts);
                free(name);
                return -ENOMEM;
        }
        size_t budget = CTL_LOG_READ_MAX, used = 0;
        long have = 0, err = 0;
        for (size_t i = 0; i < nparts && have < n && budget > 0; i++) {
                if (i == 0)
                        snprintf(name, plen, "%s", path);
                else
                        snprintf(name, plen, "%s.%zu", path, i);
                long r = tail_file(name, n - have, &budget, &parts[i]);
                if (r == -ENOENT)
                        break; /* no such file: nothing older either */
                if (r < 0) {
                        if (i == 0)
                                err = r;
                        break;
                }
                used = i + 1;
                have += r;
        }
        long sent = 0;
        for (size_t i = used; i-- > 0 && !err;) {
                struct tail_part *t = &parts[i];
                for (size_t p = t->start; p < t->end;) {
                        char *nl = memchr(t->buf + p, '\n', t->end - p);
                        size_t e = nl ? (size_t)(nl - t->buf) : t->end;
                        json_t *o = json_object();
                        json_object_set_new(o, "log", text_json(t->buf + p, e - p));
                        bool alive = conn_send(c, o);
                        json_decref(o);
                        if (!alive) {
                                err = -EPIPE;
                                break;
                        }
                        sent++;
                        p = e + 1;
                }
        }
        for (size_t i = 0; i < nparts; i++)
                free(parts[i].buf);
        free(parts);
        free(name);
        if (err == -EPIPE)
                return sent;
        return err < 0 ? err : sent;
}

static void verb_logs(struct conn *c, json_t *req, json_t *id) {
        const char *name = json_string_value(json_object_get(req, "name"));
        if (!name) {
                send_error(c, id, "logs wants \"name\"");
                return;
        }
        struct svc *s = sv_find(c->ctl->sv, name);
        if (!s) {
                send_error(c, id, "unknown service '%.100s'", name);
                return;
        }
        json_t *lj = json_object_get(req, "lines");
        long n = 10;
        if (lj) {
                if (!json_is_integer(lj) || json_integer_value(lj) < 0) {
                        send_error(c, id, "\"lines\" must be a number of lines");
                        return;
                }
                n = json_integer_value(lj) > CTL_LOG_LINES_MAX ? CTL_LOG_LINES_MAX
                                                               : (long)json_integer_value(lj);
        }
        bool follow = json_is_true(json_object_get(req, "follow"));
        enum svc_log kind = logger_kind(s->log);
        const char *path = logger_path(s->log);
        if (kind == SVC_LOG_NONE) {
                send_error(c, id, "service '%s' keeps no log: its output is discarded (log = none)",
                           name);
                return;
        }
        if (kind == SVC_LOG_INHERIT && !follow) {
                send_error(c, id, "service '%s' keeps no log to read back: its output goes to the "
                                  "supervisor's standard output and error (log = inherit); "
                                  "--follow shows its new lines", name);
                return;
        }
        char *fname = follow ? strdup(name) : NULL;
        if (follow && !fname) {
                send_error(c, id, "out of memory");
                return;
        }
        /* log = inherit keeps no history: following starts with the next line. */
        long sent = n && kind == SVC_LOG_FILE && path ? send_tail(c, path, logger_keep(s->log), n)
                                                      : 0;
        if (c->dead) {
                free(fname);
                return;
        }
        if (sent < 0) {
                send_error(c, id, "cannot read '%s': %s", path, strerror((int)-sent));
                free(fname);
                return;
        }
        json_t *o = reply_new(id, true);
        json_object_set_new(o, "lines", json_integer(sent));
        json_object_set_new(o, "path", path ? json_string(path) : json_null());
        json_object_set_new(o, "following", json_boolean(fname != NULL));
        bool alive = conn_send(c, o);
        json_decref(o);
        if (alive && fname) {
                c->follow_name = fname;
                c->ctl->n_following++;
        } else {
                free(fname);
        }
}

bool control_has_followers(const struct sv *sv) {
        return sv->control && sv->control->n_following;
}

void control_on_log_line(struct sv *sv, const char *name, const char *head, size_t head_len,
                         const char *data, size_t len) {
        struct control *ctl = sv->control;
        if (!ctl || !ctl->n_following)
                return;
        if (len && data[len - 1] == '\n')
                len--;
        for (struct conn *c = ctl->conns; c; c = c->next) {
                if (c->dead || !c->follow_name || strcmp(c->follow_name, name))
                        continue;
                char *line = malloc(head_len + len);
                if (!line)
                        continue;
                memcpy(line, head, head_len);
                memcpy(line + head_len, data, len);
                json_t *o = json_object();
                json_object_set_new(o, "log", text_json(line, head_len + len));
                free(line);
                conn_send(c, o);
                json_decref(o);
        }
}

static bool handle_line(struct conn *c, const char *line, size_t len) {
        size_t k = 0;
        while (k < len && (line[k] == ' ' || line[k] == '\t' || line[k] == '\r'))
                k++;
        if (k == len)
                return true; /* an empty line: nothing asked */
        if (c->follow_name) {
                send_error(c, NULL, "no request is taken while logs are followed");
                return false;
        }
        json_error_t err;
        json_t *req = json_loadb(line, len, JSON_REJECT_DUPLICATES, &err);
        if (!req) {
                send_error(c, NULL, "malformed request: %s (column %d)", err.text, err.column);
                return false;
        }
        json_t *id = json_object_get(req, "id");
        const char *verb = json_is_object(req) ? json_string_value(json_object_get(req, "verb"))
                                               : NULL;
        if (!verb) {
                send_error(c, json_is_object(req) ? id : NULL,
                           "malformed request: want an object with a \"verb\"");
                json_decref(req);
                return false;
        }
        bool reading = !strcmp(verb, "status") || !strcmp(verb, "wait");
        static const char *const known[] = { "status", "start", "stop", "restart", "signal",
                                             "reload", "wait", "logs", "shutdown" };
        bool is_known = false;
        for (size_t i = 0; i < ARRAY_SIZE(known); i++)
                is_known |= !strcmp(verb, known[i]);
        if (!is_known)
                send_error(c, id, "unknown verb '%.40s'", verb);
        else if (!c->full && !reading)
                send_error(c, id, "permission denied: uid %u may only read status",
                           (unsigned)c->uid);
        else if (!strcmp(verb, "status"))
                verb_status(c, req, id);
        else if (!strcmp(verb, "start"))
                verb_startstop(c, req, id, DO_START);
        else if (!strcmp(verb, "stop"))
                verb_startstop(c, req, id, DO_STOP);
        else if (!strcmp(verb, "restart"))
                verb_startstop(c, req, id, DO_RESTART);
        else if (!strcmp(verb, "signal"))
                verb_signal(c, req, id);
        else if (!strcmp(verb, "reload"))
                verb_reload(c, id);
        else if (!strcmp(verb, "wait"))
                verb_wait(c, req, id);
        else if (!strcmp(verb, "logs"))
                verb_logs(c, req, id);
        else if (!strcmp(verb, "shutdown"))
                verb_shutdown(c, id);
        json_decref(req);
        return true;
}

/* ---- the socket ---------------------------------------------------------------------------- */

static void on_kick(tend_timer *t, void *userdata) {
        struct control *ctl = userdata;
        for (struct conn **pp = &ctl->conns; *pp;) {
                struct conn *c = *pp;
                if (c->dead) {
                        *pp = c->next;
                        conn_free(c);
                        continue;
                }
                pp = &c->next;
        }
        for (struct conn *c = ctl->conns; c; c = c->next)
                if (c->resume && !c->dead) {
                        c->resume = false;
                        conn_process(c);
                }
        /* A request handled just now may have dropped a connection. */
        for (struct conn *c = ctl->conns; c; c = c->next)
                if (c->dead) {
                        tend_timer_start(t, 0);
                        break;
                }
}

int control_open(struct sv *sv, const char *path, const char *group, char *err,
                 size_t err_size) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        if (strlen(path) >= sizeof sa.sun_path) {
                snprintf(err, err_size, "control socket path '%s' is too long", path);
                return -ENAMETOOLONG;
        }
        strcpy(sa.sun_path, path);
        struct control *ctl = calloc(1, sizeof *ctl);
        if (!ctl || !(ctl->path = strdup(path))) {
                free(ctl);
                snprintf(err, err_size, "out of memory");
                return -ENOMEM;
        }
        ctl->sv = sv;
        ctl->fd = -1;
        ctl->idle_usec = sv->control_idle_usec;
        ctl->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        int e = 0;
        if (group) {
                gid_t gid;
                char *end;
                unsigned long g = strtoul(group, &end, 10);
                if (account_group_by_name(group, &gid) == 0) {
                        ctl->group = gid;
                } else if (*group && !*end) {
                        ctl->group = (gid_t)g;
                } else {
                        snprintf(err, err_size, "unknown group '%s' for --control-group", group);
                        e = -ENOENT;
                        goto fail;
                }
                ctl->has_group = true;
        }
        ctl->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (ctl->fd < 0) {
                e = -errno;
                snprintf(err, err_size, "cannot make the control socket: %s", strerror(errno));
                goto fail;
        }
        /* A socket left by a supervisor that died is replaced; a live one is not. */
        struct stat st;
        if (lstat(path, &st) == 0) {
                if (!S_ISSOCK(st.st_mode)) {
                        snprintf(err, err_size, "'%s' exists and is not a socket", path);
                        e = -EEXIST;
                        goto fail;
                }
                int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
                bool live = probe >= 0 && connect(probe, (struct sockaddr *)&sa, sizeof sa) == 0;
                io_close(probe);
                if (live) {
                        snprintf(err, err_size, "another supervisor listens on '%s' (give another path with --control)",
                                 path);
                        e = -EADDRINUSE;
                        goto fail;
                }
                (void)unlink(path);
        }
        /* Made with no permission for others from the start; chmod only widens it for the
         * group. */
        mode_t old = umask(0177);
        int r = bind(ctl->fd, (struct sockaddr *)&sa, sizeof sa);
        int bind_errno = errno;
        umask(old);
        if (r < 0) {
                e = -bind_errno;
                snprintf(err, err_size, "cannot bind the control socket '%s': %s", path,
                         strerror(bind_errno));
                goto fail;
        }
        if (lstat(path, &st) == 0) {
                ctl->dev = st.st_dev;
                ctl->ino = st.st_ino;
        }
        if (ctl->has_group && (chown(path, (uid_t)-1, ctl->group) < 0 || chmod(path, 0660) < 0)) {
                e = -errno;
                snprintf(err, err_size, "cannot give the control socket '%s' to group '%s': %s",
                         path, group, strerror(errno));
                goto fail_unlink;
        }
        e = listen(ctl->fd, 32) < 0 ? -errno : 0;
        if (e == 0)
                e = tend_watch_new(sv->loop, ctl->fd, EPOLLIN, on_accept, ctl, &ctl->watch);
        if (e == 0)
                e = tend_timer_new(sv->loop, on_kick, ctl, &ctl->kick);
        if (e < 0) {
                snprintf(err, err_size, "cannot listen on the control socket '%s': %s", path,
                         tend_strerror(e));
                goto fail_unlink;
        }
        sv->control = ctl;
        return 0;
fail_unlink:
        (void)unlink(path);
fail:
        ctl->watch = tend_watch_free(ctl->watch);
        io_close(ctl->fd);
        io_close(ctl->reserve_fd);
        free(ctl->path);
        free(ctl);
        return e;
}

void control_free(struct sv *sv) {
        struct control *ctl = sv->control;
        if (!ctl)
                return;
        sv->control = NULL;
        while (ctl->conns) {
                struct conn *c = ctl->conns;
                ctl->conns = c->next;
                if (!c->dead) {
                        (void)conn_flush(c); /* the last replies (shutdown), if they fit */
                        conn_drop(c);
                }
                conn_free(c);
        }
        tend_timer_free(ctl->kick);
        tend_watch_free(ctl->watch);
        io_close(ctl->fd);
        io_close(ctl->reserve_fd);
        /* Only our own socket: a successor may have taken the path. */
        struct stat st;
        if (lstat(ctl->path, &st) == 0 && st.st_dev == ctl->dev && st.st_ino == ctl->ino)
                (void)unlink(ctl->path);
        free(ctl->path);
        free(ctl);
}

/* ---- fuzzing ------------------------------------------------------------------------------- */

/* For fuzz/fuzz_control.c (not used by tend itself): handle data as if a peer had sent it on
 * one connection — with every right when full, else as a reader — in pieces of at most chunk
 * bytes (0: all at once), then closed its end. A wait that holds the requests times out at
 * once, so what follows it is handled too. Replies are read and dropped. Returns the number
 * of reply bytes. */
size_t control_feed(struct sv *sv, const char *data, size_t len, size_t chunk, bool full);

static size_t feed_drain(int fd) {
        char buf[4096];
        size_t total = 0;
        ssize_t n;
        while ((n = read(fd, buf, sizeof buf)) > 0)
                total += (size_t)n;
        return total;
}

size_t control_feed(struct sv *sv, const char *data, size_t len, size_t chunk, bool full) {
        int sp[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sp) < 0)
                return 0;
        struct control ctl = { .sv = sv, .fd = -1, .reserve_fd = -1 };
        struct conn *c = calloc(1, sizeof *c);
        char *in = malloc(CTL_LINE_MAX);
        size_t replies = 0;
        if (!c || !in || tend_timer_new(sv->loop, on_kick, &ctl, &ctl.kick) < 0 ||
            tend_watch_new(sv->loop, sp[0], EPOLLIN, on_conn, c, &c->watch) < 0) {
                free(c);
                free(in);
                tend_timer_free(ctl.kick);
                io_close(sp[0]);
                io_close(sp[1]);
                return 0;
        }
        c->ctl = &ctl;
        c->fd = sp[0];
        c->in = in;
        c->events = EPOLLIN;
        c->uid = geteuid();
        c->pid = getpid();
        c->full = full;
        ctl.conns = c;
        ctl.n_conns = 1;
        struct control *saved = sv->control;
        sv->control = &ctl;
        if (!chunk)
                chunk = len ? len : 1;
        size_t off = 0;
        for (;;) {
                while (c->waiting && !c->dead)
                        on_wait_timeout(c->wait_timer, c);
                if (c->resume && !c->dead) {
                        c->resume = false;
                        conn_process(c);
                        continue;
                }
                if (c->dead || c->closing || c->eof)
                        break;
                size_t room = CTL_LINE_MAX - c->in_len;
                size_t n = len - off < chunk ? len - off : chunk;
                if (n > room)
                        n = room;
                if (n == 0)
                        c->eof = off == len;
                if (n)
                        memcpy(c->in + c->in_len, data + off, n);
                c->in_len += n;
                off += n;
                conn_process(c);
                replies += feed_drain(sp[1]);
                if (n == 0 && !c->eof)
                        break; /* a full buffer that conn_process left alone */
        }
        replies += feed_drain(sp[1]);
        if (!c->dead)
                conn_drop(c);
        sv->control = saved;
        conn_free(c);
        tend_timer_free(ctl.kick);
        io_close(sp[1]);
        return replies;
}
