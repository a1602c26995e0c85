/* storm.c — benchmark: COUNT children exit at the same moment; how long until every status is
 * collected, and is every one collected, each with its own code?
 *
 *   storm MODE COUNT WAITER
 *
 * WAITER (bench/waiter) blocks reading its stdin and exits with the code given as its
 * argument once it reads end-of-file. COUNT waiters are started with stdin on the read end of
 * one pipe, child i told to exit with i % 256; then the write end is closed, which ends them
 * all at once, and the clock runs until the last status is in.
 * MODE:
 *   tend  tend_spawn + exit callbacks from tend_loop_run (one pidfd per child)
 *   bare  posix_spawn + one waitpid(-1) loop (the limit)
 * Prints one JSON object: {"mode":…,"count":…,"collected":…,"wrong_code":…,"seconds":…,
 * "spawn_seconds":…}. Exit status 1 unless every status was collected with its own code. */
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <tend.h>

extern char **environ;

static long count, collected, wrong_code;

static double now(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what, int err) {
        fprintf(stderr, "storm: %s: %s\n", what, strerror(err));
        exit(2);
}

/* One pidfd per child for tend, plus headroom. Root may raise the hard limit too. */
static void raise_nofile(rlim_t want) {
        struct rlimit rl;
        if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
                die("getrlimit", errno);
        if (rl.rlim_cur >= want)
                return;
        struct rlimit nl = { want, rl.rlim_max > want ? rl.rlim_max : want };
        if (setrlimit(RLIMIT_NOFILE, &nl) == 0)
                return;
        nl.rlim_cur = rl.rlim_max;
        nl.rlim_max = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &nl) < 0 || nl.rlim_cur < want)
                fprintf(stderr, "storm: RLIMIT_NOFILE is %llu, wanted %llu\n",
                        (unsigned long long)nl.rlim_cur, (unsigned long long)want);
}

struct child {
        int code;
};

static void on_exit_cb(tend_proc *p, int err, const struct tend_exit *ex, void *userdata) {
        const struct child *c = userdata;
        if (err == 0) {
                collected++;
                if (ex->signo || ex->code != c->code)
                        wrong_code++;
        }
        tend_proc_free(p);
}

int main(int argc, char **argv) {
        if (argc != 4) {
                fprintf(stderr, "usage: storm tend|bare COUNT WAITER\n");
                return 2;
        }
        const char *mode = argv[1];
        count = atol(argv[2]);
        const char *waiter = argv[3];
        bool use_tend = !strcmp(mode, "tend");
        if (!use_tend && strcmp(mode, "bare")) {
                fprintf(stderr, "storm: unknown mode '%s'\n", mode);
                return 2;
        }
        raise_nofile((rlim_t)count + 1024);

        int p[2];
        if (pipe2(p, O_CLOEXEC) < 0)
                die("pipe2", errno);
        struct child *kids = calloc((size_t)count, sizeof *kids);
        char (*codes)[8] = calloc((size_t)count, sizeof *codes);
        /* bare: pid -> expected code + 1 (0: not ours). */
        long pid_max = 4194304;
        FILE *f = fopen("/proc/sys/kernel/pid_max", "r");
        if (f) {
                if (fscanf(f, "%ld", &pid_max) != 1)
                        pid_max = 4194304;
                fclose(f);
        }
        short *by_pid = calloc((size_t)pid_max + 1, sizeof *by_pid);
        if (!kids || !codes || !by_pid)
                die("calloc", ENOMEM);

        tend_loop *loop = NULL;
        posix_spawn_file_actions_t fa;
        if (use_tend) {
                int r = tend_loop_new(&loop);
                if (r < 0)
                        die("tend_loop_new", -r);
        } else {
                posix_spawn_file_actions_init(&fa);
                posix_spawn_file_actions_adddup2(&fa, p[0], 0);
        }

        double s0 = now();
        for (long i = 0; i < count; i++) {
                kids[i].code = (int)(i % 256);
                snprintf(codes[i], sizeof codes[i], "%d", kids[i].code);
                const char *cargv[] = { waiter, codes[i], NULL };
                if (use_tend) {
                        struct tend_spawn_opts o = { .argv = cargv };
                        o.stdio[0].kind = TEND_STDIO_FD;
                        o.stdio[0].fd = p[0];
                        tend_proc *proc;
                        enum tend_spawn_step step;
                        int r = tend_spawn(loop, &o, &proc, &step);
                        if (r < 0)
                                die(tend_spawn_step_name(step), -r);
                        tend_proc_on_exit(proc, on_exit_cb, &kids[i]);
                } else {
                        pid_t pid;
                        int r = posix_spawn(&pid, waiter, &fa, NULL, (char *const *)cargv,
                                            environ);
                        if (r)
                                die("posix_spawn", r);
                        by_pid[pid] = (short)(kids[i].code + 1);
                }
        }
        double s1 = now();

        close(p[0]);
        double t0 = now();
        close(p[1]); /* every waiter reads EOF now */
        if (use_tend) {
                int r = tend_loop_run(loop);
                if (r < 0)
                        die("tend_loop_run", -r);
        } else {
                while (collected < count) {
                        int st;
                        pid_t pid = waitpid(-1, &st, 0);
                        if (pid < 0) {
                                if (errno == EINTR)
                                        continue;
                                if (errno == ECHILD)
                                        break;
                                die("waitpid", errno);
                        }
                        if (pid > pid_max || !by_pid[pid])
                                continue;
                        collected++;
                        if (!WIFEXITED(st) || WEXITSTATUS(st) != by_pid[pid] - 1)
                                wrong_code++;
                        by_pid[pid] = 0;
                }
        }
        double t1 = now();
        if (use_tend)
                tend_loop_free(loop);
        else
                posix_spawn_file_actions_destroy(&fa);

        printf("{\"mode\":\"%s\",\"count\":%ld,\"collected\":%ld,\"wrong_code\":%ld,"
               "\"seconds\":%.6f,\"spawn_seconds\":%.6f}\n",
               mode, count, collected, wrong_code, t1 - t0, s1 - s0);
        return collected == count && wrong_code == 0 ? 0 : 1;
}
