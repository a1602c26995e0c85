/* producer.c — for the capture benchmark: write BYTES bytes of text lines as fast as possible.
 *
 *   producer BYTES [split]
 *
 * The output is lines of 20 to 140 bytes (a counter and pseudo-random hex digits, as a log
 * might be), from a 1 MiB buffer made once and written over and over in 64 KiB writes. With
 * `split`, the writes alternate between stdout and stderr, BYTES/2 to each (a chunk may end
 * mid-line, so each stream is lines except possibly at chunk edges). */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BUF_LEN (1u << 20)
#define CHUNK (64u * 1024u)

static char buf[BUF_LEN];

static void fill(void) {
        uint32_t lcg = 12345u;
        size_t off = 0;
        unsigned long line = 0;
        static const char hex[] = "0123456789abcdef";
        while (off < BUF_LEN) {
                char tmp[160];
                lcg = lcg * 1103515245u + 12345u;
                int digits = 8 + (int)((lcg >> 16) % 120);
                int n = snprintf(tmp, sizeof tmp, "%08lu ", ++line);
                for (int i = 0; i < digits; i++) {
                        lcg = lcg * 1103515245u + 12345u;
                        tmp[n++] = hex[(lcg >> 20) & 15];
                }
                tmp[n++] = '\n';
                size_t take = (size_t)n < BUF_LEN - off ? (size_t)n : BUF_LEN - off;
                memcpy(buf + off, tmp, take);
                off += take;
        }
        buf[BUF_LEN - 1] = '\n';
}

static void write_all(int fd, const char *p, size_t len) {
        while (len > 0) {
                ssize_t n = write(fd, p, len);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        fprintf(stderr, "producer: write: %s\n", strerror(errno));
                        exit(1);
                }
                p += n;
                len -= (size_t)n;
        }
}

int main(int argc, char **argv) {
        if (argc < 2 || argc > 3) {
                fprintf(stderr, "usage: producer BYTES [split]\n");
                return 2;
        }
        unsigned long long total = strtoull(argv[1], NULL, 10);
        int split = argc == 3 && !strcmp(argv[2], "split");
        fill();
        unsigned long long left[2] = { split ? total / 2 : total, split ? total - total / 2 : 0 };
        size_t pos[2] = { 0, 0 };
        int s = 0;
        while (left[0] || left[1]) {
                if (!left[s]) {
                        s ^= 1;
                        continue;
                }
                size_t n = CHUNK;
                if (n > left[s])
                        n = (size_t)left[s];
                if (n > BUF_LEN - pos[s])
                        n = BUF_LEN - pos[s];
                write_all(s ? STDERR_FILENO : STDOUT_FILENO, buf + pos[s], n);
                pos[s] = (pos[s] + n) % BUF_LEN;
                left[s] -= n;
                if (split)
                        s ^= 1;
        }
        return 0;
}
