/* fuzz_launch.c — the wire of `tend launch` (src/launch_proto.c): the bytes are what a peer
 * sends on a callback connection. They go through the real connection code (a socketpair,
 * the loop, lp_conn's framing and bounds) twice: in small pieces on a connection that is not
 * authenticated yet (64-byte bound, HELLO/PROOF checked with the launcher's handshake
 * functions), and in one piece with the full bound, every frame's JSON checked as the node
 * does. The same bytes, as text, go to the base64 key and address parsers. Invariants: no
 * frame longer than the bound, nothing after the end, the end reported at most once. */
#include "fuzz.h"
#include "launch_proto.h"

#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <sodium.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct peer {
        uint32_t bound;
        int closed;
        int frames;
        int state; /* 0 want HELLO, 1 want PROOF, 2 authenticated */
        uint8_t token[LP_KEY], nonce_a[LP_KEY], nonce_l[LP_KEY];
        struct lp_conn *conn;
};

static tend_loop *loop;

static void on_frame(struct lp_conn *c, const struct lp_frame *f, void *userdata) {
        struct peer *p = userdata;
        if (p->closed)
                FUZZ_FAIL("a frame after the end");
        if (f->len > p->bound)
                FUZZ_FAIL("a frame of %u bytes past the bound %u", f->len, p->bound);
        if (f->type < 1 || f->type > LP_TYPE_MAX)
                FUZZ_FAIL("frame type %u let through", f->type);
        p->frames++;
        if (p->state == 0) {
                if (f->type != LP_HELLO || lp_hello_read(f->payload, f->len, p->nonce_a) < 0) {
                        p->conn = lp_conn_free(p->conn);
                        return;
                }
                uint8_t ch[LP_CHALLENGE_LEN];
                lp_challenge_make(p->token, f->host, p->nonce_a, p->nonce_l, ch);
                (void)lp_conn_send(c, LP_CHALLENGE, 0, f->host, ch, sizeof ch);
                p->state = 1;
                return;
        }
        if (p->state == 1) {
                /* A random proof must never pass. */
                if (lp_proof_check(p->token, f->host, p->nonce_a, p->nonce_l, f->payload,
                                   f->len) == 0)
                        FUZZ_FAIL("a forged PROOF was accepted");
                p->conn = lp_conn_free(p->conn);
                return;
        }
        if (f->type == LP_EXIT || f->type == LP_FAILED || f->type == LP_REFUSED ||
            f->type == LP_LOST || f->type == LP_STARTED) {
                json_t *o = json_loadb((const char *)f->payload, f->len, 0, NULL);
                if (o && json_is_object(o))
                        FUZZ_USE(json_object_size(o));
                json_decref(o);
        }
}

static void on_closed(struct lp_conn *c, int err, const char *why, void *userdata) {
        struct peer *p = userdata;
        if (p->closed++)
                FUZZ_FAIL("the end reported twice");
        if (!why)
                FUZZ_FAIL("an end without words");
        FUZZ_USE(strlen(why));
        p->conn = lp_conn_free(p->conn);
}

static const struct lp_conn_ops ops = { .frame = on_frame, .closed = on_closed };

static void feed(const uint8_t *data, size_t size, size_t chunk, uint32_t bound, int state) {
        int sp[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sp) < 0)
                FUZZ_FAIL("socketpair");
        struct peer p = { .bound = bound, .state = state };
        memset(p.token, 7, sizeof p.token);
        if (lp_conn_new(loop, sp[0], &ops, &p, &p.conn) < 0)
                FUZZ_FAIL("lp_conn_new");
        lp_conn_set_max_payload(p.conn, bound);
        size_t off = 0;
        /* Bounded: every round either writes or lets the connection read. */
        for (int rounds = 0; p.conn && rounds < 100000; rounds++) {
                if (off < size) {
                        size_t n = size - off < chunk ? size - off : chunk;
                        ssize_t w = send(sp[1], data + off, n, MSG_NOSIGNAL);
                        if (w > 0)
                                off += (size_t)w;
                        else if (w < 0 && errno != EAGAIN)
                                break;
                } else if (sp[1] >= 0) {
                        close(sp[1]);
                        sp[1] = -1;
                }
                (void)tend_loop_run_once(loop, off < size ? 0 : 1000);
                if (!p.conn)
                        break;
                /* Drain what it sent us (CHALLENGE) so it never blocks. */
                char sink[256];
                while (sp[1] >= 0 && read(sp[1], sink, sizeof sink) > 0)
                        ;
        }
        lp_conn_free(p.conn);
        if (sp[1] >= 0)
                close(sp[1]);
        /* Let the loop release what the connection freed inside a callback. */
        (void)tend_loop_run_once(loop, 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        if (!loop) {
                /* As in tend itself (prog_owner_loop blocks it): a peer that left is EPIPE. */
                signal(SIGPIPE, SIG_IGN);
                if (sodium_init() < 0 || tend_loop_new(&loop) < 0)
                        FUZZ_FAIL("setup");
        }
        feed(data, size, 7, LP_PREAUTH_MAX_PAYLOAD, 0);
        feed(data, size, 65536, LP_MAX_PAYLOAD, 2);

        /* Header decoding on the raw bytes, frame after frame. */
        for (size_t off = 0; off + LP_HDR <= size;) {
                struct lp_frame f;
                const char *why;
                if (lp_header_decode(data + off, LP_MAX_PAYLOAD, &f, &why) < 0) {
                        FUZZ_USE(strlen(why));
                        break;
                }
                if (f.len > LP_MAX_PAYLOAD)
                        FUZZ_FAIL("decoded length past the bound");
                off += LP_HDR + f.len;
        }

        /* The same bytes as text: a token in a job line, a callback address. */
        char *text = malloc(size + 1);
        if (!text)
                return 0;
        memcpy(text, data, size);
        text[size] = '\0';
        uint8_t key[LP_KEY];
        if (lp_key_from_base64(text, key) == 0) {
                char back[64];
                lp_key_to_base64(key, back);
                FUZZ_USE(strlen(back));
        }
        struct sockaddr_storage ss;
        unsigned len;
        if (lp_addr_parse(text, 1, &ss, &len) == 0) {
                char buf[96];
                lp_addr_format(&ss, buf, sizeof buf);
                FUZZ_USE(strlen(buf));
        }
        free(text);
        return 0;
}
