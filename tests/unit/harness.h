/* harness.h — the shared main and small helpers of the cmocka unit-test programs.
 *
 * A test program lists its tests and ends with TEND_TEST_MAIN:
 *
 *     static void vector_parses(void **state) { ... }
 *     static const struct CMUnitTest tests[] = { cmocka_unit_test(vector_parses) };
 *     TEND_TEST_MAIN(tests)
 *
 * and then answers three command lines (tests/test_unit.py relies on them):
 *
 *     test_x            run every test; exit 0 when none failed (skips are not failures)
 *     test_x --list     print the test names, one per line; exit 0
 *     test_x NAME       run only the test called NAME; exit 2 if there is none
 *
 * Skips: a test that cannot run here (no root, no cgroup v2, an old kernel) calls
 * skip_with_reason("...") or skip_unless_root(): the line "SKIP: <reason>" goes to stdout and
 * cmocka reports the test as skipped, which the pytest wrapper turns into a pytest skip with
 * that reason. A test never passes silently for lack of a feature.
 *
 * Time: every test must end in bounded time. When one test is selected, main arms an alarm of
 * TEND_TEST_DEFAULT_ALARM seconds (below the wrapper's own limit) so that a hung test dies
 * with a message rather than hanging; a test can re-arm it with test_alarm(seconds).
 */
#ifndef TEND_TEST_HARNESS_H
#define TEND_TEST_HARNESS_H

/* cmocka.h needs these first. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TEND_TEST_DEFAULT_ALARM 50

/* ---- skips ------------------------------------------------------------------------------- */

static inline void tend_test_print_skip(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline void tend_test_print_skip(const char *fmt, ...) {
        va_list ap;

        fputs("SKIP: ", stdout);
        va_start(ap, fmt);
        vprintf(fmt, ap);
        va_end(ap);
        fputs("\n", stdout);
        fflush(stdout);
}

/* Print "SKIP: <reason>" and skip the current test (a macro so cmocka records the caller's
 * file and line). */
#define skip_with_reason(...)                              \
        do {                                               \
                tend_test_print_skip(__VA_ARGS__);         \
                skip();                                    \
        } while (0)

#define skip_unless_root()                                                                    \
        do {                                                                                  \
                if (geteuid() != 0)                                                           \
                        skip_with_reason("needs root (running as uid %u)",                    \
                                         (unsigned)geteuid());                                \
        } while (0)

/* ---- bounded time ------------------------------------------------------------------------ */

static char tend_test_alarm_msg[96];
static volatile size_t tend_test_alarm_msg_len;

static inline void tend_test_on_alarm(int signo) {
        /* Only async-signal-safe calls: write the message made in advance, then die by the
         * same signal so the wrapper sees "killed by SIGALRM". */
        if (write(STDERR_FILENO, tend_test_alarm_msg, tend_test_alarm_msg_len) < 0) {
                /* nothing to do */
        }
        signal(signo, SIG_DFL);
        raise(signo);
}

/* Kill this test program after `seconds` (0 cancels). Re-arming replaces the previous limit. */
static inline void test_alarm(unsigned seconds) {
        struct sigaction sa = { .sa_handler = tend_test_on_alarm };
        int n;

        n = snprintf(tend_test_alarm_msg, sizeof tend_test_alarm_msg,
                     "\ntest timed out after %u s (test_alarm)\n", seconds);
        tend_test_alarm_msg_len = n > 0 ? (size_t)n : 0;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGALRM, &sa, NULL);
        alarm(seconds);
}

/* ---- paths ------------------------------------------------------------------------------- */

/* The build directory, absolute: $TEND_BUILD, else "build" below the working directory.
 * A path too long for PATH_MAX fails the test. */
static inline const char *tend_build_dir(void) {
        static char dir[PATH_MAX];
        const char *env = getenv("TEND_BUILD");
        int n;

        if (!dir[0]) {
                if (env && env[0] == '/') {
                        n = snprintf(dir, sizeof dir, "%s", env);
                } else {
                        char cwd[PATH_MAX];
                        if (!getcwd(cwd, sizeof cwd))
                                fail_msg("getcwd: %s", strerror(errno));
                        n = snprintf(dir, sizeof dir, "%s/%s", cwd, env && *env ? env : "build");
                }
                if (n < 0 || (size_t)n >= sizeof dir)
                        fail_msg("build directory path too long");
        }
        return dir;
}

static inline const char *tend_test_path_in_build(char *buf, size_t size, const char *rel) {
        if (!buf[0]) {
                int n = snprintf(buf, size, "%s/%s", tend_build_dir(), rel);
                if (n < 0 || (size_t)n >= size)
                        fail_msg("path of %s too long", rel);
        }
        return buf;
}

/* Absolute path of the misbehaving helper program (tests/helper.c). */
static inline const char *helper_path(void) {
        static char path[PATH_MAX];
        return tend_test_path_in_build(path, sizeof path, "tests/helper");
}

/* The helper where any user can run it (set by the pytest driver: the build directory may sit
 * below a directory only we can enter); for tests that switch to another user. */
static inline const char *public_helper_path(void) {
        const char *p = getenv("TEND_HELPER_PUBLIC");
        return p && *p ? p : helper_path();
}

/* Absolute path of the tend program. */
static inline const char *tend_path(void) {
        static char path[PATH_MAX];
        return tend_test_path_in_build(path, sizeof path, "tend");
}

/* ---- talking to the helper --------------------------------------------------------------- */

/* Read the helper's "ready <pid>..." line from fd (the read end of the pipe whose write end
 * was given as HELPER_READY_FD). Blocks until the line or EOF; the alarm bounds the wait.
 * Returns the pid, or -1 on EOF (the helper died or never reported) or a malformed line.
 * If line is not NULL, the whole line (without '\n') is copied there. */
static inline pid_t helper_read_ready(int fd, char *line, size_t size) {
        char buf[4096];
        size_t len = 0;
        long pid;

        while (len < sizeof buf - 1) {
                ssize_t n = read(fd, buf + len, 1);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        return -1;
                if (buf[len] == '\n')
                        break;
                len++;
        }
        buf[len] = '\0';
        if (line && size > 0)
                snprintf(line, size, "%s", buf);
        if (sscanf(buf, "ready %ld", &pid) != 1 || pid <= 0)
                return -1;
        return (pid_t)pid;
}

/* ---- main -------------------------------------------------------------------------------- */

/* Handles --list and NAME. Returns an exit code, or -1 to go on and run the (filtered) tests. */
static inline int tend_test_args(int argc, char **argv, const struct CMUnitTest *tests,
                                 size_t n_tests) {
        /* Line-buffered, so what a test printed survives it being killed (alarm, crash). */
        setvbuf(stdout, NULL, _IOLBF, 0);

        if (argc > 2 || (argc == 2 && argv[1][0] == '-' && strcmp(argv[1], "--list"))) {
                fprintf(stderr, "usage: %s [--list | TEST_NAME]\n", argv[0]);
                return 2;
        }
        if (argc == 2 && !strcmp(argv[1], "--list")) {
                for (size_t i = 0; i < n_tests; i++)
                        printf("%s\n", tests[i].name);
                return 0;
        }
        if (argc == 2) {
                bool found = false;
                for (size_t i = 0; i < n_tests; i++)
                        found = found || !strcmp(tests[i].name, argv[1]);
                if (!found) {
                        fprintf(stderr, "%s: no test named '%s' (--list shows them)\n", argv[0],
                                argv[1]);
                        return 2;
                }
                /* cmocka matches with * and ? wildcards; test names are plain identifiers. */
                cmocka_set_test_filter(argv[1]);
                test_alarm(TEND_TEST_DEFAULT_ALARM);
        }
        return -1;
}

static inline const char *tend_test_group_name(const char *argv0) {
        const char *slash = strrchr(argv0, '/');
        return slash ? slash + 1 : argv0;
}

#define TEND_TEST_MAIN(tests_array)                                                            \
        int main(int argc, char **argv) {                                                      \
                int r_ = tend_test_args(argc, argv, (tests_array),                             \
                                        sizeof(tests_array) / sizeof((tests_array)[0]));       \
                if (r_ >= 0)                                                                   \
                        return r_;                                                             \
                /* cmocka returns the number of failures, which could wrap to 0 at 256. */     \
                r_ = cmocka_run_group_tests_name(tend_test_group_name(argv[0]), (tests_array), \
                                                 NULL, NULL);                                  \
                return r_ ? 1 : 0;                                                             \
        }

#endif
