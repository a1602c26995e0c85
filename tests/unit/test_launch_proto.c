/* test_launch_proto.c — the wire of `tend launch` (src/launch_proto.c): frames through a real
 * socket, fed one byte at a time; oversize, unknown-type and reserved-byte frames refused;
 * the handshake with the right token and with a wrong one on either side; missed heartbeats;
 * tokens and addresses. */
#include <sodium.h>
#include <sys/socket.h>

#include "harness.h"
#include "launch_proto.h"
#include "tend.h"

struct got {
        int n;
        struct {
                int type, stream;
                uint32_t host;
                size_t len;
                uint8_t data[LP_MAX_PAYLOAD];
        } f[8];
        bool closed;
        int err;
        char why[128];
        int drained;
};

static void on_frame(struct lp_conn *c, const struct lp_frame *f, void *ud) {
        struct got *g = ud;
        if (g->n < 8) {
                g->f[g->n].type = f->type;
                g->f[g->n].stream = f->stream;
                g->f[g->n].host = f->host;
                g->f[g->n].len = f->len;
                memcpy(g->f[g->n].data, f->payload, f->len);
        }
        g->n++;
}

static void on_closed(struct lp_conn *c, int err, const char *why, void *ud) {
        struct got *g = ud;
        g->closed = true;
        g->err = err;
        snprintf(g->why, sizeof g->why, "%s", why);
}

static void on_drained(struct lp_conn *c, void *ud) {
        struct got *g = ud;
        g->drained++;
}

static const struct lp_conn_ops ops = { .frame = on_frame, .closed = on_closed,
                                        .drained = on_drained };

struct fx {
        tend_loop *loop;
        int sv[2];
        struct got *got;
        struct lp_conn *conn;
};

static int setup(void **state) {
        struct fx *f = calloc(1, sizeof *f);
        if (!f)
                return -1;
        f->got = calloc(1, sizeof *f->got);
        if (!f->got || sodium_init() < 0 || tend_loop_new(&f->loop) < 0)
                return -1;
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, f->sv) < 0)
                return -1;
        if (lp_conn_new(f->loop, f->sv[0], &ops, f->got, &f->conn) < 0)
                return -1;
        signal(SIGPIPE, SIG_IGN);
        *state = f;
        return 0;
}

static int teardown(void **state) {
        struct fx *f = *state;
        lp_conn_free(f->conn);
        close(f->sv[1]);
        tend_loop_free(f->loop);
        free(f->got);
        free(f);
        return 0;
}

static void put_frame(uint8_t *buf, size_t *len, int type, int stream, uint32_t host,
                      const void *payload, uint32_t plen) {
        lp_header_encode(buf + *len, type, stream, host, plen);
        memcpy(buf + *len + LP_HDR, payload, plen);
        *len += LP_HDR + plen;
}

static void frame_round_trip_one_byte_at_a_time(void **state) {
        struct fx *f = *state;
        static uint8_t buf[3 * LP_HDR + 5 + 2000];
        size_t len = 0;
        uint8_t big[2000];
        for (size_t i = 0; i < sizeof big; i++)
                big[i] = (uint8_t)(i * 7);
        put_frame(buf, &len, LP_OUT, 2, 0x01020304, "hello", 5);
        put_frame(buf, &len, LP_HEARTBEAT, 0, 7, "", 0);
        put_frame(buf, &len, LP_OUT, 1, 65535, big, sizeof big);
        for (size_t i = 0; i < len; i++) {
                assert_int_equal(write(f->sv[1], buf + i, 1), 1);
                assert_true(tend_loop_run_once(f->loop, 1000000) >= 0);
        }
        assert_int_equal(f->got->n, 3);
        assert_int_equal(f->got->f[0].type, LP_OUT);
        assert_int_equal(f->got->f[0].stream, 2);
        assert_int_equal(f->got->f[0].host, 0x01020304);
        assert_int_equal(f->got->f[0].len, 5);
        assert_memory_equal(f->got->f[0].data, "hello", 5);
        assert_int_equal(f->got->f[1].type, LP_HEARTBEAT);
        assert_int_equal(f->got->f[1].len, 0);
        assert_int_equal(f->got->f[2].host, 65535);
        assert_int_equal(f->got->f[2].len, sizeof big);
        assert_memory_equal(f->got->f[2].data, big, sizeof big);
        assert_false(f->got->closed);
        close(f->sv[1]);
        f->sv[1] = -1;
        for (int i = 0; i < 10 && !f->got->closed; i++)
                assert_true(tend_loop_run_once(f->loop, 1000000) >= 0);
        assert_true(f->got->closed);
        assert_int_equal(f->got->err, 0);
}

/* Two connections: A sends the largest frame and a small one; B gets both whole. */
static void conn_send_largest_frame(void **state) {
        struct fx *f = *state;
        struct got *gb = calloc(1, sizeof *gb);
        struct lp_conn *b;
        assert_int_equal(lp_conn_new(f->loop, f->sv[1], &ops, gb, &b), 0);
        f->sv[1] = -1;
        uint8_t *big = malloc(LP_MAX_PAYLOAD);
        for (size_t i = 0; i < LP_MAX_PAYLOAD; i++)
                big[i] = (uint8_t)(i ^ (i >> 8));
        assert_int_equal(lp_conn_send(f->conn, LP_OUT, 1, 3, big, LP_MAX_PAYLOAD), 0);
        assert_int_equal(lp_conn_send(f->conn, LP_OUT, 1, 3, big, LP_MAX_PAYLOAD + 1), -EMSGSIZE);
        assert_int_equal(lp_conn_send(f->conn, LP_DONE, 0, 4, NULL, 0), 0);
        for (int i = 0; i < 200 && gb->n < 2; i++)
                assert_true(tend_loop_run_once(f->loop, 1000000) >= 0);
        assert_int_equal(gb->n, 2);
        assert_int_equal(gb->f[0].len, LP_MAX_PAYLOAD);
        assert_memory_equal(gb->f[0].data, big, LP_MAX_PAYLOAD);
        assert_int_equal(gb->f[1].type, LP_DONE);
        assert_int_equal(gb->f[1].host, 4);
        lp_conn_free(b);
        free(big);
        free(gb);
}

/* A queue above its high mark says congested; when the peer reads, drained is called. */
static void conn_queue_bounds(void **state) {
        struct fx *f = *state;
        static uint8_t chunk[LP_MAX_PAYLOAD];
        int sent = 0;
        while (lp_conn_send(f->conn, LP_OUT, 1, 0, chunk, sizeof chunk) == 0)
                sent++;
        assert_true(lp_conn_congested(f->conn));
        assert_true(lp_conn_queued(f->conn) <= LP_QUEUE_MAX);
        assert_int_equal(lp_conn_send(f->conn, LP_OUT, 1, 0, chunk, sizeof chunk), -ENOBUFS);
        /* The peer reads everything: the queue drains. */
        static uint8_t sink[1 << 16];
        for (int i = 0; i < 10000 && lp_conn_queued(f->conn) > 0; i++) {
                while (read(f->sv[1], sink, sizeof sink) > 0)
                        ;
                assert_true(tend_loop_run_once(f->loop, 1000000) >= 0);
        }
        assert_int_equal(lp_conn_queued(f->conn), 0);
        assert_int_equal(f->got->drained, 1);
        assert_false(lp_conn_congested(f->conn));
        assert_true(sent > 0);
}

static void expect_refused(struct fx *f, const uint8_t *hdr) {
        assert_int_equal(write(f->sv[1], hdr, LP_HDR), LP_HDR);
        for (int i = 0; i < 10 && !f->got->closed; i++)
                assert_true(tend_loop_run_once(f->loop, 1000000) >= 0);
        assert_true(f->got->closed);
        assert_int_equal(f->got->err, -EPROTO);
        assert_int_equal(f->got->n, 0);
}

static void frame_oversize_refused(void **state) {
        struct fx *f = *state;
        uint8_t hdr[LP_HDR];
        lp_header_encode(hdr, LP_OUT, 1, 0, LP_MAX_PAYLOAD + 1);
        expect_refused(f, hdr);
        assert_non_null(strstr(f->got->why, "too long"));
}

static void frame_preauth_bound(void **state) {
        struct fx *f = *state;
        lp_conn_set_max_payload(f->conn, LP_PREAUTH_MAX_PAYLOAD);
        uint8_t hdr[LP_HDR];
        lp_header_encode(hdr, LP_HELLO, 0, 0, LP_PREAUTH_MAX_PAYLOAD + 1);
        expect_refused(f, hdr);
}

static void frame_bad_type_refused(void **state) {
        struct fx *f = *state;
        uint8_t hdr[LP_HDR];
        lp_header_encode(hdr, LP_TYPE_MAX + 1, 0, 0, 0);
        expect_refused(f, hdr);
        assert_non_null(strstr(f->got->why, "unknown frame type"));
}

static void frame_type_zero_and_reserved_refused(void **state) {
        uint8_t hdr[LP_HDR];
        struct lp_frame fr;
        const char *why;
        lp_header_encode(hdr, 0, 0, 0, 0);
        assert_int_equal(lp_header_decode(hdr, LP_MAX_PAYLOAD, &fr, &why), -EPROTO);
        lp_header_encode(hdr, LP_GO, 0, 0, 0);
        assert_int_equal(lp_header_decode(hdr, LP_MAX_PAYLOAD, &fr, &why), 0);
        hdr[3] = 1;
        assert_int_equal(lp_header_decode(hdr, LP_MAX_PAYLOAD, &fr, &why), -EPROTO);
}

static void frame_cut_by_close(void **state) {
        struct fx *f = *state;
        uint8_t hdr[LP_HDR];
        lp_header_encode(hdr, LP_OUT, 1, 0, 10);
        assert_int_equal(write(f->sv[1], hdr, LP_HDR), LP_HDR);
        close(f->sv[1]);
        f->sv[1] = -1;
        for (int i = 0; i < 10 && !f->got->closed; i++)
                assert_true(tend_loop_run_once(f->loop, 1000000) >= 0);
        assert_true(f->got->closed);
        assert_int_equal(f->got->err, -EPROTO);
}

static void heartbeat_missed(void **state) {
        struct fx *f = *state;
        assert_int_equal(lp_conn_heartbeat(f->conn, 20000), 0);
        uint64_t start = tend_now_usec();
        while (!f->got->closed && tend_now_usec() - start < 5000000)
                assert_true(tend_loop_run_once(f->loop, 1000000) >= 0);
        assert_true(f->got->closed);
        assert_int_equal(f->got->err, -ETIMEDOUT);
        assert_true(tend_now_usec() - start >= 60000);
        /* It sent its own heartbeats meanwhile. */
        uint8_t hdr[LP_HDR];
        struct lp_frame fr;
        const char *why;
        assert_int_equal(read(f->sv[1], hdr, LP_HDR), LP_HDR);
        assert_int_equal(lp_header_decode(hdr, LP_MAX_PAYLOAD, &fr, &why), 0);
        assert_int_equal(fr.type, LP_HEARTBEAT);
}

/* While reading is paused (backpressure), silence is not a lost peer; after the resume the
 * clock runs again. */
static void heartbeat_clock_stops_while_paused(void **state) {
        struct fx *f = *state;
        assert_int_equal(lp_conn_heartbeat(f->conn, 20000), 0);
        lp_conn_pause_read(f->conn, true);
        uint64_t start = tend_now_usec();
        while (tend_now_usec() - start < 200000)
                assert_true(tend_loop_run_once(f->loop, 50000) >= 0);
        assert_false(f->got->closed);
        lp_conn_pause_read(f->conn, false);
        start = tend_now_usec();
        while (!f->got->closed && tend_now_usec() - start < 5000000)
                assert_true(tend_loop_run_once(f->loop, 1000000) >= 0);
        assert_true(f->got->closed);
        assert_int_equal(f->got->err, -ETIMEDOUT);
}

/* Frames that arrived while paused are handed on after the resume, in order. */
static void paused_frames_come_after_resume(void **state) {
        struct fx *f = *state;
        lp_conn_pause_read(f->conn, true);
        static uint8_t buf[2 * (LP_HDR + 3)];
        size_t len = 0;
        put_frame(buf, &len, LP_OUT, 1, 1, "one", 3);
        put_frame(buf, &len, LP_OUT, 1, 2, "two", 3);
        assert_int_equal(write(f->sv[1], buf, len), (ssize_t)len);
        for (int i = 0; i < 5; i++)
                assert_true(tend_loop_run_once(f->loop, 20000) >= 0);
        assert_int_equal(f->got->n, 0);
        lp_conn_pause_read(f->conn, false);
        for (int i = 0; i < 20 && f->got->n < 2; i++)
                assert_true(tend_loop_run_once(f->loop, 1000000) >= 0);
        assert_int_equal(f->got->n, 2);
        assert_int_equal(f->got->f[0].host, 1);
        assert_int_equal(f->got->f[1].host, 2);
}

/* After the last frame: half-close; the peer reads everything then EOF, and when it closes
 * too the end is a clean one (err 0). */
static void shutdown_half_closes(void **state) {
        struct fx *f = *state;
        assert_int_equal(lp_conn_send(f->conn, LP_DONE, 0, 9, NULL, 0), 0);
        for (int i = 0; i < 20 && lp_conn_queued(f->conn) > 0; i++)
                assert_true(tend_loop_run_once(f->loop, 1000000) >= 0);
        lp_conn_shutdown(f->conn);
        uint8_t hdr[LP_HDR + 1];
        assert_int_equal(read(f->sv[1], hdr, sizeof hdr), LP_HDR);
        assert_int_equal(read(f->sv[1], hdr, sizeof hdr), 0);
        close(f->sv[1]);
        f->sv[1] = -1;
        for (int i = 0; i < 20 && !f->got->closed; i++)
                assert_true(tend_loop_run_once(f->loop, 1000000) >= 0);
        assert_true(f->got->closed);
        assert_int_equal(f->got->err, 0);
}

/* An owner that frees the connection from inside its frame callback (a refusal): no more
 * frames, no use after free (ASan builds check). */
static void on_frame_free(struct lp_conn *c, const struct lp_frame *fr, void *ud) {
        struct fx *f = ud;
        f->got->n++;
        f->conn = lp_conn_free(c);
}

static void free_from_frame_callback(void **state) {
        struct fx *f = *state;
        static const struct lp_conn_ops free_ops = { .frame = on_frame_free, .closed = on_closed };
        lp_conn_set_ops(f->conn, &free_ops);
        lp_conn_set_userdata(f->conn, f);
        static uint8_t buf[3 * LP_HDR];
        size_t len = 0;
        for (int i = 0; i < 3; i++)
                put_frame(buf, &len, LP_HEARTBEAT, 0, 0, "", 0);
        assert_int_equal(write(f->sv[1], buf, len), (ssize_t)len);
        for (int i = 0; i < 5 && f->conn; i++)
                assert_true(tend_loop_run_once(f->loop, 1000000) >= 0);
        assert_null(f->conn);
        assert_int_equal(f->got->n, 1);
        assert_true(tend_loop_run_once(f->loop, 0) >= 0);
}

/* ---- handshake ------------------------------------------------------------------------ */

static void handshake(const uint8_t agent_token[LP_KEY], const uint8_t launcher_token[LP_KEY],
                      uint32_t agent_index, uint32_t launcher_index, int *ret_agent,
                      int *ret_launcher) {
        uint8_t nonce_a[LP_KEY], hello[LP_HELLO_LEN];
        lp_hello_make(nonce_a, hello);
        uint8_t got_a[LP_KEY], nonce_l[LP_KEY], challenge[LP_CHALLENGE_LEN], proof[LP_KEY];
        assert_int_equal(lp_hello_read(hello, sizeof hello, got_a), 0);
        assert_memory_equal(got_a, nonce_a, LP_KEY);
        lp_challenge_make(launcher_token, launcher_index, got_a, nonce_l, challenge);
        *ret_agent = lp_challenge_answer(agent_token, agent_index, nonce_a, challenge,
                                         sizeof challenge, proof);
        *ret_launcher = -1;
        if (*ret_agent == 0)
                *ret_launcher = lp_proof_check(launcher_token, launcher_index, got_a, nonce_l,
                                               proof, sizeof proof);
        /* An agent that skipped the check: a wrong token is still caught by the launcher. */
        if (*ret_agent < 0) {
                uint8_t forged[LP_KEY];
                memset(forged, 0, sizeof forged);
                assert_int_equal(lp_proof_check(launcher_token, launcher_index, got_a, nonce_l,
                                                forged, sizeof forged), -EACCES);
        }
}

static void handshake_right_token(void **state) {
        uint8_t secret[LP_KEY], token[LP_KEY];
        randombytes_buf(secret, sizeof secret);
        lp_token(secret, 3, "h3", token);
        int a, l;
        handshake(token, token, 3, 3, &a, &l);
        assert_int_equal(a, 0);
        assert_int_equal(l, 0);
}

static void handshake_wrong_token_at_launcher(void **state) {
        /* A fake launcher (or one for another job) cannot make the agent go on. */
        uint8_t secret[LP_KEY], other[LP_KEY], token[LP_KEY], wrong[LP_KEY];
        randombytes_buf(secret, sizeof secret);
        randombytes_buf(other, sizeof other);
        lp_token(secret, 3, "h3", token);
        lp_token(other, 3, "h3", wrong);
        int a, l;
        handshake(token, wrong, 3, 3, &a, &l);
        assert_int_equal(a, -EACCES);
}

static void handshake_wrong_token_at_agent(void **state) {
        /* A forged callback: the agent's side holds a wrong token and answers a challenge it
         * cannot check (skipping the check): the proof is refused. */
        uint8_t secret[LP_KEY], token[LP_KEY], wrong[LP_KEY];
        randombytes_buf(secret, sizeof secret);
        lp_token(secret, 3, "h3", token);
        lp_token(secret, 4, "h3", wrong); /* another host's token */
        uint8_t nonce_a[LP_KEY], hello[LP_HELLO_LEN], nonce_l[LP_KEY],
                challenge[LP_CHALLENGE_LEN], proof[LP_KEY];
        lp_hello_make(nonce_a, hello);
        lp_challenge_make(token, 3, nonce_a, nonce_l, challenge);
        assert_int_equal(lp_challenge_answer(wrong, 3, nonce_a, challenge, sizeof challenge,
                                             proof), -EACCES);
        /* Its proof, made the way a right agent makes it but with the wrong token: */
        uint8_t l_wrong[LP_CHALLENGE_LEN];
        uint8_t nonce_l2[LP_KEY];
        lp_challenge_make(wrong, 3, nonce_a, nonce_l2, l_wrong);
        assert_int_equal(lp_challenge_answer(wrong, 3, nonce_a, l_wrong, sizeof l_wrong, proof), 0);
        assert_int_equal(lp_proof_check(token, 3, nonce_a, nonce_l2, proof, sizeof proof),
                         -EACCES);
        /* Right token, wrong index: refused too. */
        int a, l;
        handshake(token, token, 3, 4, &a, &l);
        assert_int_equal(a, -EACCES);
        /* Bad lengths are protocol errors. */
        assert_int_equal(lp_proof_check(token, 3, nonce_a, nonce_l, proof, 31), -EPROTO);
        assert_int_equal(lp_hello_read(hello, 35, nonce_a), -EPROTO);
}

static void token_base64_round_trip(void **state) {
        uint8_t key[LP_KEY], back[LP_KEY];
        char text[64];
        randombytes_buf(key, sizeof key);
        lp_key_to_base64(key, text);
        assert_int_equal(strlen(text), 44);
        assert_int_equal(lp_key_from_base64(text, back), 0);
        assert_memory_equal(key, back, LP_KEY);
        assert_int_equal(lp_key_from_base64("aGVsbG8=", back), -EINVAL);
        assert_int_equal(lp_key_from_base64("!!!", back), -EINVAL);
        /* Tokens differ per host and index. */
        uint8_t s[LP_KEY] = { 1 }, t1[LP_KEY], t2[LP_KEY], t3[LP_KEY];
        lp_token(s, 1, "a", t1);
        lp_token(s, 2, "a", t2);
        lp_token(s, 1, "b", t3);
        assert_memory_not_equal(t1, t2, LP_KEY);
        assert_memory_not_equal(t1, t3, LP_KEY);
}

static void addresses(void **state) {
        struct sockaddr_storage ss;
        unsigned len;
        char buf[80];
        assert_int_equal(lp_addr_parse("10.0.0.1:40123", -1, &ss, &len), 0);
        lp_addr_format(&ss, buf, sizeof buf);
        assert_string_equal(buf, "10.0.0.1:40123");
        assert_int_equal(lp_addr_parse("[fd00::1]:7", -1, &ss, &len), 0);
        lp_addr_format(&ss, buf, sizeof buf);
        assert_string_equal(buf, "[fd00::1]:7");
        assert_int_equal(lp_addr_parse("fd00::2", 9, &ss, &len), 0);
        lp_addr_format(&ss, buf, sizeof buf);
        assert_string_equal(buf, "[fd00::2]:9");
        assert_int_equal(lp_addr_parse("10.0.0.1", 5, &ss, &len), 0);
        assert_int_equal(lp_addr_parse("10.0.0.1:99999", -1, &ss, &len), -EINVAL);
        assert_int_equal(lp_addr_parse("host:1", -1, &ss, &len), -EINVAL);
        assert_int_equal(lp_addr_parse("[::1", -1, &ss, &len), -EINVAL);
}

static const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(frame_round_trip_one_byte_at_a_time, setup, teardown),
        cmocka_unit_test_setup_teardown(conn_send_largest_frame, setup, teardown),
        cmocka_unit_test_setup_teardown(conn_queue_bounds, setup, teardown),
        cmocka_unit_test_setup_teardown(frame_oversize_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(frame_preauth_bound, setup, teardown),
        cmocka_unit_test_setup_teardown(frame_bad_type_refused, setup, teardown),
        cmocka_unit_test(frame_type_zero_and_reserved_refused),
        cmocka_unit_test_setup_teardown(frame_cut_by_close, setup, teardown),
        cmocka_unit_test_setup_teardown(heartbeat_missed, setup, teardown),
        cmocka_unit_test_setup_teardown(heartbeat_clock_stops_while_paused, setup, teardown),
        cmocka_unit_test_setup_teardown(paused_frames_come_after_resume, setup, teardown),
        cmocka_unit_test_setup_teardown(shutdown_half_closes, setup, teardown),
        cmocka_unit_test_setup_teardown(free_from_frame_callback, setup, teardown),
        cmocka_unit_test(handshake_right_token),
        cmocka_unit_test(handshake_wrong_token_at_launcher),
        cmocka_unit_test(handshake_wrong_token_at_agent),
        cmocka_unit_test(token_base64_round_trip),
        cmocka_unit_test(addresses),
};

TEND_TEST_MAIN(tests)
