/* driver.c — a main() for the fuzz targets without libFuzzer (gcc, CI): runs
 * LLVMFuzzerTestOneInput on every file named (a directory: each file in it), then, with
 * --random N SEED, on N deterministic mutations of those inputs (a small mutating fuzzer:
 * bit flips, interesting bytes, insertions, deletions, repeats, splices of two entries), so
 * the same seed always runs the same inputs. Build with SAN=1 for ASan+UBSan.
 *
 *   fuzz_X [--random N SEED] [--seconds S] [--max-len L] [--save DIR] PATH...
 *
 * A crash of a mutated input writes it to DIR (default: the current directory) as
 * crash-fuzz_X-SEED-I first, to run again with `fuzz_X FILE`. */
#include "fuzz.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#endif

struct entry {
        uint8_t *data;
        size_t size;
};

static struct entry *corpus;
static size_t n_corpus;
static const char *prog = "fuzz";

/* The input running now, for the crash file. */
static const uint8_t *cur_data;
static size_t cur_size;
static char crash_path[4096];

static void save_current(void) {
        if (!cur_data || !crash_path[0])
                return;
        int fd = open(crash_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0)
                return;
        size_t off = 0;
        while (off < cur_size) {
                ssize_t n = write(fd, cur_data + off, cur_size - off);
                if (n <= 0)
                        break;
                off += (size_t)n;
        }
        close(fd);
        static const char msg[] = "fuzz: the crashing input is in ";
        (void)!write(2, msg, sizeof msg - 1);
        (void)!write(2, crash_path, strlen(crash_path));
        (void)!write(2, "\n", 1);
        cur_data = NULL;
}

static void on_crash(int sig) {
        save_current();
        signal(sig, SIG_DFL);
        raise(sig);
}

static void add_entry(const char *path) {
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
                fprintf(stderr, "%s: %s: %s\n", prog, path, strerror(errno));
                exit(2);
        }
        struct stat st;
        if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
                close(fd);
                return;
        }
        uint8_t *buf = malloc((size_t)st.st_size + 1);
        size_t got = 0;
        ssize_t n;
        while (buf && got < (size_t)st.st_size &&
               (n = read(fd, buf + got, (size_t)st.st_size - got)) > 0)
                got += (size_t)n;
        close(fd);
        struct entry *nc = realloc(corpus, (n_corpus + 1) * sizeof *nc);
        if (!buf || !nc) {
                fprintf(stderr, "%s: out of memory\n", prog);
                exit(2);
        }
        corpus = nc;
        corpus[n_corpus++] = (struct entry){ buf, got };
}

static int cmp_str(const void *a, const void *b) {
        return strcmp(*(char *const *)a, *(char *const *)b);
}

static void add_path(const char *path) {
        DIR *d = opendir(path);
        if (!d) {
                add_entry(path);
                return;
        }
        char **names = NULL;
        size_t n = 0;
        struct dirent *de;
        while ((de = readdir(d))) {
                if (de->d_name[0] == '.')
                        continue;
                names = realloc(names, (n + 1) * sizeof *names);
                if (!names || asprintf(&names[n], "%s/%s", path, de->d_name) < 0) {
                        fprintf(stderr, "%s: out of memory\n", prog);
                        exit(2);
                }
                n++;
        }
        closedir(d);
        qsort(names, n, sizeof *names, cmp_str); /* the same order everywhere */
        for (size_t i = 0; i < n; i++) {
                add_entry(names[i]);
                free(names[i]);
        }
        free(names);
}

/* xorshift64*: deterministic across machines. */
static uint64_t rng_state;
static uint64_t rnd(void) {
        uint64_t x = rng_state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        rng_state = x;
        return x * 0x2545F4914F6CDD1DULL;
}
static size_t below(size_t n) {
        return n ? (size_t)(rnd() % n) : 0;
}

/* One mutation of buf (size *size, room cap) in place. */
static void mutate_once(uint8_t *buf, size_t *size, size_t cap) {
        static const uint8_t interesting[] = { 0, 1, '\n', '\r', '\t', ' ', '=', '"', '\'', '\\',
                                               '[', ']', '{', '}', ',', ':', '#', ';', '$',
                                               '*', '/', '-', '9', 0x7f, 0x80, 0xc3, 0xff };
        size_t n = *size;
        switch (below(9)) {
        case 0: /* flip a bit */
                if (n)
                        buf[below(n)] ^= (uint8_t)(1u << below(8));
                break;
        case 1: /* an interesting byte */
                if (n)
                        buf[below(n)] = interesting[below(sizeof interesting)];
                break;
        case 2: /* insert an interesting byte */
                if (n < cap) {
                        size_t at = below(n + 1);
                        memmove(buf + at + 1, buf + at, n - at);
                        buf[at] = interesting[below(sizeof interesting)];
                        *size = n + 1;
                }
                break;
        case 3: /* delete a range */
                if (n) {
                        size_t at = below(n), len = 1 + below(n - at < 16 ? n - at : 16);
                        memmove(buf + at, buf + at + len, n - at - len);
                        *size = n - len;
                }
                break;
        case 4: { /* repeat a range (long lines, deep nesting) */
                if (!n)
                        break;
                size_t at = below(n), len = 1 + below(n - at < 32 ? n - at : 32);
                size_t times = 1 + below(below(4) == 0 ? 200 : 4);
                for (size_t t = 0; t < times && *size + len <= cap; t++) {
                        size_t pos = at + len;
                        memmove(buf + pos + len, buf + pos, *size - pos);
                        memmove(buf + pos, buf + at, len);
                        *size += len;
                }
                break;
        }
        case 5: { /* splice: a piece of another entry */
                const struct entry *e = &corpus[below(n_corpus)];
                if (!e->size)
                        break;
                size_t from = below(e->size), len = 1 + below(e->size - from);
                if (n + len > cap)
                        len = cap - n;
                size_t at = below(n + 1);
                memmove(buf + at + len, buf + at, n - at);
                memcpy(buf + at, e->data + from, len);
                *size = n + len;
                break;
        }
        case 6: /* truncate */
                if (n)
                        *size = below(n);
                break;
        case 7: /* a digit run becomes a big or negative number */
                if (n) {
                        static const char *const nums[] = { "-1", "0", "4294967296",
                                                            "18446744073709551616", "1e308",
                                                            "99999999999999999999999",
                                                            "-9223372036854775808" };
                        const char *s = nums[below(sizeof nums / sizeof *nums)];
                        size_t len = strlen(s), at = below(n + 1);
                        if (n + len <= cap) {
                                memmove(buf + at + len, buf + at, n - at);
                                memcpy(buf + at, s, len);
                                *size = n + len;
                        }
                }
                break;
        default: /* swap two bytes */
                if (n > 1) {
                        size_t a = below(n), b = below(n);
                        uint8_t t = buf[a];
                        buf[a] = buf[b];
                        buf[b] = t;
                }
        }
}

static void run(const uint8_t *data, size_t size) {
        /* An exact-size copy: ASan sees a read one byte past the end. */
        uint8_t *copy = malloc(size ? size : 1);
        if (!copy)
                exit(2);
        if (size)
                memcpy(copy, data, size);
        cur_data = copy;
        cur_size = size;
        LLVMFuzzerTestOneInput(copy, size);
        cur_data = NULL;
        free(copy);
}

int main(int argc, char **argv) {
        prog = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];
        unsigned long long n_random = 0, seed = 1;
        double seconds = 0;
        size_t max_len = 64 * 1024;
        const char *save_dir = ".";
        int i = 1;
        for (; i < argc && argv[i][0] == '-' && argv[i][1] == '-'; i++) {
                if (!strcmp(argv[i], "--random") && i + 2 < argc) {
                        n_random = strtoull(argv[++i], NULL, 10);
                        seed = strtoull(argv[++i], NULL, 10);
                } else if (!strcmp(argv[i], "--seconds") && i + 1 < argc) {
                        seconds = strtod(argv[++i], NULL);
                } else if (!strcmp(argv[i], "--max-len") && i + 1 < argc) {
                        max_len = (size_t)strtoull(argv[++i], NULL, 10);
                } else if (!strcmp(argv[i], "--save") && i + 1 < argc) {
                        save_dir = argv[++i];
                } else {
                        break;
                }
        }
        if (i >= argc || argv[i][0] == '-') {
                fprintf(stderr, "usage: %s [--random N SEED] [--seconds S] [--max-len L] "
                                "[--save DIR] PATH...\n", prog);
                return 2;
        }
        for (; i < argc; i++)
                add_path(argv[i]);
        if (!n_corpus) {
                fprintf(stderr, "%s: no input\n", prog);
                return 2;
        }
        signal(SIGSEGV, on_crash);
        signal(SIGBUS, on_crash);
        signal(SIGFPE, on_crash);
        signal(SIGILL, on_crash);
        signal(SIGABRT, on_crash);
#if defined(__SANITIZE_ADDRESS__)
        __sanitizer_set_death_callback(save_current);
#endif
        for (size_t k = 0; k < n_corpus; k++)
                run(corpus[k].data, corpus[k].size);

        struct timespec t0, t;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        rng_state = seed * 0x9E3779B97F4A7C15ULL + 1;
        uint8_t *buf = malloc(max_len + 1);
        unsigned long long done = 0;
        for (; done < n_random; done++) {
                if (seconds > 0 && (done & 63) == 0) {
                        clock_gettime(CLOCK_MONOTONIC, &t);
                        if ((double)(t.tv_sec - t0.tv_sec) + (t.tv_nsec - t0.tv_nsec) / 1e9 >
                            seconds)
                                break;
                }
                const struct entry *e = &corpus[below(n_corpus)];
                size_t size = e->size < max_len ? e->size : max_len;
                memcpy(buf, e->data, size);
                for (size_t m = 1 + below(below(3) ? 4 : 16); m > 0; m--)
                        mutate_once(buf, &size, max_len);
                snprintf(crash_path, sizeof crash_path, "%s/crash-%s-%llu-%llu", save_dir, prog,
                         seed, done);
                run(buf, size);
        }
        crash_path[0] = 0;
        free(buf);
        printf("%s: %zu inputs, %llu mutations (seed %llu): no crash\n", prog, n_corpus, done,
               seed);
        for (size_t k = 0; k < n_corpus; k++)
                free(corpus[k].data);
        free(corpus);
        return 0;
}
