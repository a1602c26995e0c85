/* spawn.c — benchmark: spawn and reap a trivial program N times, through several spawners.
 *
 *   spawn MODE N INFLIGHT RESIDENT_MIB [PROGRAM]
 *
 * MODE is one of
 *   posix_spawn  glibc posix_spawn + waitpid (the limit: DESIGN §5)
 *   fork         fork + execve + waitpid
 *   tend         tend_spawn + exit callbacks from tend_loop_run
 *   tend-wait    tend_spawn + tend_proc_wait (INFLIGHT must be 1)
 *   uv           libuv's uv_spawn + exit callbacks from uv_run (when built with libuv)
 * N programs are run in all, at most INFLIGHT at a time (1: one after the other). Before the
 * clock starts, RESIDENT_MIB MiB of memory are allocated and touched, so that the parent is
 * that large when it spawns (fork copies its page tables; CLONE_VM spawners do not).
 * PROGRAM defaults to /bin/true. Prints one JSON object on stdout:
 *   {"mode":…,"n":…,"inflight":…,"resident_mib":…,"seconds":…,"failures":…}
 * failures counts children that did not exit 0; the exit status is 1 if there were any. */
#include <errno.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <tend.h>
#ifdef HAVE_LIBUV
#include <uv.h>
#endif

extern char **environ;

static const char *program = "/bin/true";
static long n_total, n_inflight;
static long started, finished, failures;

static double now(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what, int err) {
        fprintf(stderr, "spawn: %s: %s\n", what, strerror(err));
        exit(2);
}

static void note_status(int wait_status) {
        finished++;
        if (!WIFEXITED(wait_status) || WEXITSTATUS(wait_status) != 0)
                failures++;
}

/* ---- posix_spawn and fork: the same loop, two ways to start ------------------------------ */

static pid_t start_posix_spawn(void) {
        pid_t pid;
        char *argv[] = { (char *)program, NULL };
        int r = posix_spawn(&pid, program, NULL, NULL, argv, environ);
        if (r)
                die("posix_spawn", r);
        return pid;
}

static pid_t start_fork(void) {
        char *argv[] = { (char *)program, NULL };
        pid_t pid = fork();
        if (pid < 0)
                die("fork", errno);
        if (pid == 0) {
                execve(program, argv, environ);
                _exit(127);
        }
        return pid;
}

static void run_waitpid(pid_t (*start)(void)) {
        if (n_inflight == 1) {
                for (long i = 0; i < n_total; i++) {
                        pid_t pid = start();
                        int st;
                        while (waitpid(pid, &st, 0) < 0)
                                if (errno != EINTR)
                                        die("waitpid", errno);
                        started++;
                        note_status(st);
                }
                return;
        }
        while (started < n_total && started < n_inflight) {
                start();
                started++;
        }
        while (finished < n_total) {
                int st;
                if (waitpid(-1, &st, 0) < 0) {
                        if (errno == EINTR)
                                continue;
                        die("waitpid", errno);
                }
                note_status(st);
                if (started < n_total) {
                        start();
                        started++;
                }
        }
}

/* ---- libtend ------------------------------------------------------------------------------ */

static tend_loop *loop;

static void tend_start(void);

static void on_tend_exit(tend_proc *p, int err, const struct tend_exit *ex, void *userdata) {
        if (err < 0)
                failures++, finished++;
        else
                note_status(ex->wait_status);
        tend_proc_free(p);
        if (started < n_total)
                tend_start();
}

static void tend_start(void) {
        const char *const argv[] = { program, NULL };
        struct tend_spawn_opts o = { .argv = argv };
        tend_proc *p;
        enum tend_spawn_step step;
        int r = tend_spawn(loop, &o, &p, &step);
        if (r < 0)
                die(tend_spawn_step_name(step), -r);
        started++;
        tend_proc_on_exit(p, on_tend_exit, NULL);
}

static void run_tend(void) {
        while (started < n_total && started < n_inflight)
                tend_start();
        int r = tend_loop_run(loop);
        if (r < 0)
                die("tend_loop_run", -r);
}

static void run_tend_wait(void) {
        const char *const argv[] = { program, NULL };
        struct tend_spawn_opts o = { .argv = argv };
        for (long i = 0; i < n_total; i++) {
                tend_proc *p;
                enum tend_spawn_step step;
                int r = tend_spawn(loop, &o, &p, &step);
                if (r < 0)
                        die(tend_spawn_step_name(step), -r);
                started++;
                struct tend_exit ex;
                r = tend_proc_wait(p, &ex);
                if (r < 0)
                        failures++, finished++;
                else
                        note_status(ex.wait_status);
                tend_proc_free(p);
        }
}

/* ---- libuv -------------------------------------------------------------------------------- */

#ifdef HAVE_LIBUV
static uv_loop_t *uvl;

static void uv_start(void);

static void on_uv_close(uv_handle_t *h) {
        free(h);
}

static void on_uv_exit(uv_process_t *h, int64_t status, int term_signal) {
        finished++;
        if (status != 0 || term_signal != 0)
                failures++;
        uv_close((uv_handle_t *)h, on_uv_close);
        if (started < n_total)
                uv_start();
}

static void uv_start(void) {
        char *argv[] = { (char *)program, NULL };
        uv_process_options_t o;
        memset(&o, 0, sizeof o);
        o.file = program;
        o.args = argv;
        o.exit_cb = on_uv_exit;
        uv_process_t *h = malloc(sizeof *h);
        if (!h)
                die("malloc", ENOMEM);
        int r = uv_spawn(uvl, h, &o);
        if (r < 0)
                die("uv_spawn", -r);
        started++;
}

static void run_uv(void) {
        uvl = uv_default_loop();
        while (started < n_total && started < n_inflight)
                uv_start();
        uv_run(uvl, UV_RUN_DEFAULT);
}
#endif

/* ------------------------------------------------------------------------------------------ */

int main(int argc, char **argv) {
        if (argc < 5 || argc > 6) {
                fprintf(stderr, "usage: spawn MODE N INFLIGHT RESIDENT_MIB [PROGRAM]\n");
                return 2;
        }
        const char *mode = argv[1];
        n_total = atol(argv[2]);
        n_inflight = atol(argv[3]);
        long resident_mib = atol(argv[4]);
        if (argc == 6)
                program = argv[5];
        if (n_total < 1 || n_inflight < 1) {
                fprintf(stderr, "spawn: N and INFLIGHT must be positive\n");
                return 2;
        }

        /* Make the parent large: allocate and write every page, so it is resident. */
        char *big = NULL;
        size_t big_len = (size_t)resident_mib << 20;
        if (big_len) {
                big = mmap(NULL, big_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                           -1, 0);
                if (big == MAP_FAILED)
                        die("mmap", errno);
                /* Small pages, as a heap usually is: it is the page tables fork copies. */
                (void)madvise(big, big_len, MADV_NOHUGEPAGE);
                for (size_t i = 0; i < big_len; i += 4096)
                        big[i] = (char)i | 1;
        }

        double t0 = 0, t1 = 0;
        if (!strcmp(mode, "posix_spawn")) {
                t0 = now();
                run_waitpid(start_posix_spawn);
                t1 = now();
        } else if (!strcmp(mode, "fork")) {
                t0 = now();
                run_waitpid(start_fork);
                t1 = now();
        } else if (!strcmp(mode, "tend") || !strcmp(mode, "tend-wait")) {
                int r = tend_loop_new(&loop);
                if (r < 0)
                        die("tend_loop_new", -r);
                bool wait_mode = !strcmp(mode, "tend-wait");
                if (wait_mode && n_inflight != 1) {
                        fprintf(stderr, "spawn: tend-wait runs one at a time (INFLIGHT 1)\n");
                        return 2;
                }
                t0 = now();
                if (wait_mode)
                        run_tend_wait();
                else
                        run_tend();
                t1 = now();
                tend_loop_free(loop);
        } else if (!strcmp(mode, "uv")) {
#ifdef HAVE_LIBUV
                t0 = now();
                run_uv();
                t1 = now();
#else
                fprintf(stderr, "spawn: built without libuv\n");
                return 3;
#endif
        } else {
                fprintf(stderr, "spawn: unknown mode '%s'\n", mode);
                return 2;
        }
        if (finished != n_total) {
                fprintf(stderr, "spawn: %ld of %ld finished\n", finished, n_total);
                return 1;
        }
        printf("{\"mode\":\"%s\",\"n\":%ld,\"inflight\":%ld,\"resident_mib\":%ld,"
               "\"seconds\":%.6f,\"failures\":%ld}\n",
               mode, n_total, n_inflight, resident_mib, t1 - t0, failures);
        if (big)
                munmap(big, big_len);
        return failures ? 1 : 0;
}
