/* record.c — timed records of output in checkbox/plainbox's .record.gz format.
 *
 * Writing: each record is timed at the arrival of its last byte, and its delay is the time
 * since the previous record (the first: since start_usec), in whole microseconds. Time flows
 * only forward: a now_usec earlier than the previous record gives a delay of 0. A record holds
 * at most RECORD_PIECE_MAX bytes of data, so a line that never ends cannot grow memory, and
 * every line this writer produces is far below what the reader accepts.
 *
 * Delays are written as plain decimals with six fractional digits and the trailing zeros
 * removed, keeping at least one ("0.123", "0.0", "1.5", "12.000001"): never an exponent, and
 * exact, since the writer's clock is whole microseconds. The line is put together here rather
 * than by jansson, whose reals come out as "%.17g" ("0.12299999999999999", "1e-06"); the other
 * two elements are fixed words and base64, which need no JSON escaping, so the line is ASCII.
 *
 * Reading: every line must be a JSON array [number >= 0, "stdout"|"stderr", base64 string],
 * the base64 strict (standard alphabet, padded, no stray characters). Blank lines are allowed
 * only at the end of the file. A line longer than RECORD_LINE_MAX is refused rather than
 * buffered. Input that is not gzip is read as it is (zlib's transparent mode), so an
 * uncompressed record is accepted too; a gzip stream that is cut short or corrupt is malformed.
 */
#include "internal.h"

#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#define RECORD_PIECE_MAX ((size_t)64 * 1024)
#define RECORD_LINE_MAX ((size_t)16 * 1024 * 1024)
#define RECORD_READ_CHUNK ((size_t)64 * 1024)
#define B64_VARIANT sodium_base64_VARIANT_ORIGINAL

/* Room for '[', the delay, ',"stdout",', the quotes, ']', '\n' and NUL around the base64;
 * the longest delay is 20 digits, '.', 6 digits. */
#define LINE_OVERHEAD 64

struct tend_record {
        gzFile gz;
        uint64_t last_usec; /* time of the previous record; start_usec before the first */
        int held_stream;    /* stream of the partial line in held; 0 when held is empty */
        uint64_t held_usec; /* arrival of the last byte in held */
        size_t held_len;
        unsigned char *held; /* RECORD_PIECE_MAX bytes */
        char *line;          /* line_size bytes: the formatted line of one full piece */
        size_t line_size;
        int error; /* first write error, sticky */
};

static const char *stream_word(int stream) {
        return stream == 1 ? "stdout" : "stderr";
}

/* Writes the delay into buf (at least 32 bytes); returns its length. */
static size_t format_delay(uint64_t usec, char *buf, size_t size) {
        int n = snprintf(buf, size, "%" PRIu64 ".%06" PRIu64, usec / 1000000, usec % 1000000);
        size_t len = (size_t)n;
        while (len > 2 && buf[len - 1] == '0' && buf[len - 2] != '.')
                buf[--len] = '\0';
        return len;
}

/* The size a line needs for len bytes of data (NUL included), or 0 if it would be longer
 * than the reader accepts. */
static size_t line_size_for(size_t len) {
        if (len > RECORD_LINE_MAX / 4 * 3 - LINE_OVERHEAD)
                return 0;
        return sodium_base64_encoded_len(len, B64_VARIANT) + LINE_OVERHEAD;
}

/* Standard base64 with padding, what sodium_bin2base64(..., VARIANT_ORIGINAL) writes, by
 * table: libsodium's encoder is constant-time, a byte at a time with masks (for keys), and
 * took a sixth of `tend run --record`'s CPU (perf); output is no secret. Writes
 * sodium_base64_encoded_len(len) - 1 characters and a NUL. */
static void b64_encode(char *out, const unsigned char *in, size_t len) {
        static const char abc[] =
                "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        size_t i = 0;
        for (; i + 3 <= len; i += 3) {
                uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
                *out++ = abc[v >> 18];
                *out++ = abc[(v >> 12) & 63];
                *out++ = abc[(v >> 6) & 63];
                *out++ = abc[v & 63];
        }
        if (len - i == 1) {
                uint32_t v = (uint32_t)in[i] << 16;
                *out++ = abc[v >> 18];
                *out++ = abc[(v >> 12) & 63];
                *out++ = '=';
                *out++ = '=';
        } else if (len - i == 2) {
                uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
                *out++ = abc[v >> 18];
                *out++ = abc[(v >> 12) & 63];
                *out++ = abc[(v >> 6) & 63];
                *out++ = '=';
        }
        *out = '\0';
}

/* Formats one line into out (size from line_size_for(len)), newline included when asked.
 * Returns its length without the NUL. */
static size_t format_line(char *out, size_t size, uint64_t delay_usec, int stream,
                          const void *data, size_t len, bool newline) {
        char delay[32];
        format_delay(delay_usec, delay, sizeof delay);
        int head = snprintf(out, size, "[%s,\"%s\",\"", delay, stream_word(stream));
        size_t pos = (size_t)head;
        size_t b64_size = sodium_base64_encoded_len(len, B64_VARIANT);
        b64_encode(out + pos, data, len);
        pos += b64_size - 1;
        out[pos++] = '"';
        out[pos++] = ']';
        if (newline)
                out[pos++] = '\n';
        out[pos] = '\0';
        return pos;
}

/* A delay in seconds as whole microseconds; -EINVAL if not a finite number >= 0, -ERANGE if
 * it does not fit. */
static int delay_to_usec(double delay, uint64_t *ret_usec) {
        if (!isfinite(delay) || delay < 0)
                return -EINVAL;
        /* Rounded by hand: libm is not among the library's dependencies. */
        double usec = delay * 1e6 + 0.5;
        if (usec >= 0x1p64)
                return -ERANGE;
        *ret_usec = (uint64_t)usec;
        return 0;
}

TEND_PUBLIC int tend_record_format_line(double delay, int stream, const void *data, size_t len,
                                        char **ret_line) {
        if ((stream != 1 && stream != 2) || (!data && len > 0) || !ret_line)
                return -EINVAL;
        uint64_t usec;
        int r = delay_to_usec(delay, &usec);
        if (r < 0)
                return r;
        size_t size = line_size_for(len);
        if (size == 0)
                return -EMSGSIZE;
        char *line = malloc(size);
        if (!line)
                return -ENOMEM;
        format_line(line, size, usec, stream, len ? data : "", len, false);
        *ret_line = line;
        return 0;
}

/* ---- parsing --------------------------------------------------------------------------- */

/* Decodes one line (len bytes, no NUL needed) into the caller's growing buffer *data of
 * *data_cap bytes. Returns 0, -TEND_EBADRECORD or -ENOMEM. */
static int parse_line(const char *text, size_t len, double *ret_delay, int *ret_stream,
                      unsigned char **data, size_t *data_cap, size_t *ret_len) {
        json_error_t jerr;
        /* Integers are read as reals so that any spelling of a number is accepted alike. */
        json_t *root = json_loadb(text, len, JSON_DECODE_INT_AS_REAL, &jerr);
        if (!root)
                return json_error_code(&jerr) == json_error_out_of_memory ? -ENOMEM
                                                                          : -TEND_EBADRECORD;
        int r = -TEND_EBADRECORD;
        if (!json_is_array(root) || json_array_size(root) != 3)
                goto out;

        json_t *jdelay = json_array_get(root, 0);
        json_t *jstream = json_array_get(root, 1);
        json_t *jdata = json_array_get(root, 2);
        if (!json_is_number(jdelay) || !json_is_string(jstream) || !json_is_string(jdata))
                goto out;

        double delay = json_number_value(jdelay);
        if (!isfinite(delay) || delay < 0)
                goto out;
        if (delay == 0)
                delay = 0; /* no -0.0 for the caller */

        int stream;
        const char *word = json_string_value(jstream);
        size_t word_len = json_string_length(jstream);
        if (word_len == 6 && !memcmp(word, "stdout", 6))
                stream = 1;
        else if (word_len == 6 && !memcmp(word, "stderr", 6))
                stream = 2;
        else
                goto out;

        const char *b64 = json_string_value(jdata);
        size_t b64_len = json_string_length(jdata);
        size_t need = b64_len / 4 * 3 + 3;
        if (need > *data_cap) {
                unsigned char *p = realloc(*data, need);
                if (!p) {
                        r = -ENOMEM;
                        goto out;
                }
                *data = p;
                *data_cap = need;
        }
        size_t bin_len = 0;
        if (sodium_base642bin(*data, *data_cap, b64, b64_len, NULL, &bin_len, NULL,
                              B64_VARIANT) != 0)
                goto out;

        *ret_delay = delay;
        *ret_stream = stream;
        *ret_len = bin_len;
        r = 0;
out:
        json_decref(root);
        return r;
}

TEND_PUBLIC int tend_record_parse_line(const char *line, double *ret_delay, int *ret_stream,
                                       void **ret_data, size_t *ret_len) {
        if (!line || !ret_delay || !ret_stream || !ret_data || !ret_len)
                return -EINVAL;
        size_t len = strlen(line);
        if (len > RECORD_LINE_MAX)
                return -TEND_EBADRECORD;
        unsigned char *data = NULL;
        size_t cap = 0, data_len = 0;
        double delay;
        int stream;
        int r = parse_line(line, len, &delay, &stream, &data, &cap, &data_len);
        if (r < 0) {
                free(data);
                return r;
        }
        *ret_delay = delay;
        *ret_stream = stream;
        *ret_data = data;
        *ret_len = data_len;
        return 0;
}

/* ---- writing --------------------------------------------------------------------------- */

/* The error zlib has noted on gz, as a negative errno (0 if none). zlib says "see errno" for
 * system errors, so callers clear errno before the call and pass what it was after. */
static int gz_status(gzFile gz, int saved_errno) {
        int errnum = Z_OK;
        (void)gzerror(gz, &errnum);
        switch (errnum) {
        case Z_OK:
                return 0;
        case Z_ERRNO:
                return saved_errno > 0 ? -saved_errno : -EIO;
        case Z_MEM_ERROR:
                return -ENOMEM;
        case Z_BUF_ERROR: /* reading: the gzip stream ends too early */
        case Z_DATA_ERROR:
                return -TEND_EBADRECORD;
        default:
                return -EIO;
        }
}

TEND_PUBLIC int tend_record_open(const char *path, uint64_t start_usec,
                                 tend_record **ret_record) {
        if (!path || !ret_record)
                return -EINVAL;
        tend_record *r = calloc(1, sizeof *r);
        if (!r)
                return -ENOMEM;
        r->last_usec = start_usec;
        r->line_size = line_size_for(RECORD_PIECE_MAX);
        r->held = malloc(RECORD_PIECE_MAX);
        r->line = malloc(r->line_size);
        if (!r->held || !r->line) {
                free(r->held);
                free(r->line);
                free(r);
                return -ENOMEM;
        }

        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOCTTY, 0666);
        if (fd < 0) {
                int err = -errno;
                free(r->held);
                free(r->line);
                free(r);
                return err;
        }
        /* Level 1: deflate at the default level 6 took 85% of `tend run --record`'s CPU and
         * held capture to ~16 MiB/s (BENCHMARKS.md); level 1 is several times faster for a
         * file a few percent larger, the right trade for a log. */
        r->gz = gzdopen(fd, "wb1");
        if (!r->gz) {
                io_close(fd); /* gzdopen leaves fd open when it fails */
                free(r->held);
                free(r->line);
                free(r);
                return -ENOMEM;
        }
        /* Fewer, larger write()s than zlib's 8 KiB default; a failure keeps the default. */
        (void)gzbuffer(r->gz, 64 * 1024);
        *ret_record = r;
        return 0;
}

static int emit(tend_record *r, int stream, const void *data, size_t len, uint64_t usec) {
        uint64_t delay = usec > r->last_usec ? usec - r->last_usec : 0;
        if (usec > r->last_usec)
                r->last_usec = usec;
        size_t n = format_line(r->line, r->line_size, delay, stream, data, len, true);
        errno = 0;
        if (gzwrite(r->gz, r->line, (unsigned)n) != (int)n) {
                int e = gz_status(r->gz, errno);
                r->error = e < 0 && e != -TEND_EBADRECORD ? e : -EIO;
                return r->error;
        }
        return 0;
}

static int emit_held(tend_record *r) {
        if (r->held_len == 0)
                return 0;
        size_t len = r->held_len;
        r->held_len = 0;
        return emit(r, r->held_stream, r->held, len, r->held_usec);
}

TEND_PUBLIC int tend_record_write(tend_record *r, int stream, const void *data, size_t len,
                                  uint64_t now_usec) {
        if (!r || (stream != 1 && stream != 2) || (!data && len > 0))
                return -EINVAL;
        if (r->error)
                return r->error;
        if (len == 0)
                return 0;

        int e;
        if (r->held_len > 0 && r->held_stream != stream && (e = emit_held(r)) < 0)
                return e;

        const unsigned char *p = data;
        while (len > 0) {
                size_t room = RECORD_PIECE_MAX - r->held_len;
                size_t span = len < room ? len : room;
                const unsigned char *nl = memchr(p, '\n', span);
                size_t take = nl ? (size_t)(nl - p) + 1 : span;

                if (nl && r->held_len == 0) {
                        /* A whole line in the caller's buffer: no need to copy it first. */
                        if ((e = emit(r, stream, p, take, now_usec)) < 0)
                                return e;
                } else {
                        memcpy(r->held + r->held_len, p, take);
                        r->held_len += take;
                        r->held_stream = stream;
                        r->held_usec = now_usec;
                        if ((nl || r->held_len == RECORD_PIECE_MAX) && (e = emit_held(r)) < 0)
                                return e;
                }
                p += take;
                len -= take;
        }
        return 0;
}

TEND_PUBLIC int tend_record_close(tend_record *r) {
        if (!r)
                return 0;
        if (!r->error)
                (void)emit_held(r);
        int err = r->error;
        errno = 0;
        int z = gzclose(r->gz);
        if (z != Z_OK && err == 0)
                err = z == Z_ERRNO ? (errno > 0 ? -errno : -EIO)
                                   : z == Z_MEM_ERROR ? -ENOMEM : -EIO;
        free(r->held);
        free(r->line);
        free(r);
        return err;
}

/* ---- reading --------------------------------------------------------------------------- */

static bool is_blank(const char *s, size_t len) {
        for (size_t i = 0; i < len; i++)
                if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r')
                        return false;
        return true;
}

struct reader {
        gzFile gz;
        char *buf; /* pending text is buf[start, end) */
        size_t cap, start, end;
        unsigned char *data;
        size_t data_cap;
        unsigned long line_no;     /* lines taken so far */
        unsigned long first_blank; /* a blank line not yet known to be trailing, or 0 */
};

/* Handles one line (no newline). Returns 0 to go on, or what tend_record_read returns. */
static int take_line(struct reader *rd, const char *text, size_t len,
                     tend_record_entry_cb cb, void *userdata, unsigned long *bad_line) {
        rd->line_no++;
        if (is_blank(text, len)) {
                if (rd->first_blank == 0)
                        rd->first_blank = rd->line_no;
                return 0;
        }
        if (rd->first_blank) {
                *bad_line = rd->first_blank;
                return -TEND_EBADRECORD;
        }
        if (len > RECORD_LINE_MAX) {
                *bad_line = rd->line_no;
                return -TEND_EBADRECORD;
        }
        double delay;
        int stream;
        size_t data_len;
        int r = parse_line(text, len, &delay, &stream, &rd->data, &rd->data_cap, &data_len);
        if (r == -TEND_EBADRECORD)
                *bad_line = rd->line_no;
        if (r < 0)
                return r;
        return cb ? cb(delay, stream, rd->data, data_len, userdata) : 0;
}

/* Makes room after buf[end]: moves pending text to the front, then grows up to the line
 * cap. Returns the free bytes, 0 when a line already exceeds the cap, or -ENOMEM. */
static ssize_t make_room(struct reader *rd) {
        if (rd->start > 0 && (rd->end == rd->cap || rd->start >= rd->cap / 2)) {
                memmove(rd->buf, rd->buf + rd->start, rd->end - rd->start);
                rd->end -= rd->start;
                rd->start = 0;
        }
        if (rd->end == rd->cap) {
                /* A line of RECORD_LINE_MAX bytes and its newline fit; anything longer is
                 * refused once seen. */
                size_t max = RECORD_LINE_MAX + 1;
                if (rd->cap >= max)
                        return 0;
                size_t ncap = rd->cap ? rd->cap * 2 : RECORD_READ_CHUNK;
                if (ncap > max)
                        ncap = max;
                char *p = realloc(rd->buf, ncap);
                if (!p)
                        return -ENOMEM;
                rd->buf = p;
                rd->cap = ncap;
        }
        return (ssize_t)(rd->cap - rd->end);
}

static int read_all(struct reader *rd, tend_record_entry_cb cb, void *userdata,
                    unsigned long *bad_line) {
        size_t scan = 0; /* no newline in buf[start, scan) */
        bool eof = false;
        for (;;) {
                char *nl = rd->end > scan ? memchr(rd->buf + scan, '\n', rd->end - scan) : NULL;
                if (nl) {
                        size_t len = (size_t)(nl - (rd->buf + rd->start));
                        int r = take_line(rd, rd->buf + rd->start, len, cb, userdata, bad_line);
                        if (r != 0)
                                return r;
                        rd->start += len + 1;
                        scan = rd->start;
                        continue;
                }
                if (rd->end - rd->start > RECORD_LINE_MAX) {
                        *bad_line = rd->line_no + 1;
                        return -TEND_EBADRECORD;
                }
                if (eof) {
                        if (rd->end > rd->start)
                                return take_line(rd, rd->buf + rd->start, rd->end - rd->start,
                                                 cb, userdata, bad_line);
                        return 0;
                }

                ssize_t room = make_room(rd);
                if (room < 0)
                        return (int)room;
                scan = rd->end;
                if (room == 0) {
                        *bad_line = rd->line_no + 1;
                        return -TEND_EBADRECORD;
                }
                size_t want = (size_t)room < RECORD_READ_CHUNK * 4 ? (size_t)room
                                                                   : RECORD_READ_CHUNK * 4;
                errno = 0;
                int n = gzread(rd->gz, rd->buf + rd->end, (unsigned)want);
                if (n <= 0) {
                        /* A cut-short stream reads as a plain end (0) with Z_BUF_ERROR noted,
                         * so the end is trusted only when zlib has noted nothing. */
                        int e = gz_status(rd->gz, errno);
                        if (e == 0 && n < 0)
                                e = -EIO;
                        if (e < 0) {
                                if (e == -TEND_EBADRECORD)
                                        *bad_line = rd->line_no + 1;
                                return e;
                        }
                        eof = true;
                        continue;
                }
                rd->end += (size_t)n;
        }
}

TEND_PUBLIC int tend_record_read(const char *path, tend_record_entry_cb cb, void *userdata,
                                 unsigned long *ret_line) {
        if (!path)
                return -EINVAL;
        int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return -errno;
        struct reader rd = { .gz = gzdopen(fd, "rb") };
        if (!rd.gz) {
                io_close(fd); /* gzdopen leaves fd open when it fails */
                return -ENOMEM;
        }
        (void)gzbuffer(rd.gz, 64 * 1024);

        unsigned long bad_line = 0;
        int r = read_all(&rd, cb, userdata, &bad_line);
        (void)gzclose(rd.gz); /* read-only: nothing to lose */
        free(rd.buf);
        free(rd.data);
        if (r == -TEND_EBADRECORD && ret_line)
                *ret_line = bad_line;
        return r;
}
