/* test_capture.c — reading output from the loop: chunks and lines (split across reads, longer
 * than line_max, the last one without a newline), the byte count, the bounded drain when a
 * grandchild holds the pipe (DESIGN §1 item 1) and the last words of a child that writes much
 * and dies at once (item 2). */
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>

#include "harness.h"
#include "tend.h"
#include "unit_util.h"

struct fx {
        tend_loop *loop;
        int held_pidfd; /* a grandchild to kill at the end */
        bool subreaper;
};

static int setup(void **state) {
        struct fx *f = calloc(1, sizeof *f);
        if (!f)
                return -1;
        f->held_pidfd = -1;
        test_alarm(40);
        if (tend_loop_new(&f->loop) < 0)
                return -1;
        *state = f;
        return 0;
}

static int teardown(void **state) {
        struct fx *f = *state;
        ut_pidfd_kill_close(f->held_pidfd);
        if (f->subreaper)
                (void)prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0);
        tend_loop_free(f->loop);
        free(f);
        alarm(0);
        return 0;
}

/* What a capture delivered: every piece (with the boundaries kept), and eof. */
struct got {
        char data[1 << 20];
        size_t len;
        size_t pieces;
        size_t piece_end[64]; /* where each of the first 64 pieces ended */
        int eof;
        bool after_eof;      /* data came after eof: a bug */
        bool empty_piece;    /* a zero-length non-eof call: a bug */
        tend_capture *c;
        bool free_on_eof;
        size_t close_after; /* tend_capture_close() from the data call of this piece */
};

static void on_data(tend_capture *c, const char *data, size_t len, bool eof, void *userdata) {
        struct got *g = userdata;
        assert_ptr_equal(c, g->c);
        if (g->eof)
                g->after_eof = true;
        if (eof) {
                assert_int_equal(len, 0);
                g->eof++;
                assert_true(tend_capture_done(c));
                if (g->free_on_eof)
                        g->c = tend_capture_free(c);
                return;
        }
        if (len == 0)
                g->empty_piece = true;
        assert_true(g->len + len <= sizeof g->data);
        memcpy(g->data + g->len, data, len);
        g->len += len;
        if (g->pieces < 64)
                g->piece_end[g->pieces] = g->len;
        g->pieces++;
        if (g->close_after && g->pieces == g->close_after)
                tend_capture_close(c);
}

static struct got *got_new(void) {
        struct got *g = calloc(1, sizeof *g);
        assert_non_null(g);
        return g;
}

/* Piece i of what was delivered, as a string (in a static buffer). */
static const char *piece(const struct got *g, size_t i) {
        static char buf[4096];
        assert_true(i < g->pieces && i < 64);
        size_t start = i ? g->piece_end[i - 1] : 0;
        size_t len = g->piece_end[i] - start;
        assert_true(len < sizeof buf);
        memcpy(buf, g->data + start, len);
        buf[len] = '\0';
        return buf;
}

static void check_clean(const struct got *g) {
        assert_int_equal(g->eof, 1);
        assert_false(g->after_eof);
        assert_false(g->empty_piece);
}

/* A capture on a pipe we write ourselves: returns the write end. */
static int capture_pipe(struct fx *f, const struct tend_capture_opts *opts, struct got *g) {
        int p[2];
        assert_int_equal(pipe2(p, O_CLOEXEC), 0);
        assert_int_equal(tend_capture_new(f->loop, p[0], opts, on_data, g, &g->c), 0);
        /* The capture made its fd non-blocking. */
        return p[1];
}

static void put(int fd, const char *text) {
        size_t len = strlen(text);
        assert_int_equal(write(fd, text, len), (ssize_t)len);
}

/* Run the loop until nothing is readable any more (everything written so far delivered). */
static void settle(struct fx *f) {
        while (tend_loop_run_once(f->loop, 0) > 0) {
        }
}

/* ---- modes ------------------------------------------------------------------------------- */

/* Chunk mode hands over what each read returned; eof comes once, last. */
static void chunk_mode(void **state) {
        struct fx *f = *state;
        struct got *g = got_new();
        int w = capture_pipe(f, NULL, g);
        put(w, "abc");
        settle(f);
        assert_int_equal(g->pieces, 1);
        assert_string_equal(piece(g, 0), "abc");
        put(w, "de\nf");
        settle(f);
        assert_int_equal(g->pieces, 2);
        assert_string_equal(piece(g, 1), "de\nf");
        assert_false(tend_capture_done(g->c));
        close(w);
        ut_run_until(f->loop, &g->eof, 1);
        check_clean(g);
        assert_int_equal(tend_capture_bytes(g->c), 7);
        assert_true(tend_capture_done(g->c));
        /* Drain after the end: nothing more, no second eof. */
        tend_capture_drain(g->c);
        assert_int_equal(g->eof, 1);
        tend_capture_free(g->c);
        free(g);
}

/* read_size bounds each read: 10 bytes with read_size 3 arrive as 3+3+3+1. */
static void chunk_read_size(void **state) {
        struct fx *f = *state;
        struct got *g = got_new();
        struct tend_capture_opts o = { .mode = TEND_CAPTURE_CHUNK, .read_size = 3 };
        int w = capture_pipe(f, &o, g);
        put(w, "0123456789");
        close(w);
        ut_run_until(f->loop, &g->eof, 1);
        check_clean(g);
        assert_int_equal(g->pieces, 4);
        assert_string_equal(piece(g, 0), "012");
        assert_string_equal(piece(g, 3), "9");
        assert_int_equal(tend_capture_bytes(g->c), 10);
        tend_capture_free(g->c);
        free(g);
}

/* Line mode: a line split across reads comes whole; several lines in one read come one by
 * one; the last line without '\n' comes at EOF. */
static void line_mode(void **state) {
        struct fx *f = *state;
        struct got *g = got_new();
        struct tend_capture_opts o = { .mode = TEND_CAPTURE_LINE };
        int w = capture_pipe(f, &o, g);
        put(w, "hel");
        settle(f);
        assert_int_equal(g->pieces, 0); /* no newline yet: held */
        put(w, "lo\nwor");
        settle(f);
        assert_int_equal(g->pieces, 1);
        assert_string_equal(piece(g, 0), "hello\n");
        put(w, "ld\n\nthree\nfour");
        settle(f);
        assert_int_equal(g->pieces, 4);
        assert_string_equal(piece(g, 1), "world\n");
        assert_string_equal(piece(g, 2), "\n");
        assert_string_equal(piece(g, 3), "three\n");
        close(w);
        ut_run_until(f->loop, &g->eof, 1);
        check_clean(g);
        assert_int_equal(g->pieces, 5);
        assert_string_equal(piece(g, 4), "four");
        assert_int_equal(tend_capture_bytes(g->c), strlen("hello\nworld\n\nthree\nfour"));
        tend_capture_free(g->c);
        free(g);
}

/* Line mode with tiny reads: every line still comes whole. */
static void line_mode_small_reads(void **state) {
        struct fx *f = *state;
        struct got *g = got_new();
        struct tend_capture_opts o = { .mode = TEND_CAPTURE_LINE, .read_size = 3 };
        int w = capture_pipe(f, &o, g);
        put(w, "first line\nsecond\nx\nlast without newline");
        close(w);
        ut_run_until(f->loop, &g->eof, 1);
        check_clean(g);
        assert_int_equal(g->pieces, 4);
        assert_string_equal(piece(g, 0), "first line\n");
        assert_string_equal(piece(g, 1), "second\n");
        assert_string_equal(piece(g, 2), "x\n");
        assert_string_equal(piece(g, 3), "last without newline");
        tend_capture_free(g->c);
        free(g);
}

/* A line longer than line_max comes in pieces of line_max; a line of exactly line_max
 * bytes with its newline is one piece. */
static void line_longer_than_max(void **state) {
        struct fx *f = *state;
        struct got *g = got_new();
        struct tend_capture_opts o = { .mode = TEND_CAPTURE_LINE, .line_max = 4 };
        int w = capture_pipe(f, &o, g);
        put(w, "abcdefghij\nabc\nabcd\n");
        close(w);
        ut_run_until(f->loop, &g->eof, 1);
        check_clean(g);
        static const char *const want[] = { "abcd", "efgh", "ij\n", "abc\n", "abcd", "\n" };
        assert_int_equal(g->pieces, 6);
        for (size_t i = 0; i < 6; i++)
                assert_string_equal(piece(g, i), want[i]);
        tend_capture_free(g->c);
        free(g);

        /* The same when the long line arrives across reads. */
        g = got_new();
        w = capture_pipe(f, &o, g);
        put(w, "ab");
        settle(f);
        put(w, "cdef");
        settle(f);
        put(w, "g\n");
        close(w);
        ut_run_until(f->loop, &g->eof, 1);
        check_clean(g);
        assert_int_equal(g->pieces, 2);
        assert_string_equal(piece(g, 0), "abcd");
        assert_string_equal(piece(g, 1), "efg\n");
        tend_capture_free(g->c);
        free(g);
}

/* The eof callback may free the capture. */
static void free_from_eof_callback(void **state) {
        struct fx *f = *state;
        struct got *g = got_new();
        struct tend_capture_opts o = { .mode = TEND_CAPTURE_LINE };
        g->free_on_eof = true;
        int w = capture_pipe(f, &o, g);
        put(w, "partial");
        close(w);
        ut_run_until(f->loop, &g->eof, 1);
        assert_null(g->c);
        assert_int_equal(g->len, 7);
        assert_int_equal(tend_loop_run(f->loop), 0); /* nothing left behind in the loop */
        free(g);

        /* And so may drain's. */
        g = got_new();
        g->free_on_eof = true;
        w = capture_pipe(f, &o, g);
        put(w, "x\ny");
        tend_capture_drain(g->c);
        assert_null(g->c);
        assert_int_equal(g->eof, 1);
        assert_int_equal(g->len, 3);
        close(w);
        free(g);

        /* Bad arguments; free(NULL). */
        tend_capture *c = NULL;
        assert_int_equal(tend_capture_new(f->loop, -1, NULL, on_data, NULL, &c), -EINVAL);
        int p[2];
        assert_int_equal(pipe2(p, O_CLOEXEC), 0);
        assert_int_equal(tend_capture_new(f->loop, p[0], NULL, NULL, NULL, &c), -EINVAL);
        assert_null(c);
        close(p[0]);
        close(p[1]);
        assert_null(tend_capture_free(NULL));
}

/* The consumer closes the capture from its data callback (its reader went away): nothing more
 * is delivered, not the other lines of the same read, no eof; the writer's next write meets
 * EPIPE; a drain and a second close do nothing. In chunk mode and in line mode. */
static void close_from_data_callback(void **state) {
        struct fx *f = *state;
        for (int mode = 0; mode < 2; mode++) {
                struct got *g = got_new();
                struct tend_capture_opts o = { .mode = mode ? TEND_CAPTURE_LINE
                                                            : TEND_CAPTURE_CHUNK };
                g->close_after = 1;
                int w = capture_pipe(f, &o, g);
                put(w, "one\ntwo\nthree\n");
                settle(f);
                assert_true(tend_capture_done(g->c));
                assert_int_equal(g->pieces, 1);
                assert_string_equal(piece(g, 0), mode ? "one\n" : "one\ntwo\nthree\n");
                assert_int_equal(g->eof, 0);
                void (*old)(int) = signal(SIGPIPE, SIG_IGN);
                assert_int_equal(write(w, "x", 1), -1);
                assert_int_equal(errno, EPIPE);
                signal(SIGPIPE, old);
                tend_capture_drain(g->c);
                tend_capture_close(g->c);
                assert_int_equal(g->eof, 0);
                assert_int_equal(g->pieces, 1);
                assert_int_equal(tend_loop_run(f->loop), 0); /* nothing left watched */
                tend_capture_free(g->c);
                close(w);
                free(g);
        }
}

/* ---- splicing ---------------------------------------------------------------------------- */

/* A file in the test session's directory (removed with it even if a test fails first), else
 * in /tmp; unlinked at once, the fd is all we need. */
static int temp_file(int flags) {
        const char *dir = getenv("TEND_TEST_SESSION");
        char path[4096];
        snprintf(path, sizeof path, "%s/capture-XXXXXX", dir && *dir ? dir : "/tmp");
        int fd = mkostemp(path, O_CLOEXEC | flags);
        assert_true(fd >= 0);
        assert_int_equal(unlink(path), 0);
        return fd;
}

/* All of a file from offset 0 (at most sizeof buf). */
static size_t file_bytes(int fd, char *buf, size_t size) {
        ssize_t n = pread(fd, buf, size, 0);
        assert_true(n >= 0);
        return (size_t)n;
}

/* size bytes of a pattern that shows a reordering or a loss: offset i holds 'a' + i % 23. */
static void pattern(char *buf, size_t size, size_t from) {
        for (size_t i = 0; i < size; i++)
                buf[i] = (char)('a' + (from + i) % 23);
}

/* Spliced into a file: every byte lands there in order, the callback sees none (only eof),
 * the count includes them. */
static void splice_to_file(void **state) {
        struct fx *f = *state;
        struct got *g = got_new();
        int w = capture_pipe(f, NULL, g);
        int out = temp_file(0);
        assert_int_equal(tend_capture_splice_to(g->c, out), 0);
        static char data[300000], back[300000 + 1];
        pattern(data, sizeof data, 0);
        /* In pieces that fit the pipe (we are the writer and the loop in one thread). */
        for (size_t off = 0; off < sizeof data; off += 50000) {
                assert_int_equal(write(w, data + off, 50000), 50000);
                settle(f);
        }
        assert_int_equal(tend_capture_bytes(g->c), sizeof data);
        close(w);
        ut_run_until(f->loop, &g->eof, 1);
        check_clean(g);
        assert_int_equal(g->pieces, 0);
        assert_int_equal(file_bytes(out, back, sizeof back), sizeof data);
        assert_memory_equal(back, data, sizeof data);
        assert_int_equal(tend_capture_bytes(g->c), sizeof data);
        tend_capture_free(g->c);
        close(out);
        free(g);
}

/* Spliced into a pipe that fills up: the capture stops reading (nothing spins: the loop
 * settles) and waits for the pipe, goes on when its reader reads, and loses nothing. */
static void splice_to_full_pipe(void **state) {
        struct fx *f = *state;
        struct got *g = got_new();
        int w = capture_pipe(f, NULL, g);
        assert_int_equal(fcntl(w, F_SETFL, O_NONBLOCK), 0); /* we write and run the loop */
        int q[2];
        assert_int_equal(pipe2(q, O_CLOEXEC | O_NONBLOCK), 0);
        assert_int_equal(tend_capture_splice_to(g->c, q[1]), 0);
        int size = fcntl(q[1], F_GETPIPE_SZ);
        assert_true(size > 0 && size <= 1 << 20);
        static char data[1 << 20], back[2 << 20];
        size_t total = (size_t)size * 3, written = 0, got = 0;
        pattern(data, sizeof data, 0);
        /* Fill the destination through the capture, then some more into our pipe. */
        while (written < total) {
                ssize_t n = write(w, data + written, total - written);
                if (n < 0) {
                        assert_int_equal(errno, EAGAIN);
                        break;
                }
                written += (size_t)n;
                settle(f);
        }
        settle(f);
        assert_true(written > (size_t)size);
        uint64_t moved = tend_capture_bytes(g->c);
        assert_true(moved <= (size_t)size);
        /* Now read the destination bit by bit: the capture moves the rest as room comes. */
        while (got < written) {
                ssize_t n = read(q[0], back + got, 4096);
                if (n < 0) {
                        assert_int_equal(errno, EAGAIN);
                        assert_true(tend_loop_run_once(f->loop, 10u * 1000u * 1000u) > 0);
                        continue;
                }
                assert_true(n > 0);
                got += (size_t)n;
                settle(f);
        }
        assert_int_equal(got, written);
        assert_memory_equal(back, data, written);
        assert_int_equal(tend_capture_bytes(g->c), written);
        assert_int_equal(g->pieces, 0);
        close(w);
        ut_run_until(f->loop, &g->eof, 1);
        check_clean(g);
        assert_int_equal(tend_loop_run(f->loop), 0); /* no watch left on the destination */
        tend_capture_free(g->c);
        close(q[0]);
        close(q[1]);
        free(g);
}

/* A destination that takes no splice — a file opened O_APPEND (EINVAL on Linux 6.18) —
 * gets the data through the callback instead, in order, counted once. */
static void splice_refused_falls_back(void **state) {
        struct fx *f = *state;
        struct got *g = got_new();
        int w = capture_pipe(f, NULL, g);
        int out = temp_file(O_APPEND);
        assert_int_equal(tend_capture_splice_to(g->c, out), 0);
        put(w, "first");
        settle(f);
        put(w, "second");
        close(w);
        ut_run_until(f->loop, &g->eof, 1);
        check_clean(g);
        assert_int_equal(g->len, 11);
        assert_memory_equal(g->data, "firstsecond", 11);
        assert_int_equal(tend_capture_bytes(g->c), 11);
        char back[16];
        /* If this kernel splices into O_APPEND files, the data is in the file instead. */
        size_t in_file = file_bytes(out, back, sizeof back);
        assert_int_equal(in_file + g->len, 11);
        tend_capture_free(g->c);
        close(out);
        free(g);
}

/* A write error (the destination pipe's reader is gone: EPIPE) ends splicing: what was
 * spliced before stays there, the rest comes to the callback, whose own write would see the
 * error. */
static void splice_error_falls_back(void **state) {
        struct fx *f = *state;
        struct got *g = got_new();
        int w = capture_pipe(f, NULL, g);
        int q[2];
        assert_int_equal(pipe2(q, O_CLOEXEC | O_NONBLOCK), 0);
        assert_int_equal(tend_capture_splice_to(g->c, q[1]), 0);
        void (*old)(int) = signal(SIGPIPE, SIG_IGN);
        put(w, "spliced");
        settle(f);
        assert_int_equal(tend_capture_bytes(g->c), 7);
        char back[16];
        assert_int_equal(read(q[0], back, sizeof back), 7);
        assert_memory_equal(back, "spliced", 7);
        close(q[0]);
        put(w, "after");
        close(w);
        ut_run_until(f->loop, &g->eof, 1);
        signal(SIGPIPE, old);
        check_clean(g);
        assert_int_equal(g->len, 5);
        assert_memory_equal(g->data, "after", 5);
        assert_int_equal(tend_capture_bytes(g->c), 12);
        tend_capture_free(g->c);
        close(q[1]);
        free(g);
}

/* The bounded drain never waits for a full destination: what it cannot splice comes to the
 * callback, after what was spliced, then eof. */
static void splice_drain_full_destination(void **state) {
        struct fx *f = *state;
        struct got *g = got_new();
        int w = capture_pipe(f, NULL, g);
        int q[2];
        assert_int_equal(pipe2(q, O_CLOEXEC | O_NONBLOCK), 0);
        assert_int_equal(tend_capture_splice_to(g->c, q[1]), 0);
        static char fill[4096];
        memset(fill, 'f', sizeof fill);
        while (write(q[1], fill, sizeof fill) > 0) {
        }
        assert_int_equal(errno, EAGAIN);
        put(w, "left in the pipe");
        settle(f); /* nothing moves: the destination is full */
        assert_int_equal(tend_capture_bytes(g->c), 0);
        assert_int_equal(g->pieces, 0);
        tend_capture_drain(g->c); /* the writer is still there: the bound is what counts */
        assert_int_equal(g->eof, 1);
        assert_int_equal(g->len, 16);
        assert_memory_equal(g->data, "left in the pipe", 16);
        assert_int_equal(tend_capture_bytes(g->c), 16);
        check_clean(g);
        assert_int_equal(tend_loop_run(f->loop), 0); /* no watch left on the destination */
        tend_capture_free(g->c);
        close(w);
        close(q[0]);
        close(q[1]);
        free(g);
}

/* grow_pipe_to: a splice that finds the pipe full grows it, once; a pipe that is never full
 * keeps its size, and so does one that is only read. */
static void splice_grows_a_full_pipe(void **state) {
        struct fx *f = *state;
        struct tend_capture_opts o = { .grow_pipe_to = 256 * 1024 };
        static char data[1 << 20];
        pattern(data, sizeof data, 0);
        for (int splicing = 0; splicing < 2; splicing++) {
                struct got *g = got_new();
                int w = capture_pipe(f, &o, g);
                int out = temp_file(0);
                if (splicing)
                        assert_int_equal(tend_capture_splice_to(g->c, out), 0);
                int size = fcntl(w, F_GETPIPE_SZ);
                assert_true(size > 0 && size < 256 * 1024);
                assert_int_equal(write(w, data, 1000), 1000); /* not full: no change */
                settle(f);
                assert_int_equal(fcntl(w, F_GETPIPE_SZ), size);
                assert_int_equal(write(w, data, (size_t)size), size); /* full */
                settle(f);
                assert_int_equal(fcntl(w, F_GETPIPE_SZ), splicing ? 256 * 1024 : size);
                assert_int_equal(tend_capture_bytes(g->c), 1000 + (size_t)size);
                close(w);
                ut_run_until(f->loop, &g->eof, 1);
                check_clean(g);
                tend_capture_free(g->c);
                close(out);
                free(g);
        }
}

/* Pause holds a splicing capture too; fd -1 stops splicing; what cannot splice says so. */
static void splice_pause_stop_and_refusals(void **state) {
        struct fx *f = *state;
        struct got *g = got_new();
        int w = capture_pipe(f, NULL, g);
        int out = temp_file(0);
        assert_int_equal(tend_capture_splice_to(g->c, out), 0);
        tend_capture_pause(g->c, true);
        put(w, "held");
        settle(f);
        assert_int_equal(tend_capture_bytes(g->c), 0);
        tend_capture_pause(g->c, false);
        settle(f);
        assert_int_equal(tend_capture_bytes(g->c), 4);
        assert_int_equal(g->pieces, 0);
        assert_int_equal(tend_capture_splice_to(g->c, -1), 0);
        put(w, "read");
        settle(f);
        assert_int_equal(g->len, 4);
        assert_memory_equal(g->data, "read", 4);
        char back[16];
        assert_int_equal(file_bytes(out, back, sizeof back), 4);
        assert_memory_equal(back, "held", 4);
        close(w);
        ut_run_until(f->loop, &g->eof, 1);
        check_clean(g);
        assert_int_equal(tend_capture_splice_to(g->c, out), -EINVAL); /* after the end */
        tend_capture_free(g->c);
        free(g);

        /* Line mode wants to see the data. */
        g = got_new();
        struct tend_capture_opts o = { .mode = TEND_CAPTURE_LINE };
        w = capture_pipe(f, &o, g);
        assert_int_equal(tend_capture_splice_to(g->c, out), -EINVAL);
        tend_capture_free(g->c);
        close(w);
        free(g);

        /* Not a pipe (a socket here; a pty in real life): splice needs a pipe on one side. */
        g = got_new();
        int sv[2];
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        assert_int_equal(tend_capture_new(f->loop, sv[0], NULL, on_data, g, &g->c), 0);
        assert_int_equal(tend_capture_splice_to(g->c, out), -EINVAL);
        tend_capture_free(g->c);
        close(sv[1]);
        close(out);
        free(g);
}

/* ---- from a child ------------------------------------------------------------------------ */

struct exited {
        int calls;
        struct tend_exit ex;
        tend_capture *drain; /* drain this capture from the exit callback */
};

static void on_exit_drain(tend_proc *p, int err, const struct tend_exit *ex, void *userdata) {
        struct exited *e = userdata;
        assert_int_equal(err, 0);
        e->calls++;
        e->ex = *ex;
        if (e->drain)
                tend_capture_drain(e->drain);
}

/* The child exits but its grandchild holds the pipe forever (`sh -c 'sleep 100 & echo hi'`):
 * once the exit is known, the drain delivers "hi\n" and eof at once, without waiting for the
 * grandchild. */
static void drain_bounded_when_pipe_held(void **state) {
        struct fx *f = *state;
        /* The grandchild is re-parented to us when its parent exits, so we can reap it. */
        assert_int_equal(prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), 0);
        f->subreaper = true;
        ut_setup_ready_env();
        struct tend_spawn_opts o = { .argv = UT_ARGV(helper_path(), "hold-pipe") };
        o.stdio[0].kind = TEND_STDIO_NULL;
        o.stdio[1].kind = TEND_STDIO_PIPE;
        tend_proc *p = NULL;
        pid_t holder = ut_spawn_ready(f->loop, &o, &p, NULL, 0);
        assert_true(holder != tend_proc_pid(p));
        f->held_pidfd = ut_pidfd_open(holder);
        assert_true(f->held_pidfd >= 0);

        struct got *g = got_new();
        assert_int_equal(tend_capture_new(f->loop, tend_proc_take_stdio_fd(p, 1), NULL, on_data,
                                          g, &g->c),
                         0);
        struct exited e = { .drain = g->c };
        tend_proc_on_exit(p, on_exit_drain, &e);
        ut_run_until(f->loop, &e.calls, 1);
        /* The drain ran inside the exit callback: by now everything is in. */
        assert_int_equal(e.ex.code, 0);
        assert_int_equal(g->eof, 1);
        check_clean(g);
        assert_int_equal(g->len, 3);
        assert_memory_equal(g->data, "hi\n", 3);
        assert_int_equal(tend_capture_bytes(g->c), 3);
        assert_true(tend_capture_done(g->c));
        /* The grandchild still holds its end: the capture did not wait for it. */
        assert_false(ut_pidfd_ended(f->held_pidfd, 0));
        tend_capture_drain(g->c); /* idempotent */
        assert_int_equal(g->eof, 1);
        tend_capture_free(g->c);
        free(g);
        tend_proc_free(p);
        ut_pidfd_kill_close(f->held_pidfd);
        f->held_pidfd = -1;
        ut_assert_no_children();
}

/* The stdout flood pattern of the helper: 12-byte lines "O 000000001\n", ... */
static void check_pattern(const char *data, size_t len) {
        char line[32];
        for (size_t off = 0; off < len; off += 12) {
                snprintf(line, sizeof line, "O %09u\n", (unsigned)(off / 12 + 1) % 1000000000u);
                size_t n = len - off < 12 ? len - off : 12;
                if (memcmp(data + off, line, n) != 0)
                        fail_msg("byte %zu: pattern mismatch", off);
        }
}

/* A child writes 300,000 bytes (much more than a pipe holds) and _exits at once: every byte
 * arrives, in order, whether the stream simply runs to EOF or is drained from the exit
 * callback (which may run while up to a pipe's worth is still unread). */
static void last_words_arrive(void **state) {
        struct fx *f = *state;
        enum { BYTES = 300000 };
        for (int drained = 0; drained < 2; drained++) {
                struct tend_spawn_opts o = { .argv = UT_ARGV(helper_path(), "last-words",
                                                             "300000") };
                o.stdio[0].kind = TEND_STDIO_NULL;
                o.stdio[1].kind = TEND_STDIO_PIPE;
                tend_proc *p = ut_spawn(f->loop, &o);
                struct got *g = got_new();
                assert_int_equal(tend_capture_new(f->loop, tend_proc_take_stdio_fd(p, 1), NULL,
                                                  on_data, g, &g->c),
                                 0);
                struct exited e = { .drain = drained ? g->c : NULL };
                tend_proc_on_exit(p, on_exit_drain, &e);
                ut_run_until(f->loop, &e.calls, 1);
                ut_run_until(f->loop, &g->eof, 1);
                check_clean(g);
                assert_int_equal(e.ex.code, 3);
                if (g->len != BYTES)
                        fail_msg("%s: %zu of %d bytes", drained ? "drained" : "to EOF", g->len,
                                 BYTES);
                check_pattern(g->data, g->len);
                assert_int_equal(tend_capture_bytes(g->c), BYTES);
                tend_capture_free(g->c);
                free(g);
                tend_proc_free(p);
        }
        ut_assert_no_children();
}

/* A pty master ends with EIO rather than EOF: that too is the end of the stream. */
static void pty_stream_ends(void **state) {
        struct fx *f = *state;
        struct tend_spawn_opts o = { .argv = UT_ARGV(helper_path(), "echo", "on", "a", "tty"),
                                     .flags = TEND_SPAWN_SETSID };
        o.stdio[0].kind = TEND_STDIO_NULL;
        o.stdio[1].kind = TEND_STDIO_PTY;
        o.stdio[2].kind = TEND_STDIO_PTY;
        tend_proc *p = ut_spawn(f->loop, &o);
        struct got *g = got_new();
        struct tend_capture_opts co = { .mode = TEND_CAPTURE_LINE };
        assert_int_equal(tend_capture_new(f->loop, tend_proc_take_pty_fd(p), &co, on_data, g,
                                          &g->c),
                         0);
        struct exited e = { 0 };
        tend_proc_on_exit(p, on_exit_drain, &e);
        ut_run_until(f->loop, &e.calls, 1);
        ut_run_until(f->loop, &g->eof, 1);
        check_clean(g);
        assert_int_equal(g->pieces, 1);
        assert_string_equal(piece(g, 0), "on a tty\r\n");
        tend_capture_free(g->c);
        free(g);
        tend_proc_free(p);
}

/* Two streams of one child at once (flood writes both, interleaved): each complete. */
static void two_streams_flood(void **state) {
        struct fx *f = *state;
        struct tend_spawn_opts o = { .argv = UT_ARGV(helper_path(), "flood", "200000") };
        o.stdio[0].kind = TEND_STDIO_NULL;
        o.stdio[1].kind = TEND_STDIO_PIPE;
        o.stdio[2].kind = TEND_STDIO_PIPE;
        tend_proc *p = ut_spawn(f->loop, &o);
        struct got *out = got_new(), *err = got_new();
        assert_int_equal(tend_capture_new(f->loop, tend_proc_take_stdio_fd(p, 1), NULL, on_data,
                                          out, &out->c),
                         0);
        assert_int_equal(tend_capture_new(f->loop, tend_proc_take_stdio_fd(p, 2), NULL, on_data,
                                          err, &err->c),
                         0);
        struct exited e = { 0 };
        tend_proc_on_exit(p, on_exit_drain, &e);
        assert_int_equal(tend_loop_run(f->loop), 0); /* ends with both EOFs and the exit */
        assert_int_equal(e.calls, 1);
        assert_int_equal(e.ex.code, 0);
        check_clean(out);
        check_clean(err);
        assert_int_equal(out->len, 200000);
        assert_int_equal(err->len, 200000);
        check_pattern(out->data, out->len);
        assert_int_equal(err->data[0], 'E');
        tend_capture_free(out->c);
        tend_capture_free(err->c);
        free(out);
        free(err);
        tend_proc_free(p);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
static const struct CMUnitTest tests[] = {
        T(chunk_mode),
        T(chunk_read_size),
        T(line_mode),
        T(line_mode_small_reads),
        T(line_longer_than_max),
        T(free_from_eof_callback),
        T(close_from_data_callback),
        T(splice_to_file),
        T(splice_to_full_pipe),
        T(splice_refused_falls_back),
        T(splice_error_falls_back),
        T(splice_drain_full_destination),
        T(splice_grows_a_full_pipe),
        T(splice_pause_stop_and_refusals),
        T(drain_bounded_when_pipe_held),
        T(last_words_arrive),
        T(pty_stream_ends),
        T(two_streams_flood),
};

TEND_TEST_MAIN(tests)
