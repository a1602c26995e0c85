/* test_record.c — the record format: the checkbox test vector, write/read round trips, and
 * malformed input refused at the right line.
 *
 * Usage: test_record [--list | FILTER] */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <sodium.h>
#include <zlib.h>

#include <cmocka.h>

#include "tend.h"

#define VECTOR "[0.123,\"stdout\",\"c29tZQpkYXRh\"]"
#define START_USEC 1000000000u

/* ---- helpers ----------------------------------------------------------------------------- */

struct entry {
        double delay;
        int stream;
        unsigned char *data;
        size_t len;
};

struct entries {
        size_t n, cap;
        struct entry *e;
        size_t stop_after; /* cb returns 7 after this many entries; 0: never */
};

static int collect(double delay, int stream, const void *data, size_t len, void *userdata) {
        struct entries *es = userdata;
        if (es->n == es->cap) {
                es->cap = es->cap ? es->cap * 2 : 16;
                es->e = realloc(es->e, es->cap * sizeof *es->e);
                assert_non_null(es->e);
        }
        struct entry *e = &es->e[es->n++];
        e->delay = delay;
        e->stream = stream;
        e->len = len;
        e->data = malloc(len ? len : 1);
        assert_non_null(e->data);
        if (len)
                memcpy(e->data, data, len);
        if (es->stop_after && es->n == es->stop_after)
                return 7;
        return 0;
}

static void entries_free(struct entries *es) {
        for (size_t i = 0; i < es->n; i++)
                free(es->e[i].data);
        free(es->e);
        memset(es, 0, sizeof *es);
}

static void expect_entry(const struct entries *es, size_t i, double delay, int stream,
                         const void *data, size_t len) {
        assert_true(i < es->n);
        const struct entry *e = &es->e[i];
        assert_true(e->delay > delay - 1e-9 && e->delay < delay + 1e-9);
        assert_int_equal(e->stream, stream);
        assert_int_equal(e->len, len);
        assert_memory_equal(e->data, data, len);
}

/* Each test that touches the disk gets its own temporary path, removed after it. */
static int setup_path(void **state) {
        char *path = strdup("/tmp/test_record.XXXXXX");
        assert_non_null(path);
        int fd = mkstemp(path);
        assert_true(fd >= 0);
        close(fd);
        *state = path;
        return 0;
}

static int teardown_path(void **state) {
        unlink(*state);
        free(*state);
        return 0;
}

static void write_raw(const char *path, const void *data, size_t len) {
        int fd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, data, len), (ssize_t)len);
        assert_int_equal(close(fd), 0);
}

/* mode: "wb" (default compression) or "wb0" (stored: bytes land at predictable offsets). */
static void write_gz(const char *path, const char *mode, const void *data, size_t len) {
        gzFile gz = gzopen(path, mode);
        assert_non_null(gz);
        if (len)
                assert_int_equal(gzwrite(gz, data, (unsigned)len), (int)len);
        assert_int_equal(gzclose(gz), Z_OK);
}

static char *read_gz_text(const char *path) {
        gzFile gz = gzopen(path, "rb");
        assert_non_null(gz);
        size_t cap = 1 << 20, len = 0;
        char *buf = malloc(cap + 1);
        assert_non_null(buf);
        int n;
        while ((n = gzread(gz, buf + len, (unsigned)(cap - len))) > 0)
                len += (size_t)n;
        assert_true(n == 0);
        assert_true(len < cap);
        gzclose(gz);
        buf[len] = '\0';
        return buf;
}

static off_t file_size(const char *path) {
        struct stat st;
        assert_int_equal(stat(path, &st), 0);
        return st.st_size;
}

static void read_ok(const char *path, struct entries *es) {
        unsigned long line = 12345;
        assert_int_equal(tend_record_read(path, collect, es, &line), 0);
        assert_int_equal(line, 12345); /* untouched on success */
}

/* ---- the vector and single lines --------------------------------------------------------- */

static void test_vector_parse(void **state) {
        (void)state;
        double delay = -1;
        int stream = 0;
        void *data = NULL;
        size_t len = 0;
        assert_int_equal(tend_record_parse_line(VECTOR, &delay, &stream, &data, &len), 0);
        assert_true(delay == 0.123);
        assert_int_equal(stream, 1);
        assert_int_equal(len, 9);
        assert_memory_equal(data, "some\ndata", 9);
        free(data);
}

static void test_vector_format(void **state) {
        (void)state;
        char *line = NULL;
        assert_int_equal(tend_record_format_line(0.123, 1, "some\ndata", 9, &line), 0);
        assert_string_equal(line, VECTOR);
        free(line);
}

/* The record's own base64 encoder writes what libsodium's does (standard alphabet, padded),
 * for every length around the padding cases and every byte value in every position. */
static void test_base64_as_sodium(void **state) {
        (void)state;
        static unsigned char data[1030];
        static char want[1400];
        for (size_t i = 0; i < sizeof data; i++)
                data[i] = (unsigned char)(i * 7 + i / 256);
        for (size_t len = 0; len <= sizeof data; len += len < 300 ? 1 : 241) {
                char *line = NULL;
                assert_int_equal(tend_record_format_line(0, 1, data, len, &line), 0);
                sodium_bin2base64(want, sizeof want, data, len, sodium_base64_VARIANT_ORIGINAL);
                const char *head = "[0.0,\"stdout\",\"";
                assert_memory_equal(line, head, strlen(head));
                const char *b64 = line + strlen(head);
                assert_int_equal(strlen(b64), strlen(want) + 2);
                assert_memory_equal(b64, want, strlen(want));
                assert_string_equal(b64 + strlen(want), "\"]");
                free(line);
        }
}

static void expect_format(double delay, int stream, const char *data, const char *want) {
        char *line = NULL;
        assert_int_equal(tend_record_format_line(delay, stream, data, strlen(data), &line), 0);
        assert_string_equal(line, want);
        free(line);
}

static void test_format_delays(void **state) {
        (void)state;
        expect_format(0, 1, "", "[0.0,\"stdout\",\"\"]");
        expect_format(-0.0, 1, "", "[0.0,\"stdout\",\"\"]");
        expect_format(1.5, 2, "a", "[1.5,\"stderr\",\"YQ==\"]");
        expect_format(2, 2, "ab", "[2.0,\"stderr\",\"YWI=\"]");
        expect_format(0.000001, 1, "abc", "[0.000001,\"stdout\",\"YWJj\"]");
        expect_format(1e-7, 1, "", "[0.0,\"stdout\",\"\"]");       /* below a microsecond */
        expect_format(0.0000015, 1, "", "[0.000002,\"stdout\",\"\"]"); /* rounded */
        expect_format(12345.6789, 1, "", "[12345.6789,\"stdout\",\"\"]");
        expect_format(86400 * 365.0, 1, "", "[31536000.0,\"stdout\",\"\"]");
}

static void test_format_bad_args(void **state) {
        (void)state;
        char *line = NULL;
        assert_int_equal(tend_record_format_line(-0.001, 1, "a", 1, &line), -EINVAL);
        assert_int_equal(tend_record_format_line(0.0 / 0.0, 1, "a", 1, &line), -EINVAL);
        assert_int_equal(tend_record_format_line(1.0 / 0.0, 1, "a", 1, &line), -EINVAL);
        assert_int_equal(tend_record_format_line(1e300, 1, "a", 1, &line), -ERANGE);
        assert_int_equal(tend_record_format_line(0, 0, "a", 1, &line), -EINVAL);
        assert_int_equal(tend_record_format_line(0, 3, "a", 1, &line), -EINVAL);
        assert_int_equal(tend_record_format_line(0, 1, NULL, 1, &line), -EINVAL);
        assert_null(line);
        assert_int_equal(tend_record_format_line(0, 1, NULL, 0, &line), 0);
        assert_string_equal(line, "[0.0,\"stdout\",\"\"]");
        free(line);
}

static void test_parse_variants(void **state) {
        (void)state;
        double delay = -1;
        int stream = 0;
        void *data = NULL;
        size_t len = 99;

        /* An integer delay, empty data, spaces and a newline, as Python's json.dump may write. */
        assert_int_equal(tend_record_parse_line(" [ 2 , \"stderr\" , \"\" ]\n", &delay, &stream,
                                                &data, &len),
                         0);
        assert_true(delay == 2.0);
        assert_int_equal(stream, 2);
        assert_int_equal(len, 0);
        assert_non_null(data);
        free(data);

        /* Full double precision and an exponent, as checkbox writes. */
        assert_int_equal(tend_record_parse_line("[1.2345678901234e-05,\"stdout\",\"AP8=\"]",
                                                &delay, &stream, &data, &len),
                         0);
        assert_true(delay == 1.2345678901234e-05);
        assert_int_equal(len, 2);
        assert_memory_equal(data, "\0\377", 2);
        free(data);

        /* -0 is not below zero; it comes back as plain 0. */
        assert_int_equal(tend_record_parse_line("[-0.0,\"stdout\",\"\"]", &delay, &stream, &data,
                                                &len),
                         0);
        assert_true(delay == 0 && !signbit(delay));
        free(data);

        data = (void *)0x1;
        assert_int_equal(tend_record_parse_line("[0,\"stdout\"]", &delay, &stream, &data, &len),
                         -TEND_EBADRECORD);
        assert_ptr_equal(data, (void *)0x1); /* untouched on failure */
}

/* ---- round trips ------------------------------------------------------------------------- */

static void test_roundtrip_lines(void **state) {
        const char *path = *state;
        tend_record *r = NULL;
        assert_int_equal(tend_record_open(path, START_USEC, &r), 0);
        assert_int_equal(tend_record_write(r, 1, "some\ndata\n", 10, START_USEC + 123000), 0);
        assert_int_equal(tend_record_write(r, 1, "a\nb\nc\n", 6, START_USEC + 1623000), 0);
        assert_int_equal(tend_record_write(r, 2, "oops\n", 5, START_USEC + 1623001), 0);
        assert_int_equal(tend_record_close(r), 0);

        /* The file itself: compact, one record per line, delays since the previous record. */
        char *text = read_gz_text(path);
        assert_string_equal(text, "[0.123,\"stdout\",\"c29tZQo=\"]\n"
                                  "[0.0,\"stdout\",\"ZGF0YQo=\"]\n"
                                  "[1.5,\"stdout\",\"YQo=\"]\n"
                                  "[0.0,\"stdout\",\"Ygo=\"]\n"
                                  "[0.0,\"stdout\",\"Ywo=\"]\n"
                                  "[0.000001,\"stderr\",\"b29wcwo=\"]\n");
        free(text);

        struct entries es = { 0 };
        read_ok(path, &es);
        assert_int_equal(es.n, 6);
        expect_entry(&es, 0, 0.123, 1, "some\n", 5);
        expect_entry(&es, 1, 0, 1, "data\n", 5);
        expect_entry(&es, 2, 1.5, 1, "a\n", 2);
        expect_entry(&es, 3, 0, 1, "b\n", 2);
        expect_entry(&es, 4, 0, 1, "c\n", 2);
        expect_entry(&es, 5, 0.000001, 2, "oops\n", 5);
        entries_free(&es);
}

static void test_roundtrip_partial_at_close(void **state) {
        const char *path = *state;
        tend_record *r = NULL;
        assert_int_equal(tend_record_open(path, START_USEC, &r), 0);
        assert_int_equal(tend_record_write(r, 1, "line\npart", 9, START_USEC + 100), 0);
        assert_int_equal(tend_record_write(r, 1, "ial", 3, START_USEC + 300), 0);
        assert_int_equal(tend_record_close(r), 0);

        struct entries es = { 0 };
        read_ok(path, &es);
        assert_int_equal(es.n, 2);
        expect_entry(&es, 0, 0.0001, 1, "line\n", 5);
        /* Timed at the arrival of its last byte. */
        expect_entry(&es, 1, 0.0002, 1, "partial", 7);
        entries_free(&es);
}

static void test_roundtrip_partial_completed(void **state) {
        const char *path = *state;
        tend_record *r = NULL;
        assert_int_equal(tend_record_open(path, START_USEC, &r), 0);
        assert_int_equal(tend_record_write(r, 1, "he", 2, START_USEC + 1000), 0);
        assert_int_equal(tend_record_write(r, 1, "llo\nwor", 7, START_USEC + 2000), 0);
        assert_int_equal(tend_record_write(r, 1, "ld\n", 3, START_USEC + 5000), 0);
        assert_int_equal(tend_record_close(r), 0);

        struct entries es = { 0 };
        read_ok(path, &es);
        assert_int_equal(es.n, 2);
        expect_entry(&es, 0, 0.002, 1, "hello\n", 6);
        expect_entry(&es, 1, 0.003, 1, "world\n", 6);
        entries_free(&es);
}

static void test_roundtrip_stream_change(void **state) {
        const char *path = *state;
        tend_record *r = NULL;
        assert_int_equal(tend_record_open(path, START_USEC, &r), 0);
        assert_int_equal(tend_record_write(r, 1, "prompt> ", 8, START_USEC + 10), 0);
        assert_int_equal(tend_record_write(r, 2, "warn", 4, START_USEC + 20), 0);
        assert_int_equal(tend_record_write(r, 2, "ing\n", 4, START_USEC + 30), 0);
        assert_int_equal(tend_record_write(r, 1, "done\n", 5, START_USEC + 40), 0);
        /* A clock that goes back gives a delay of 0, never a negative one. */
        assert_int_equal(tend_record_write(r, 2, "late\n", 5, START_USEC + 5), 0);
        assert_int_equal(tend_record_close(r), 0);

        struct entries es = { 0 };
        read_ok(path, &es);
        assert_int_equal(es.n, 4);
        expect_entry(&es, 0, 0.00001, 1, "prompt> ", 8);
        expect_entry(&es, 1, 0.00002, 2, "warning\n", 8);
        expect_entry(&es, 2, 0.00001, 1, "done\n", 5);
        expect_entry(&es, 3, 0, 2, "late\n", 5);
        entries_free(&es);
}

static void test_roundtrip_binary(void **state) {
        const char *path = *state;
        unsigned char bin[256 + 6];
        for (int i = 0; i < 256; i++)
                bin[i] = (unsigned char)i;
        /* Invalid UTF-8: a lone continuation byte, an overlong form, a cut sequence. */
        memcpy(bin + 256, "\x80\xc0\xaf\xe2\x82\x00", 6);

        tend_record *r = NULL;
        assert_int_equal(tend_record_open(path, START_USEC, &r), 0);
        assert_int_equal(tend_record_write(r, 2, bin, sizeof bin, START_USEC + 7), 0);
        assert_int_equal(tend_record_close(r), 0);

        char *text = read_gz_text(path);
        for (const char *p = text; *p; p++)
                assert_true((unsigned char)*p < 0x80); /* the file is ASCII */
        free(text);

        struct entries es = { 0 };
        read_ok(path, &es);
        /* Split after the one '\n' (byte 10). */
        assert_int_equal(es.n, 2);
        expect_entry(&es, 0, 0.000007, 2, bin, 11);
        expect_entry(&es, 1, 0, 2, bin + 11, sizeof bin - 11);
        entries_free(&es);
}

static void test_roundtrip_long_line(void **state) {
        const char *path = *state;
        size_t len = 200 * 1024 + 1;
        char *big = malloc(len);
        assert_non_null(big);
        for (size_t i = 0; i < len - 1; i++)
                big[i] = (char)('a' + i % 26);
        big[len - 1] = '\n';

        tend_record *r = NULL;
        assert_int_equal(tend_record_open(path, START_USEC, &r), 0);
        assert_int_equal(tend_record_write(r, 1, big, len, START_USEC + 1), 0);
        assert_int_equal(tend_record_close(r), 0);

        struct entries es = { 0 };
        read_ok(path, &es);
        /* No record holds more than 64 KiB: 3 full pieces, then the rest with the newline. */
        assert_int_equal(es.n, 4);
        size_t off = 0;
        for (size_t i = 0; i < es.n; i++) {
                size_t want = i < 3 ? 65536 : len - 3 * 65536;
                expect_entry(&es, i, i == 0 ? 0.000001 : 0, 1, big + off, want);
                off += want;
        }
        assert_int_equal(off, len);
        entries_free(&es);
        free(big);
}

static void test_roundtrip_long_partial(void **state) {
        const char *path = *state;
        size_t chunk = 40 * 1024;
        char *buf = malloc(2 * chunk); /* what was written, as one piece, to compare with */
        assert_non_null(buf);
        memset(buf, 'x', 2 * chunk);

        tend_record *r = NULL;
        assert_int_equal(tend_record_open(path, START_USEC, &r), 0);
        /* 40 KiB held; the next 40 KiB fills the 64 KiB hold, which goes out as it is. */
        assert_int_equal(tend_record_write(r, 1, buf, chunk, START_USEC + 1), 0);
        assert_int_equal(tend_record_write(r, 1, buf, chunk, START_USEC + 2), 0);
        assert_int_equal(tend_record_write(r, 1, "end\n", 4, START_USEC + 3), 0);
        assert_int_equal(tend_record_close(r), 0);

        struct entries es = { 0 };
        read_ok(path, &es);
        assert_int_equal(es.n, 2);
        expect_entry(&es, 0, 0.000002, 1, buf, 65536);
        assert_int_equal(es.e[1].len, 2 * chunk - 65536 + 4);
        assert_memory_equal(es.e[1].data, buf, 2 * chunk - 65536);
        assert_memory_equal(es.e[1].data + 2 * chunk - 65536, "end\n", 4);
        entries_free(&es);
        free(buf);
}

static void test_empty_record(void **state) {
        const char *path = *state;
        tend_record *r = NULL;
        assert_int_equal(tend_record_open(path, START_USEC, &r), 0);
        assert_int_equal(tend_record_write(r, 1, "", 0, START_USEC + 1), 0);
        assert_int_equal(tend_record_close(r), 0);
        assert_true(file_size(path) > 0); /* a gzip header and trailer, nothing inside */

        struct entries es = { 0 };
        read_ok(path, &es);
        assert_int_equal(es.n, 0);

        /* A zero-byte file is an empty record too. */
        write_raw(path, "", 0);
        read_ok(path, &es);
        assert_int_equal(es.n, 0);
        entries_free(&es);
}

static void test_uncompressed_accepted(void **state) {
        const char *path = *state;
        const char text[] = VECTOR "\n[1,\"stderr\",\"eA==\"]"; /* no final newline */
        write_raw(path, text, sizeof text - 1);
        struct entries es = { 0 };
        read_ok(path, &es);
        assert_int_equal(es.n, 2);
        expect_entry(&es, 0, 0.123, 1, "some\ndata", 9);
        expect_entry(&es, 1, 1, 2, "x", 1);
        entries_free(&es);
}

static void test_trailing_blank_lines(void **state) {
        const char *path = *state;
        const char text[] = VECTOR "\n\n  \n";
        write_gz(path, "wb", text, sizeof text - 1);
        struct entries es = { 0 };
        read_ok(path, &es);
        assert_int_equal(es.n, 1);
        entries_free(&es);
}

static void test_callback_stops(void **state) {
        const char *path = *state;
        const char text[] = VECTOR "\n" VECTOR "\n" VECTOR "\n";
        write_gz(path, "wb", text, sizeof text - 1);
        struct entries es = { .stop_after = 2 };
        assert_int_equal(tend_record_read(path, collect, &es, NULL), 7);
        assert_int_equal(es.n, 2);
        entries_free(&es);
}

static void test_missing_file(void **state) {
        (void)state;
        unsigned long line = 42;
        assert_int_equal(tend_record_read("/nonexistent/x.record.gz", collect, NULL, &line),
                         -ENOENT);
        assert_int_equal(line, 42);
        tend_record *r = NULL;
        assert_int_equal(tend_record_open("/nonexistent/x.record.gz", 0, &r), -ENOENT);
        assert_null(r);
}

static void test_write_error(void **state) {
        (void)state;
        if (access("/dev/full", W_OK) != 0)
                skip();
        tend_record *r = NULL;
        assert_int_equal(tend_record_open("/dev/full", 0, &r), 0);
        /* zlib holds the data; the error shows when it is written, at the latest at close. */
        int e = tend_record_write(r, 1, "x\n", 2, 1);
        assert_true(e == 0 || e == -ENOSPC);
        assert_int_equal(tend_record_close(r), -ENOSPC);
}

static void test_write_bad_args(void **state) {
        const char *path = *state;
        tend_record *r = NULL;
        assert_int_equal(tend_record_open(path, 0, &r), 0);
        assert_int_equal(tend_record_write(r, 0, "x", 1, 1), -EINVAL);
        assert_int_equal(tend_record_write(r, 3, "x", 1, 1), -EINVAL);
        assert_int_equal(tend_record_write(r, 1, NULL, 1, 1), -EINVAL);
        assert_int_equal(tend_record_write(NULL, 1, "x", 1, 1), -EINVAL);
        assert_int_equal(tend_record_close(r), 0);
        assert_int_equal(tend_record_close(NULL), 0);
}

/* ---- malformed input --------------------------------------------------------------------- */

static void expect_bad(const char *path, const char *text, unsigned long want_line,
                       size_t want_entries) {
        write_gz(path, "wb", text, strlen(text));
        struct entries es = { 0 };
        unsigned long line = 0;
        assert_int_equal(tend_record_read(path, collect, &es, &line), -TEND_EBADRECORD);
        assert_int_equal(line, want_line);
        /* Lines before the bad one have been handed over, in order. */
        assert_int_equal(es.n, want_entries);
        entries_free(&es);
}

static void test_bad_not_array(void **state) {
        expect_bad(*state, VECTOR "\n{\"delay\":0}\n" VECTOR "\n", 2, 1);
        expect_bad(*state, "\"stdout\"\n", 1, 0);
}

static void test_bad_two_elements(void **state) {
        expect_bad(*state, VECTOR "\n" VECTOR "\n[0.1,\"stdout\"]\n", 3, 2);
        expect_bad(*state, "[0.1,\"stdout\",\"YQ==\",1]\n", 1, 0);
        expect_bad(*state, "[]\n", 1, 0);
}

static void test_bad_stream(void **state) {
        expect_bad(*state, "[0.1,\"stdin\",\"YQ==\"]\n", 1, 0);
        expect_bad(*state, VECTOR "\n[0.1,\"STDOUT\",\"YQ==\"]\n", 2, 1);
        expect_bad(*state, "[0.1,1,\"YQ==\"]\n", 1, 0);
        expect_bad(*state, "[0.1,\"stdout\\u0000\",\"YQ==\"]\n", 1, 0);
}

static void test_bad_delay(void **state) {
        expect_bad(*state, VECTOR "\n[-0.5,\"stdout\",\"YQ==\"]\n", 2, 1);
        expect_bad(*state, "[\"0.1\",\"stdout\",\"YQ==\"]\n", 1, 0);
        expect_bad(*state, "[null,\"stdout\",\"YQ==\"]\n", 1, 0);
        expect_bad(*state, "[1e999,\"stdout\",\"YQ==\"]\n", 1, 0);
}

static void test_bad_base64(void **state) {
        expect_bad(*state, VECTOR "\n" VECTOR "\n" VECTOR "\n[0,\"stdout\",\"YQ=\"]\n", 4, 3);
        expect_bad(*state, "[0,\"stdout\",\"Y Q==\"]\n", 1, 0);
        expect_bad(*state, "[0,\"stdout\",\"@@@@\"]\n", 1, 0);
        expect_bad(*state, "[0,\"stdout\",\"YR==\"]\n", 1, 0); /* stray bits */
        expect_bad(*state, "[0,\"stdout\",\"YQ\"]\n", 1, 0);   /* padding missing */
        expect_bad(*state, "[0,\"stdout\",null]\n", 1, 0);
}

static void test_bad_json(void **state) {
        expect_bad(*state, VECTOR "x\n", 1, 0);
        expect_bad(*state, VECTOR "\n[0.1,\"stdout\",\"YQ==\"\n", 2, 1);
        /* A blank line is only allowed at the end: here it is line 2. */
        expect_bad(*state, VECTOR "\n\n" VECTOR "\n", 2, 1);
}

static void test_bad_nul_in_line(void **state) {
        const char *path = *state;
        const char text[] = "[0,\"stdout\",\"YQ==\"]\0\n";
        write_gz(path, "wb", text, sizeof text - 1);
        unsigned long line = 0;
        assert_int_equal(tend_record_read(path, collect, NULL, &line), -TEND_EBADRECORD);
        assert_int_equal(line, 1);
}

static void test_bad_plain_garbage(void **state) {
        const char *path = *state;
        /* Not gzip: read as it is, and it is not JSON either. */
        const char text[] = "this is not a record\nnor is this\n";
        write_raw(path, text, sizeof text - 1);
        struct entries es = { 0 };
        unsigned long line = 0;
        assert_int_equal(tend_record_read(path, collect, &es, &line), -TEND_EBADRECORD);
        assert_int_equal(line, 1);
        assert_int_equal(es.n, 0);

        const unsigned char binary[] = { 0x00, 0xff, 0x13, 0x37, 0x0a, 0x00 };
        write_raw(path, binary, sizeof binary);
        assert_int_equal(tend_record_read(path, collect, &es, &line), -TEND_EBADRECORD);
        assert_int_equal(line, 1);
        entries_free(&es);
}

static void test_bad_truncated_gzip(void **state) {
        const char *path = *state;
        const char text[] = VECTOR "\n[0.5,\"stderr\",\"bW9yZSBkYXRh\"]\n" VECTOR "\n";
        size_t line1 = strlen(VECTOR) + 1;

        /* Stored (uncompressed) deflate: 10 bytes of gzip header and 5 of block header, then
         * the text itself; cut in the middle of line 2. */
        write_gz(path, "wb0", text, sizeof text - 1);
        off_t full = file_size(path);
        assert_int_equal(truncate(path, (off_t)(15 + line1 + 10)), 0);
        struct entries es = { 0 };
        unsigned long line = 0;
        assert_int_equal(tend_record_read(path, collect, &es, &line), -TEND_EBADRECORD);
        assert_int_equal(line, 2);
        assert_int_equal(es.n, 1);
        entries_free(&es);

        /* Only the trailer (CRC and length) cut: every line is whole, the stream is not. The
         * line reported is the one that would have come next. */
        write_gz(path, "wb0", text, sizeof text - 1);
        assert_int_equal(file_size(path), full);
        assert_int_equal(truncate(path, full - 4), 0);
        assert_int_equal(tend_record_read(path, collect, &es, &line), -TEND_EBADRECORD);
        assert_int_equal(line, 4);
        assert_int_equal(es.n, 3);
        entries_free(&es);

        /* Compressed and cut in half. */
        write_gz(path, "wb", text, sizeof text - 1);
        assert_int_equal(truncate(path, file_size(path) / 2), 0);
        line = 0;
        assert_int_equal(tend_record_read(path, collect, &es, &line), -TEND_EBADRECORD);
        assert_true(line >= 1 && line <= 4);
        entries_free(&es);
}

static void test_bad_corrupt_gzip(void **state) {
        const char *path = *state;
        const char text[] = VECTOR "\n" VECTOR "\n";
        write_gz(path, "wb0", text, sizeof text - 1);
        /* Flip a data byte: the deflate stream is fine, the CRC is not. */
        int fd = open(path, O_RDWR | O_CLOEXEC);
        assert_true(fd >= 0);
        assert_int_equal(pwrite(fd, "X", 1, 20), 1);
        close(fd);
        unsigned long line = 0;
        assert_int_equal(tend_record_read(path, NULL, NULL, &line), -TEND_EBADRECORD);
}

static void test_bad_line_too_long(void **state) {
        const char *path = *state;
        /* One good line, then 17 MiB without a newline: refused, not buffered. */
        size_t len = 17u << 20;
        char *text = malloc(len);
        assert_non_null(text);
        memset(text, ' ', len);
        memcpy(text, VECTOR "\n[0,\"stdout\",\"", strlen(VECTOR) + 15);
        write_gz(path, "wb", text, len);
        free(text);
        struct entries es = { 0 };
        unsigned long line = 0;
        assert_int_equal(tend_record_read(path, collect, &es, &line), -TEND_EBADRECORD);
        assert_int_equal(line, 2);
        assert_int_equal(es.n, 1);
        entries_free(&es);
}

/* ---- errors ------------------------------------------------------------------------------ */

static void test_strerror(void **state) {
        (void)state;
        assert_string_equal(tend_strerror(-ENOENT), "No such file or directory");
        assert_string_equal(tend_strerror(ENOENT), "No such file or directory");
        assert_string_equal(tend_strerror(-TEND_EBADRECORD), "malformed record");
        assert_string_equal(tend_strerror(-TEND_EPARSE), "cannot parse");
        assert_non_null(strstr(tend_strerror(-TEND_ESTATUSLOST), "exit status lost"));
        assert_string_equal(tend_strerror(-TEND_E_BASE), "unknown error");
        assert_string_equal(tend_strerror(-TEND_E_MAX), "unknown error");
        assert_string_equal(tend_strerror(-9999), "unknown error");
        assert_string_equal(tend_strerror(-2147483647 - 1), "unknown error");
        assert_non_null(tend_strerror(0));
}

/* ---- main -------------------------------------------------------------------------------- */

#define DISK(f) cmocka_unit_test_setup_teardown(f, setup_path, teardown_path)

static const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vector_parse),
        cmocka_unit_test(test_vector_format),
        cmocka_unit_test(test_base64_as_sodium),
        cmocka_unit_test(test_format_delays),
        cmocka_unit_test(test_format_bad_args),
        cmocka_unit_test(test_parse_variants),
        DISK(test_roundtrip_lines),
        DISK(test_roundtrip_partial_at_close),
        DISK(test_roundtrip_partial_completed),
        DISK(test_roundtrip_stream_change),
        DISK(test_roundtrip_binary),
        DISK(test_roundtrip_long_line),
        DISK(test_roundtrip_long_partial),
        DISK(test_empty_record),
        DISK(test_uncompressed_accepted),
        DISK(test_trailing_blank_lines),
        DISK(test_callback_stops),
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_write_error),
        DISK(test_write_bad_args),
        DISK(test_bad_not_array),
        DISK(test_bad_two_elements),
        DISK(test_bad_stream),
        DISK(test_bad_delay),
        DISK(test_bad_base64),
        DISK(test_bad_json),
        DISK(test_bad_nul_in_line),
        DISK(test_bad_plain_garbage),
        DISK(test_bad_truncated_gzip),
        DISK(test_bad_corrupt_gzip),
        DISK(test_bad_line_too_long),
        cmocka_unit_test(test_strerror),
};

int main(int argc, char **argv) {
        if (argc > 1 && !strcmp(argv[1], "--list")) {
                for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++)
                        printf("%s\n", tests[i].name);
                return 0;
        }
        if (argc > 1)
                cmocka_set_test_filter(argv[1]);
        return cmocka_run_group_tests(tests, NULL, NULL);
}
