/* launch_proto.c — frames, tokens, the handshake and the connection of `tend launch`
 * (doc/launch.md, "The callback", "Frames", "Lifeline").
 *
 * A connection reads into one buffer that holds exactly one largest frame (header + 64 KiB),
 * so a peer can never make us hold more than that per connection, and writes through a
 * queue bounded at LP_QUEUE_MAX. Callbacks may free the connection: the free is deferred
 * until the dispatch that called them returns. */
#include "launch_proto.h"
#include "internal.h"

#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

static const char *const type_names[] = {
        [LP_HELLO] = "HELLO",     [LP_CHALLENGE] = "CHALLENGE", [LP_PROOF] = "PROOF",
        [LP_START] = "START",     [LP_GO] = "GO",               [LP_ABORT] = "ABORT",
        [LP_REFUSED] = "REFUSED", [LP_STARTED] = "STARTED",     [LP_OUT] = "OUT",
        [LP_EXIT] = "EXIT",       [LP_FAILED] = "FAILED",       [LP_LOST] = "LOST",
        [LP_CONNECTED] = "CONNECTED", [LP_HEARTBEAT] = "HEARTBEAT", [LP_SIGNAL] = "SIGNAL",
        [LP_DONE] = "DONE",
};

const char *lp_type_name(int type) {
        if (type >= 1 && type <= LP_TYPE_MAX)
                return type_names[type];
        return "?";
}

static void put32(uint8_t *p, uint32_t v) {
        p[0] = (uint8_t)(v >> 24);
        p[1] = (uint8_t)(v >> 16);
        p[2] = (uint8_t)(v >> 8);
        p[3] = (uint8_t)v;
}

static uint32_t get32(const uint8_t *p) {
        return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

void lp_header_encode(uint8_t hdr[LP_HDR], int type, int stream, uint32_t host, uint32_t len) {
        hdr[0] = (uint8_t)type;
        hdr[1] = (uint8_t)stream;
        hdr[2] = hdr[3] = 0;
        put32(hdr + 4, host);
        put32(hdr + 8, len);
}

int lp_header_decode(const uint8_t hdr[LP_HDR], uint32_t max_payload, struct lp_frame *ret,
                     const char **ret_why) {
        if (hdr[0] < 1 || hdr[0] > LP_TYPE_MAX) {
                *ret_why = "unknown frame type";
                return -EPROTO;
        }
        if (hdr[2] || hdr[3]) {
                *ret_why = "reserved bytes not zero";
                return -EPROTO;
        }
        uint32_t len = get32(hdr + 8);
        if (len > max_payload || len > LP_MAX_PAYLOAD) {
                *ret_why = "frame too long";
                return -EPROTO;
        }
        ret->type = hdr[0];
        ret->stream = hdr[1];
        ret->host = get32(hdr + 4);
        ret->len = len;
        ret->payload = NULL;
        return 0;
}

/* ---- tokens and handshake ------------------------------------------------------------ */

static void mac(const uint8_t key[LP_KEY], const char *label, uint32_t index,
                const uint8_t *a, size_t alen, const uint8_t *b, size_t blen,
                uint8_t out[LP_KEY]) {
        crypto_auth_hmacsha256_state st;
        uint8_t idx[4];
        put32(idx, index);
        crypto_auth_hmacsha256_init(&st, key, LP_KEY);
        crypto_auth_hmacsha256_update(&st, (const uint8_t *)label, strlen(label));
        crypto_auth_hmacsha256_update(&st, idx, 4);
        if (alen)
                crypto_auth_hmacsha256_update(&st, a, alen);
        if (blen)
                crypto_auth_hmacsha256_update(&st, b, blen);
        crypto_auth_hmacsha256_final(&st, out);
        sodium_memzero(&st, sizeof st);
}

void lp_token(const uint8_t secret[LP_KEY], uint32_t index, const char *host,
              uint8_t ret_token[LP_KEY]) {
        mac(secret, "tend-launch token", index, (const uint8_t *)host, strlen(host), NULL, 0,
            ret_token);
}

void lp_key_to_base64(const uint8_t key[LP_KEY], char out[64]) {
        sodium_bin2base64(out, 64, key, LP_KEY, sodium_base64_VARIANT_ORIGINAL);
}

int lp_key_from_base64(const char *text, uint8_t ret_key[LP_KEY]) {
        uint8_t buf[LP_KEY];
        size_t len = 0;
        const char *end = NULL;
        if (sodium_base642bin(buf, sizeof buf, text, strlen(text), NULL, &len, &end,
                              sodium_base64_VARIANT_ORIGINAL) != 0 ||
            len != LP_KEY || *end)
                return -EINVAL;
        memcpy(ret_key, buf, LP_KEY);
        return 0;
}

void lp_hello_make(uint8_t ret_nonce_a[LP_KEY], uint8_t payload[LP_HELLO_LEN]) {
        randombytes_buf(ret_nonce_a, LP_KEY);
        put32(payload, LP_VERSION);
        memcpy(payload + 4, ret_nonce_a, LP_KEY);
}

int lp_hello_read(const uint8_t *payload, size_t len, uint8_t ret_nonce_a[LP_KEY]) {
        if (len != LP_HELLO_LEN || get32(payload) != LP_VERSION)
                return -EPROTO;
        memcpy(ret_nonce_a, payload + 4, LP_KEY);
        return 0;
}

void lp_challenge_make(const uint8_t token[LP_KEY], uint32_t index,
                       const uint8_t nonce_a[LP_KEY], uint8_t ret_nonce_l[LP_KEY],
                       uint8_t payload[LP_CHALLENGE_LEN]) {
        randombytes_buf(ret_nonce_l, LP_KEY);
        memcpy(payload, ret_nonce_l, LP_KEY);
        mac(token, "tend-launch L", index, nonce_a, LP_KEY, ret_nonce_l, LP_KEY,
            payload + LP_KEY);
}

int lp_challenge_answer(const uint8_t token[LP_KEY], uint32_t index,
                        const uint8_t nonce_a[LP_KEY], const uint8_t *payload, size_t len,
                        uint8_t ret_proof[LP_KEY]) {
        if (len != LP_CHALLENGE_LEN)
                return -EPROTO;
        uint8_t want[LP_KEY];
        mac(token, "tend-launch L", index, nonce_a, LP_KEY, payload, LP_KEY, want);
        if (crypto_verify_32(want, payload + LP_KEY) != 0)
                return -EACCES;
        mac(token, "tend-launch A", index, nonce_a, LP_KEY, payload, LP_KEY, ret_proof);
        return 0;
}

int lp_proof_check(const uint8_t token[LP_KEY], uint32_t index, const uint8_t nonce_a[LP_KEY],
                   const uint8_t nonce_l[LP_KEY], const uint8_t *payload, size_t len) {
        if (len != LP_KEY)
                return -EPROTO;
        uint8_t want[LP_KEY];
        mac(token, "tend-launch A", index, nonce_a, LP_KEY, nonce_l, LP_KEY, want);
        return crypto_verify_32(want, payload) == 0 ? 0 : -EACCES;
}

/* ---- connection ---------------------------------------------------------------------- */

struct lp_conn {
        tend_loop *loop;
        int fd;
        tend_watch *watch;
        const struct lp_conn_ops *ops;
        void *userdata;
        char peer[64];

        uint8_t rbuf[LP_HDR + LP_MAX_PAYLOAD];
        size_t rlen;
        uint32_t max_payload;
        bool read_paused;
        bool read_eof;

        uint8_t *wbuf;
        size_t whead, wlen, wcap;
        bool congested;
        bool want_empty;

        tend_timer *hb_send, *hb_recv, *resume;
        uint64_t hb_usec;
        bool hb_usec_send_off; /* shut down for writing: no more heartbeats */

        bool failed;   /* closed callback called (or due) */
        int depth;     /* callbacks running */
        bool freed;    /* lp_conn_free called during a callback */
};

static void conn_update_watch(struct lp_conn *c);

static void conn_release(struct lp_conn *c) {
        tend_watch_free(c->watch);
        tend_timer_free(c->hb_send);
        tend_timer_free(c->hb_recv);
        tend_timer_free(c->resume);
        io_close(c->fd);
        free(c->wbuf);
        free(c);
}

struct lp_conn *lp_conn_free(struct lp_conn *c) {
        if (!c)
                return NULL;
        if (c->depth > 0) {
                /* Inside one of our callbacks: stop everything now, free on the way out. */
                c->freed = true;
                c->failed = true;
                c->watch = tend_watch_free(c->watch);
                tend_timer_stop(c->hb_send);
                tend_timer_stop(c->hb_recv);
                tend_timer_stop(c->resume);
                return NULL;
        }
        conn_release(c);
        return NULL;
}

/* Enter/leave a callback region; leave returns false when the connection is gone. */
static void enter(struct lp_conn *c) {
        c->depth++;
}

static bool leave(struct lp_conn *c) {
        if (--c->depth == 0 && c->freed) {
                conn_release(c);
                return false;
        }
        return !c->freed;
}

static void conn_fail(struct lp_conn *c, int err, const char *why) {
        if (c->failed)
                return;
        c->failed = true;
        c->watch = tend_watch_free(c->watch);
        tend_timer_stop(c->hb_send);
        tend_timer_stop(c->hb_recv);
        tend_timer_stop(c->resume);
        c->whead = c->wlen = 0;
        if (c->ops->closed)
                c->ops->closed(c, err, why, c->userdata);
}

static void hb_recv_arm(struct lp_conn *c) {
        if (c->hb_usec && !c->read_paused && !c->failed)
                tend_timer_start(c->hb_recv, 3 * c->hb_usec);
        else
                tend_timer_stop(c->hb_recv);
}

/* Hand every whole frame in the buffer to the owner. */
static void conn_dispatch(struct lp_conn *c) {
        size_t off = 0;
        while (!c->read_paused && !c->failed && c->rlen - off >= LP_HDR) {
                struct lp_frame f;
                const char *why = NULL;
                int e = lp_header_decode(c->rbuf + off, c->max_payload, &f, &why);
                if (e < 0) {
                        char text[96];
                        snprintf(text, sizeof text, "%s (type %u, length %u)", why,
                                 c->rbuf[off], get32(c->rbuf + off + 8));
                        conn_fail(c, e, text);
                        return;
                }
                if (c->rlen - off - LP_HDR < f.len)
                        break;
                f.payload = c->rbuf + off + LP_HDR;
                off += LP_HDR + f.len;
                hb_recv_arm(c);
                c->ops->frame(c, &f, c->userdata);
                if (c->freed)
                        return;
        }
        if (off > 0) {
                memmove(c->rbuf, c->rbuf + off, c->rlen - off);
                c->rlen -= off;
        }
        if (c->read_eof && !c->read_paused && !c->failed) {
                if (c->rlen > 0)
                        conn_fail(c, -EPROTO, "connection closed inside a frame");
                else
                        conn_fail(c, 0, "connection closed");
        }
}

static void conn_read(struct lp_conn *c) {
        if (c->rlen == sizeof c->rbuf)
                return; /* cannot happen: a whole frame is always dispatched */
        ssize_t n = io_read(c->fd, c->rbuf + c->rlen, sizeof c->rbuf - c->rlen);
        if (n == -EAGAIN)
                return;
        if (n < 0) {
                char text[96];
                snprintf(text, sizeof text, "read error: %s", strerror((int)-n));
                conn_fail(c, (int)n, text);
                return;
        }
        if (n == 0) {
                c->read_eof = true;
                /* The peer is done sending, which in this protocol means done: whatever
                 * we still have queued for it is dropped with the connection. */
                c->watch = tend_watch_free(c->watch);
        } else {
                c->rlen += (size_t)n;
        }
        conn_dispatch(c);
}

static void conn_flush(struct lp_conn *c) {
        while (c->whead < c->wlen) {
                ssize_t n = io_write(c->fd, c->wbuf + c->whead, c->wlen - c->whead);
                if (n == -EAGAIN)
                        break;
                if (n < 0) {
                        char text[96];
                        snprintf(text, sizeof text, "write error: %s", strerror((int)-n));
                        conn_fail(c, (int)n, text);
                        return;
                }
                c->whead += (size_t)n;
        }
        if (c->whead == c->wlen)
                c->whead = c->wlen = 0;
        size_t queued = c->wlen - c->whead;
        if (c->congested && queued <= LP_QUEUE_LOW) {
                c->congested = false;
                if (c->ops->drained) {
                        c->ops->drained(c, c->userdata);
                        if (c->freed || c->failed)
                                return;
                }
        }
        if (queued == 0 && c->want_empty) {
                c->want_empty = false;
                if (c->ops->empty) {
                        c->ops->empty(c, c->userdata);
                        if (c->freed || c->failed)
                                return;
                }
        }
        conn_update_watch(c);
}

static void on_io(tend_watch *w, int fd, uint32_t revents, void *userdata) {
        struct lp_conn *c = userdata;
        enter(c);
        if ((revents & (EPOLLERR | EPOLLHUP)) && !(revents & EPOLLIN)) {
                int err = 0;
                socklen_t sl = sizeof err;
                (void)getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &sl);
                char text[96];
                snprintf(text, sizeof text, "connection %s", err ? strerror(err) : "hung up");
                conn_fail(c, err ? -err : 0, text);
        } else {
                if (revents & EPOLLOUT)
                        conn_flush(c);
                if ((revents & EPOLLIN) && !c->failed && !c->freed && !c->read_paused)
                        conn_read(c);
        }
        leave(c);
}

static void conn_update_watch(struct lp_conn *c) {
        if (c->failed || c->freed || !c->watch)
                return;
        uint32_t ev = 0;
        if (!c->read_paused && !c->read_eof)
                ev |= EPOLLIN;
        if (c->wlen > c->whead)
                ev |= EPOLLOUT;
        (void)tend_watch_set_events(c->watch, ev);
}

static void on_hb_send(tend_timer *t, void *userdata) {
        struct lp_conn *c = userdata;
        enter(c);
        /* A queue full of output already tells the peer we are alive once it reads it. */
        if (lp_conn_queued(c) < LP_QUEUE_HIGH)
                (void)lp_conn_send(c, LP_HEARTBEAT, 0, 0, NULL, 0);
        if (!c->failed && !c->freed && !c->hb_usec_send_off)
                tend_timer_start(c->hb_send, c->hb_usec);
        leave(c);
}

static void on_hb_recv(tend_timer *t, void *userdata) {
        struct lp_conn *c = userdata;
        enter(c);
        char text[96];
        snprintf(text, sizeof text, "no heartbeat for %.3gs", (double)(3 * c->hb_usec) / 1e6);
        conn_fail(c, -ETIMEDOUT, text);
        leave(c);
}

static void on_resume(tend_timer *t, void *userdata) {
        struct lp_conn *c = userdata;
        enter(c);
        conn_dispatch(c);
        /* The same timer reports an empty queue asked for by lp_conn_want_empty. */
        if (!c->freed && !c->failed)
                conn_flush(c);
        leave(c);
}

int lp_conn_new(tend_loop *loop, int fd, const struct lp_conn_ops *ops, void *userdata,
                struct lp_conn **ret_conn) {
        struct lp_conn *c = calloc(1, sizeof *c);
        if (!c) {
                io_close(fd);
                return -ENOMEM;
        }
        c->loop = loop;
        c->fd = fd;
        c->ops = ops;
        c->userdata = userdata;
        c->max_payload = LP_MAX_PAYLOAD;
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        if (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0 &&
            (ss.ss_family == AF_INET || ss.ss_family == AF_INET6))
                lp_addr_format(&ss, c->peer, sizeof c->peer);
        else
                snprintf(c->peer, sizeof c->peer, "fd %d", fd);
        int e = tend_watch_new(loop, fd, EPOLLIN, on_io, c, &c->watch);
        if (e == 0)
                e = tend_timer_new(loop, on_hb_send, c, &c->hb_send);
        if (e == 0)
                e = tend_timer_new(loop, on_hb_recv, c, &c->hb_recv);
        if (e == 0)
                e = tend_timer_new(loop, on_resume, c, &c->resume);
        if (e < 0) {
                conn_release(c);
                return e;
        }
        *ret_conn = c;
        return 0;
}

void lp_conn_set_userdata(struct lp_conn *c, void *userdata) {
        c->userdata = userdata;
}

void lp_conn_set_ops(struct lp_conn *c, const struct lp_conn_ops *ops) {
        c->ops = ops;
}

void lp_conn_set_max_payload(struct lp_conn *c, uint32_t max) {
        c->max_payload = max;
}

const char *lp_conn_peer(const struct lp_conn *c) {
        return c->peer;
}

size_t lp_conn_queued(const struct lp_conn *c) {
        return c->wlen - c->whead;
}

bool lp_conn_congested(const struct lp_conn *c) {
        return c->congested;
}

int lp_conn_send(struct lp_conn *c, int type, int stream, uint32_t host, const void *payload,
                 size_t len) {
        if (c->failed || c->freed)
                return -EPIPE;
        if (len > LP_MAX_PAYLOAD)
                return -EMSGSIZE;
        size_t queued = c->wlen - c->whead;
        size_t need = LP_HDR + len;
        if (queued + need > LP_QUEUE_MAX)
                return -ENOBUFS;
        if (c->whead > 0 && c->wcap - c->wlen < need) {
                memmove(c->wbuf, c->wbuf + c->whead, queued);
                c->wlen = queued;
                c->whead = 0;
        }
        if (c->wcap - c->wlen < need) {
                size_t cap = c->wcap ? c->wcap : 16384;
                while (cap - c->wlen < need)
                        cap *= 2;
                uint8_t *b = realloc(c->wbuf, cap);
                if (!b)
                        return -ENOMEM;
                c->wbuf = b;
                c->wcap = cap;
        }
        lp_header_encode(c->wbuf + c->wlen, type, stream, host, (uint32_t)len);
        if (len)
                memcpy(c->wbuf + c->wlen + LP_HDR, payload, len);
        c->wlen += need;
        if (c->wlen - c->whead > LP_QUEUE_HIGH)
                c->congested = true;
        /* Written from the loop (EPOLLOUT), never from here: the caller may be in the middle
         * of its own state change, and a write error must reach it through closed(). */
        conn_update_watch(c);
        return 0;
}

void lp_conn_want_empty(struct lp_conn *c) {
        c->want_empty = true;
        if (c->wlen == c->whead && !c->failed)
                tend_timer_start(c->resume, 0); /* reported from the loop, not from here */
        conn_update_watch(c);
}

void lp_conn_pause_read(struct lp_conn *c, bool paused) {
        if (c->read_paused == paused)
                return;
        c->read_paused = paused;
        hb_recv_arm(c);
        /* Frames already buffered are handed on from the loop, not from inside the caller. */
        if (!paused)
                tend_timer_start(c->resume, 0);
        conn_update_watch(c);
}

void lp_conn_shutdown(struct lp_conn *c) {
        if (c->failed || c->freed)
                return;
        c->hb_usec_send_off = true;
        tend_timer_stop(c->hb_send);
        (void)shutdown(c->fd, SHUT_WR);
}

int lp_conn_heartbeat(struct lp_conn *c, uint64_t interval_usec) {
        c->hb_usec = interval_usec;
        if (!interval_usec) {
                tend_timer_stop(c->hb_send);
                tend_timer_stop(c->hb_recv);
                return 0;
        }
        if (!c->hb_usec_send_off)
                tend_timer_start(c->hb_send, interval_usec);
        hb_recv_arm(c);
        return 0;
}

/* ---- addresses ----------------------------------------------------------------------- */

int lp_addr_parse(const char *text, int default_port, struct sockaddr_storage *ret,
                  unsigned *ret_len) {
        char host[128];
        const char *port = NULL;
        size_t hl;
        if (text[0] == '[') {
                const char *close = strchr(text, ']');
                if (!close)
                        return -EINVAL;
                hl = (size_t)(close - text - 1);
                if (hl >= sizeof host)
                        return -EINVAL;
                memcpy(host, text + 1, hl);
                host[hl] = '\0';
                if (close[1] == ':')
                        port = close + 2;
                else if (close[1])
                        return -EINVAL;
        } else {
                const char *colon = strrchr(text, ':');
                if (colon && strchr(text, ':') != colon)
                        colon = NULL; /* a bare IPv6 address */
                hl = colon ? (size_t)(colon - text) : strlen(text);
                if (hl >= sizeof host)
                        return -EINVAL;
                memcpy(host, text, hl);
                host[hl] = '\0';
                if (colon)
                        port = colon + 1;
        }
        long p = default_port;
        if (port) {
                char *end;
                p = strtol(port, &end, 10);
                if (!*port || *end)
                        return -EINVAL;
        }
        if (p < 0 || p > 65535)
                return -EINVAL;
        memset(ret, 0, sizeof *ret);
        struct sockaddr_in *in4 = (struct sockaddr_in *)ret;
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ret;
        if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
                in4->sin_family = AF_INET;
                in4->sin_port = htons((uint16_t)p);
                *ret_len = sizeof *in4;
                return 0;
        }
        char *pct = strchr(host, '%');
        if (pct)
                *pct = '\0';
        if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
                in6->sin6_family = AF_INET6;
                in6->sin6_port = htons((uint16_t)p);
                if (pct)
                        in6->sin6_scope_id = if_nametoindex(pct + 1);
                *ret_len = sizeof *in6;
                return 0;
        }
        return -EINVAL;
}

void lp_addr_format(const struct sockaddr_storage *a, char *buf, size_t size) {
        char host[INET6_ADDRSTRLEN] = "?";
        if (a->ss_family == AF_INET) {
                const struct sockaddr_in *in4 = (const struct sockaddr_in *)a;
                inet_ntop(AF_INET, &in4->sin_addr, host, sizeof host);
                snprintf(buf, size, "%s:%u", host, ntohs(in4->sin_port));
        } else if (a->ss_family == AF_INET6) {
                const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)a;
                inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
                snprintf(buf, size, "[%s]:%u", host, ntohs(in6->sin6_port));
        } else {
                snprintf(buf, size, "?");
        }
}
