/* svc.c — the service that the supervision benchmarks (4, 6, 7) run under every supervisor.
 *
 * It is configured by its environment only, because s6 and runit run a service directory's
 * `run` file without arguments (there `run` is a symlink to this program) and every
 * supervisor hands its own environment on to its services:
 *
 *   BENCH_SVC_MODE  idle     report "up PID" and sleep until killed (benchmark 4)
 *                   restart  report "start NS PID" first thing, run BENCH_RUN_MS (1100) ms,
 *                            report "exit NS PID" and exit 0 (benchmark 6)
 *                   ready    signal readiness — READY=1 to $NOTIFY_SOCKET (sd_notify) and/or
 *                            a newline on fd $BENCH_READY_FD (s6's notification fd) — then
 *                            report "ready PID" and sleep until killed (benchmark 7)
 *   BENCH_FIFO      where reports go: a FIFO the benchmark driver holds open for reading,
 *                   so that the driver waits for events, not for a guessed time
 *
 * NS is CLOCK_MONOTONIC in nanoseconds (system-wide on Linux, so the driver can subtract
 * one process's exit from the next one's start). Each report is one write(2) of less than
 * PIPE_BUF bytes, so reports from many services never interleave.
 *
 *   svc loop [PROGRAM]
 *                the reference for benchmark 6: posix_spawn PROGRAM (default: this program),
 *                waitpid, spawn it again at once, forever (the limit a supervisor can reach)
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static long long now_ns(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void report(const char *line, size_t len) {
        const char *path = getenv("BENCH_FIFO");
        if (!path)
                return;
        int fd = open(path, O_WRONLY | O_CLOEXEC);
        if (fd < 0)
                return;
        (void)!write(fd, line, len);
        close(fd);
}

static void sleep_forever(void) {
        for (;;)
                pause();
}

static void notify_ready(void) {
        const char *ns = getenv("NOTIFY_SOCKET");
        if (ns && (ns[0] == '/' || ns[0] == '@') && strlen(ns) < sizeof(((struct sockaddr_un *)0)->sun_path)) {
                struct sockaddr_un sa = { .sun_family = AF_UNIX };
                size_t n = strlen(ns);
                memcpy(sa.sun_path, ns, n);
                if (sa.sun_path[0] == '@')
                        sa.sun_path[0] = '\0';
                int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
                if (fd >= 0) {
                        (void)!sendto(fd, "READY=1", 7, 0, (struct sockaddr *)&sa,
                                      (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n));
                        close(fd);
                }
        }
        const char *rfd = getenv("BENCH_READY_FD");
        if (rfd) {
                int fd = atoi(rfd);
                (void)!write(fd, "\n", 1);
                close(fd);
        }
}

static int loop(char **argv) {
        /* The reference supervisor: nothing between the exit and the next spawn but the
         * wait and the spawn. */
        const char *prog = argv[2] ? argv[2] : "/proc/self/exe";
        char *args[] = { (char *)prog, NULL };
        signal(SIGTERM, SIG_DFL);
        for (;;) {
                pid_t pid;
                int r = posix_spawn(&pid, prog, NULL, NULL, args, environ);
                if (r != 0) {
                        fprintf(stderr, "svc: posix_spawn: %s\n", strerror(r));
                        return 1;
                }
                int st;
                while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
                        ;
        }
}

int main(int argc, char **argv) {
        long long t0 = now_ns();
        if (argc > 1 && !strcmp(argv[1], "loop"))
                return loop(argv);
        const char *mode = getenv("BENCH_SVC_MODE");
        char line[128];
        int n;
        if (!mode || !strcmp(mode, "idle")) {
                n = snprintf(line, sizeof line, "up %d\n", (int)getpid());
                report(line, (size_t)n);
                sleep_forever();
        } else if (!strcmp(mode, "restart")) {
                n = snprintf(line, sizeof line, "start %lld %d\n", t0, (int)getpid());
                report(line, (size_t)n);
                const char *ms = getenv("BENCH_RUN_MS");
                long run_ms = ms ? atol(ms) : 1100;
                struct timespec ts = { run_ms / 1000, (run_ms % 1000) * 1000000L };
                while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                        ;
                n = snprintf(line, sizeof line, "exit %lld %d\n", now_ns(), (int)getpid());
                report(line, (size_t)n);
                _exit(0);
        } else if (!strcmp(mode, "ready")) {
                notify_ready();
                n = snprintf(line, sizeof line, "ready %d\n", (int)getpid());
                report(line, (size_t)n);
                sleep_forever();
        }
        fprintf(stderr, "svc: unknown BENCH_SVC_MODE '%s'\n", mode);
        return 2;
}
