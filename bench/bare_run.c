/* bare_run.c — benchmark 2's limits: the least that a runner of one command can do, with and
 * without a cgroup of its own for the command.
 *
 *   bare_run plain -- CMD [ARGS...]       clone3 (CLONE_PIDFD), exec, waitid(P_PIDFD)
 *   bare_run cgroup DIR -- CMD [ARGS...]  the same into a new cgroup DIR/bare-run-PID
 *                                         (mkdir, CLONE_INTO_CGROUP), then rmdir
 *
 * Nothing else: no signal forwarding, no output handling, no leftovers looked for or
 * stopped, no error messages beyond a status. What `tend run` does on top of "cgroup" is what
 * it offers; what "cgroup" costs over "plain" is the kernel's price of a cgroup per run.
 * Exits with the command's status (128+N for signal N), 125 if it could not run it. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <linux/sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
        int with_cgroup = argc > 2 && !strcmp(argv[1], "cgroup");
        int first = with_cgroup ? 4 : 3;
        if (argc <= first || strcmp(argv[first - 1], "--") ||
            (!with_cgroup && strcmp(argv[1], "plain"))) {
                fprintf(stderr, "usage: bare_run plain|cgroup DIR -- CMD [ARGS...]\n");
                return 125;
        }
        char leaf[4096];
        int dir_fd = -1;
        if (with_cgroup) {
                snprintf(leaf, sizeof leaf, "%s/bare-run-%d", argv[2], (int)getpid());
                if (mkdir(leaf, 0755) < 0 ||
                    (dir_fd = open(leaf, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
                        perror(leaf);
                        return 125;
                }
        }
        int pidfd = -1;
        struct clone_args ca;
        memset(&ca, 0, sizeof ca);
        ca.flags = CLONE_PIDFD | (with_cgroup ? CLONE_INTO_CGROUP : 0);
        ca.pidfd = (uint64_t)(uintptr_t)&pidfd;
        ca.exit_signal = SIGCHLD;
        ca.cgroup = with_cgroup ? (uint64_t)dir_fd : 0;
        long pid = syscall(SYS_clone3, &ca, sizeof ca);
        if (pid == 0) {
                execvp(argv[first], argv + first);
                _exit(127);
        }
        int code = 125;
        siginfo_t si;
        if (pid > 0 && waitid((idtype_t)P_PIDFD, (id_t)pidfd, &si, WEXITED) == 0)
                code = si.si_code == CLD_EXITED ? si.si_status : 128 + si.si_status;
        if (with_cgroup) {
                close(dir_fd);
                /* Not seen here, but a cgroup may still count a task that has been reaped
                 * for a moment: then wait for "populated 0" (POLLPRI on cgroup.events). */
                while (rmdir(leaf) < 0 && errno == EBUSY) {
                        char events[4200], text[256];
                        snprintf(events, sizeof events, "%s/cgroup.events", leaf);
                        int fd = open(events, O_RDONLY | O_CLOEXEC);
                        ssize_t n = fd < 0 ? -1 : pread(fd, text, sizeof text - 1, 0);
                        if (n > 0) {
                                text[n] = '\0';
                                struct pollfd pf = { .fd = fd, .events = POLLPRI };
                                if (!strstr(text, "populated 0") && poll(&pf, 1, 5000) != 1)
                                        n = -1;
                        }
                        if (fd >= 0)
                                close(fd);
                        if (n <= 0)
                                break;
                }
                if (access(leaf, F_OK) == 0)
                        perror(leaf);
        }
        return code;
}
