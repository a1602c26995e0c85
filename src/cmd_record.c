/* cmd_record.c — `tend record`: read records written by `tend run --record`. */
#include "cmd.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define OUT_BUF_SIZE (64 * 1024)

#include "help-record.h"

static void usage(FILE *f) {
        fputs(help_record, f);
}

/* Consecutive entries of one stream are gathered and written together; the buffer is written
 * out before the stream changes, so the order between stdout and stderr is kept. */
struct cat_state {
        bool timing;
        struct timespec deadline; /* CLOCK_MONOTONIC: start plus the delays so far */
        int out_fd;               /* where buf goes (the last fd written), -1 before any */
        size_t out_len;
        char buf[OUT_BUF_SIZE];
        int write_error; /* errno of a failed write, 0 if none */
};

static int flush_out(struct cat_state *st) {
        if (st->out_len == 0)
                return 0;
        int e = -io_write_all(st->out_fd, st->buf, st->out_len);
        st->out_len = 0;
        return e;
}

static int put(struct cat_state *st, int fd, const void *data, size_t len) {
        int e;
        if (st->out_len > 0 && st->out_fd != fd && (e = flush_out(st)) != 0)
                return e;
        st->out_fd = fd;
        if (len > sizeof st->buf - st->out_len) {
                if ((e = flush_out(st)) != 0)
                        return e;
                if (len > sizeof st->buf)
                        return -io_write_all(fd, data, len);
        }
        memcpy(st->buf + st->out_len, data, len);
        st->out_len += len;
        return 0;
}

/* Advances the deadline by delay seconds and sleeps until it. The deadline is absolute, so time
 * spent writing does not add up into drift. */
static void wait_delay(struct cat_state *st, double delay) {
        /* A delay of decades is a broken record, not a pace to keep; the cap also keeps the
         * nanoseconds well inside 64 bits. */
        const double max_delay = 1e9;
        if (delay > max_delay)
                delay = max_delay;
        uint64_t ns = (uint64_t)(delay * 1e9 + 0.5); /* rounded without libm */
        st->deadline.tv_sec += (time_t)(ns / 1000000000u);
        st->deadline.tv_nsec += (long)(ns % 1000000000u);
        if (st->deadline.tv_nsec >= 1000000000L) {
                st->deadline.tv_sec++;
                st->deadline.tv_nsec -= 1000000000L;
        }
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &st->deadline, NULL) == EINTR)
                ;
}

static int cat_entry(double delay, int stream, const void *data, size_t len, void *userdata) {
        struct cat_state *st = userdata;
        int fd = stream == 2 ? STDERR_FILENO : STDOUT_FILENO;
        int e;
        if (st->timing) {
                wait_delay(st, delay);
                if ((e = put(st, fd, data, len)) == 0)
                        e = flush_out(st);
        } else {
                e = put(st, fd, data, len);
        }
        if (e != 0) {
                st->write_error = e;
                return 1; /* stop reading; the error is in st */
        }
        return 0;
}

static int write_failed(const struct cat_state *st) {
        /* The reader went away (`tend record cat x | head`): nothing worth saying. */
        if (st->write_error != EPIPE)
                msg_error("cannot write to %s: %s",
                          st->out_fd == STDERR_FILENO ? "stderr" : "stdout",
                          tend_strerror(-st->write_error));
        return EXIT_TEND_FAILURE;
}

static int record_cat(int argc, char **argv) {
        bool timing = false;
        const char *file = NULL;
        bool options_done = false;
        for (int i = 1; i < argc; i++) {
                const char *a = argv[i];
                if (!options_done && !strcmp(a, "--")) {
                        options_done = true;
                } else if (!options_done && !strcmp(a, "--timing")) {
                        timing = true;
                } else if (!options_done && (!strcmp(a, "--help") || !strcmp(a, "-h"))) {
                        usage(stdout);
                        return 0;
                } else if (!options_done && a[0] == '-' && a[1] != '\0') {
                        msg_error("record cat: unknown option '%s' (try 'tend record --help')", a);
                        return EXIT_TEND_FAILURE;
                } else if (file) {
                        msg_error("record cat: one FILE only (try 'tend record --help')");
                        return EXIT_TEND_FAILURE;
                } else {
                        file = a;
                }
        }
        if (!file) {
                msg_error("record cat: FILE missing (try 'tend record --help')");
                return EXIT_TEND_FAILURE;
        }

        struct cat_state st = { .timing = timing, .out_fd = -1 };
        if (timing)
                clock_gettime(CLOCK_MONOTONIC, &st.deadline);

        const char *path = strcmp(file, "-") ? file : "/dev/stdin";
        unsigned long line = 0;
        int r = tend_record_read(path, cat_entry, &st, &line);
        if (r > 0)
                return write_failed(&st);
        int e = flush_out(&st);
        if (e != 0) {
                st.write_error = e;
                return write_failed(&st);
        }
        if (r == -TEND_EBADRECORD) {
                msg_error("malformed record '%s' at line %lu", file, line);
                return EXIT_TEND_FAILURE;
        }
        if (r < 0) {
                msg_error("cannot read record '%s': %s", file, tend_strerror(r));
                return EXIT_TEND_FAILURE;
        }
        return 0;
}

int cmd_record(int argc, char **argv) {
        if (argc < 2) {
                usage(stderr);
                return EXIT_TEND_FAILURE;
        }
        const char *sub = argv[1];
        if (!strcmp(sub, "--help") || !strcmp(sub, "-h") || !strcmp(sub, "help")) {
                usage(stdout);
                return 0;
        }
        if (!strcmp(sub, "cat"))
                return record_cat(argc - 1, argv + 1);
        msg_error("record: unknown subcommand '%s' (try 'tend record --help')", sub);
        return EXIT_TEND_FAILURE;
}
