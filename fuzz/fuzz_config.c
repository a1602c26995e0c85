/* fuzz_config.c — the configuration parser of `tend supervise` (src/config.c): the bytes
 * become a configuration file, loaded with config_load() as `tend supervise --check` does,
 * next to a small include directory; each line is also split with config_split() (the
 * command quoting). Messages are silenced (FUZZ_VERBOSE=1 shows them). */
#include "fuzz.h"
#include "config.h"
#include "cmd.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* tend.c has the real ones (with main). */
void msg_error(const char *fmt, ...) {
        static int verbose = -1;
        if (verbose < 0)
                verbose = getenv("FUZZ_VERBOSE") != NULL;
        if (!verbose)
                return;
        va_list ap;
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
}

static char dir[256];
static char conf[300];

static void write_file(const char *path, const void *data, size_t size) {
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0)
                FUZZ_FAIL("cannot create %s", path);
        const char *p = data;
        while (size) {
                ssize_t n = write(fd, p, size);
                if (n <= 0)
                        FUZZ_FAIL("cannot write %s", path);
                p += n;
                size -= (size_t)n;
        }
        close(fd);
}

static void cleanup(void) {
        char path[320];
        static const char *const names[] = { "inc/a.conf", "inc/b.conf", "inc/empty.conf",
                                             "test.conf" };
        for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
                snprintf(path, sizeof path, "%s/%s", dir, names[i]);
                unlink(path);
        }
        snprintf(path, sizeof path, "%s/inc", dir);
        rmdir(path);
        rmdir(dir);
}

static void setup(void) {
        const char *t = getenv("TMPDIR");
        if (!t || t[0] != '/' || strlen(t) > 200)
                t = "/tmp";
        snprintf(dir, sizeof dir, "%s/tend-fuzz-config.XXXXXX", t);
        if (!mkdtemp(dir))
                FUZZ_FAIL("mkdtemp");
        char path[320];
        snprintf(path, sizeof path, "%s/inc", dir);
        mkdir(path, 0700);
        snprintf(path, sizeof path, "%s/inc/a.conf", dir);
        static const char a[] = "[service inc-a]\ncommand = /bin/true\nrestart = never\n";
        write_file(path, a, sizeof a - 1);
        snprintf(path, sizeof path, "%s/inc/b.conf", dir);
        static const char b[] = "include = ../inc/*.conf\n"
                                "[service inc-b]\ncommand = sleep 1\nafter = inc-a\n";
        write_file(path, b, sizeof b - 1);
        snprintf(path, sizeof path, "%s/inc/empty.conf", dir);
        write_file(path, "", 0);
        snprintf(conf, sizeof conf, "%s/test.conf", dir);
        atexit(cleanup);
}

/* include = may name any file; keep to our directory: no absolute or upward pattern (a
 * '/' after a blank, '=', a quote or a backslash, or at the start of a line; or ".."). */
static bool include_escapes(const uint8_t *data, size_t size) {
        if (!memmem(data, size, "include", 7))
                return false;
        if (memmem(data, size, "..", 2))
                return true;
        for (size_t i = 0; i < size; i++) {
                if (data[i] != '/')
                        continue;
                if (i == 0)
                        return true;
                switch (data[i - 1]) {
                case ' ': case '\t': case '=': case '\'': case '"': case '\\': case '\n':
                case '\r': case ':':
                        return true;
                }
        }
        return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        if (!dir[0])
                setup();
        if (size > 256 * 1024)
                return 0;

        /* Every line through the command splitter. */
        char *copy = malloc(size + 1);
        if (!copy)
                return 0;
        if (size)
                memcpy(copy, data, size);
        copy[size] = 0;
        for (char *line = copy; line;) {
                char *nl = strchr(line, '\n');
                if (nl)
                        *nl = 0;
                char **words = NULL;
                size_t n = 0;
                const char *err = NULL;
                int r = config_split(line, &words, &n, &err);
                if (r == 0) {
                        for (size_t i = 0; i < n; i++)
                                FUZZ_USE(strlen(words[i]));
                        if (words[n])
                                FUZZ_FAIL("config_split: words not NULL-terminated");
                        config_strv_free(words);
                } else if ((r == -EINVAL || r == -E2BIG) && !err) {
                        FUZZ_FAIL("config_split: %d without a message", r);
                } else if (r != -EINVAL && r != -E2BIG && r != -ENOMEM) {
                        FUZZ_FAIL("config_split: %d", r);
                }
                line = nl ? nl + 1 : NULL;
        }
        free(copy);

        if (include_escapes(data, size))
                return 0;
        write_file(conf, data, size);
        struct config *c = NULL;
        int r = config_load(conf, &c);
        if (r == 0) {
                if (!c)
                        FUZZ_FAIL("config_load: 0 without a configuration");
                for (size_t i = 0; i < c->n_services; i++) {
                        struct svc_config *s = c->services[i];
                        if (config_find(c, s->name) != s)
                                FUZZ_FAIL("config_find(%s)", s->name);
                        (void)config_exit_is_success(s, 0, 0);
                        (void)config_exit_is_success(s, 1, 0);
                        (void)config_exit_is_success(s, 0, 15);
                }
                config_free(c);
        } else if (r > 0) {
                FUZZ_FAIL("config_load: %d", r);
        }
        return 0;
}
