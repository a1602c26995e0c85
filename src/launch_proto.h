/* launch_proto.h — the wire of `tend launch` (doc/launch.md, "The callback" and "Frames"):
 * frames, a connection over a non-blocking socket, tokens and the handshake.
 *
 * Nothing here prints or exits: errors come back as negative errnos with a short static
 * reason, and the subcommands turn them into messages. */
#ifndef TEND_LAUNCH_PROTO_H
#define TEND_LAUNCH_PROTO_H

#include "tend.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LP_VERSION 1
#define LP_HDR 12                     /* u8 type, u8 stream, u16 0, u32be host, u32be length */
#define LP_MAX_PAYLOAD 65536u         /* a frame's payload never exceeds this */
#define LP_PREAUTH_MAX_PAYLOAD 64u    /* before the handshake is done */
#define LP_KEY 32                     /* secret, token, nonce and MAC sizes */
#define LP_BANNER "tend-launch-agent 1\n"

enum lp_type {
        LP_HELLO = 1,
        LP_CHALLENGE = 2,
        LP_PROOF = 3,
        LP_START = 4,
        LP_GO = 5,
        LP_ABORT = 6,
        LP_REFUSED = 7,
        LP_STARTED = 8,
        LP_OUT = 9,
        LP_EXIT = 10,
        LP_FAILED = 11,
        LP_LOST = 12,
        LP_CONNECTED = 13,
        LP_HEARTBEAT = 14,
        LP_SIGNAL = 15,
        LP_DONE = 16,
        LP_TYPE_MAX = 16,
};

/* "HELLO", … ; "?" for anything else. */
const char *lp_type_name(int type);

struct lp_frame {
        uint8_t type;
        uint8_t stream;
        uint32_t host;
        uint32_t len;
        const uint8_t *payload; /* valid during the callback only */
};

/* Write the 12-byte header for a frame into hdr. */
void lp_header_encode(uint8_t hdr[LP_HDR], int type, int stream, uint32_t host, uint32_t len);
/* Check and decode a header. Returns 0, or -EPROTO with *ret_why set (unknown type, non-zero
 * reserved bytes, length above max_payload). */
int lp_header_decode(const uint8_t hdr[LP_HDR], uint32_t max_payload, struct lp_frame *ret,
                     const char **ret_why);

/* ---- tokens and the handshake (pure functions, libsodium's HMAC-SHA256) ---------------- */

/* token = HMAC-SHA256(secret, "tend-launch token" ‖ u32be(index) ‖ host). */
void lp_token(const uint8_t secret[LP_KEY], uint32_t index, const char *host,
              uint8_t ret_token[LP_KEY]);
/* Base64 (standard, padded) of a 32-byte key into out (at least 45 bytes); and back: 0 or
 * -EINVAL when the text is not exactly 32 bytes of base64. */
void lp_key_to_base64(const uint8_t key[LP_KEY], char out[64]);
int lp_key_from_base64(const char *text, uint8_t ret_key[LP_KEY]);

/* HELLO payload: u32be(version) ‖ nonce_a. *ret_nonce gets a fresh nonce. 36 bytes. */
#define LP_HELLO_LEN (4 + LP_KEY)
void lp_hello_make(uint8_t ret_nonce_a[LP_KEY], uint8_t payload[LP_HELLO_LEN]);
/* Launcher: read a HELLO payload. -EPROTO (bad length or version). */
int lp_hello_read(const uint8_t *payload, size_t len, uint8_t ret_nonce_a[LP_KEY]);

/* Launcher: CHALLENGE payload nonce_l ‖ HMAC(token, "tend-launch L" ‖ u32be(i) ‖ nonce_a ‖
 * nonce_l); *ret_nonce_l gets a fresh nonce. 64 bytes. */
#define LP_CHALLENGE_LEN (2 * LP_KEY)
void lp_challenge_make(const uint8_t token[LP_KEY], uint32_t index,
                       const uint8_t nonce_a[LP_KEY], uint8_t ret_nonce_l[LP_KEY],
                       uint8_t payload[LP_CHALLENGE_LEN]);
/* Agent: check a CHALLENGE (constant-time) and make the PROOF payload. -EPROTO on a bad
 * length, -EACCES when the launcher does not hold the token. */
int lp_challenge_answer(const uint8_t token[LP_KEY], uint32_t index,
                        const uint8_t nonce_a[LP_KEY], const uint8_t *payload, size_t len,
                        uint8_t ret_proof[LP_KEY]);
/* Launcher: check a PROOF (constant-time). -EPROTO bad length, -EACCES wrong MAC. */
int lp_proof_check(const uint8_t token[LP_KEY], uint32_t index, const uint8_t nonce_a[LP_KEY],
                   const uint8_t nonce_l[LP_KEY], const uint8_t *payload, size_t len);

/* ---- connection ---------------------------------------------------------------------- */

/* Write queue bounds. Above HIGH the producer is told to pause (lp_conn_congested); below
 * LOW again its drained callback runs. A send that would take the queue above MAX fails
 * with -ENOBUFS: producers pause at HIGH, so only a peer that never reads gets there, and
 * the caller then treats the connection as lost. */
#define LP_QUEUE_HIGH (256u * 1024u)
#define LP_QUEUE_LOW (64u * 1024u)
#define LP_QUEUE_MAX (1024u * 1024u)

struct lp_conn;

struct lp_conn_ops {
        /* A whole frame arrived. May call lp_conn_free(c). */
        void (*frame)(struct lp_conn *c, const struct lp_frame *f, void *userdata);
        /* The connection ended: err 0 the peer closed it, -ETIMEDOUT nothing arrived for 3
         * heartbeats, -EPROTO a bad frame, another errno a socket error; why says it in
         * words. Called once; no frame callback follows. The owner frees c (may do it here). */
        void (*closed)(struct lp_conn *c, int err, const char *why, void *userdata);
        /* The queue fell to LP_QUEUE_LOW after having been above LP_QUEUE_HIGH. Optional. */
        void (*drained)(struct lp_conn *c, void *userdata);
        /* The queue is empty (after lp_conn_want_empty). Optional. */
        void (*empty)(struct lp_conn *c, void *userdata);
};

/* Takes fd (a connected non-blocking socket) in every case. */
int lp_conn_new(tend_loop *loop, int fd, const struct lp_conn_ops *ops, void *userdata,
                struct lp_conn **ret_conn);
/* Close the socket. Safe from inside the connection's own callbacks. Returns NULL. */
struct lp_conn *lp_conn_free(struct lp_conn *c);
void lp_conn_set_userdata(struct lp_conn *c, void *userdata);
void lp_conn_set_ops(struct lp_conn *c, const struct lp_conn_ops *ops);
/* Frames longer than this are a protocol error (LP_PREAUTH_MAX_PAYLOAD before the
 * handshake, LP_MAX_PAYLOAD, the default, after). */
void lp_conn_set_max_payload(struct lp_conn *c, uint32_t max);
/* Queue a frame. 0, -EMSGSIZE (payload too long), -ENOBUFS (queue full, see above), -EPIPE
 * (the connection already failed). */
int lp_conn_send(struct lp_conn *c, int type, int stream, uint32_t host, const void *payload,
                 size_t len);
bool lp_conn_congested(const struct lp_conn *c);
size_t lp_conn_queued(const struct lp_conn *c);
/* Call ops->empty once the queue is (or becomes) empty. */
void lp_conn_want_empty(struct lp_conn *c);
/* Nothing more to send (call with an empty queue): shutdown(SHUT_WR), no more heartbeats.
 * The peer sees EOF after everything sent; keep reading until it closes too (closed() with
 * err 0), so that no unread data makes our close a reset — a reset can make the peer's
 * kernel drop what it has received and not yet read, our last frames included. */
void lp_conn_shutdown(struct lp_conn *c);
/* Stop or go on reading frames (backpressure). While paused, the missed-heartbeat clock
 * does not run. */
void lp_conn_pause_read(struct lp_conn *c, bool paused);
/* Send HEARTBEAT every interval and declare the peer gone after 3 intervals without any
 * frame from it. 0 turns both off. */
int lp_conn_heartbeat(struct lp_conn *c, uint64_t interval_usec);
/* "ADDR:PORT" of the peer, for messages. */
const char *lp_conn_peer(const struct lp_conn *c);

/* ---- addresses ----------------------------------------------------------------------- */

struct sockaddr_storage;
/* "1.2.3.4:5", "[::1]:5" (also "::1" style without port when default_port >= 0). 0 or
 * -EINVAL. */
int lp_addr_parse(const char *text, int default_port, struct sockaddr_storage *ret,
                  unsigned *ret_len);
/* Format an address as "1.2.3.4:5" or "[::1]:5". */
void lp_addr_format(const struct sockaddr_storage *a, char *buf, size_t size);

#endif
