/* launch_guard.c — `tend launch-agent --guard cgroup PATH` / `--guard pgroup`: kill the
 * command's group when the agent dies abruptly (doc/launch.md, "Lifeline").
 *
 * The agent cannot stop its command once it is SIGKILLed, so before it starts the command it
 * starts this small process, in a session of its own (a hang-up of the agent's session does
 * not reach it) and outside the command's group, with the read end of a pipe on stdin. Only
 * the agent holds the write end. For a process group, the agent writes the group's id as
 * "P<pgid>\n" once the command runs. At the agent's normal end it writes "D" (done): the
 * group is empty by then, and the guard exits. EOF without that byte means the agent died:
 * the guard kills the group at once and exits.
 *
 * It blocks in read(): it has nothing else to do, and a blocking read sleeps until the
 * kernel wakes it, which is what the loop would do too. */
#include "launch.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define GUARD_INPUT_MAX 64

static void kill_cgroup(const char *path) {
        char file[4096];
        snprintf(file, sizeof file, "%s/cgroup.kill", path);
        if (io_write_file_at(AT_FDCWD, file, "1") == 0)
                return;
        /* Before Linux 5.14 there is no cgroup.kill: kill the members one by one, again until
         * none is left (a member may fork meanwhile), bounded. */
        snprintf(file, sizeof file, "%s/cgroup.procs", path);
        for (int pass = 0; pass < 32; pass++) {
                static char procs[1 << 16];
                ssize_t n = io_read_file(file, procs, sizeof procs);
                if (n <= 0)
                        return;
                bool any = false;
                for (char *p = procs, *end; *p; p = end) {
                        long pid = strtol(p, &end, 10);
                        if (end == p)
                                break;
                        if (pid > 1 && kill((pid_t)pid, SIGKILL) == 0)
                                any = true;
                }
                if (!any)
                        return;
        }
}

/* After the kill: once the kernel says the cgroup is empty (cgroup.events "populated 0",
 * signalled with POLLPRI; members that are zombies of someone else no longer count), remove
 * it, so a killed agent leaves no cgroup behind either. Bounded: a member stuck in the kernel
 * (D state) keeps the directory, and the guard does not wait for it forever. */
#define GUARD_EMPTY_WAIT_MS 10000

static int ms_until(const struct timespec *deadline) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        long ms = (deadline->tv_sec - now.tv_sec) * 1000 +
                  (deadline->tv_nsec - now.tv_nsec) / 1000000;
        return ms > 0 ? (int)ms : 0;
}

static void remove_cgroup_when_empty(const char *path) {
        char file[4096];
        snprintf(file, sizeof file, "%s/cgroup.events", path);
        int fd = open(file, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return;
        struct timespec deadline;
        clock_gettime(CLOCK_MONOTONIC, &deadline);
        deadline.tv_sec += GUARD_EMPTY_WAIT_MS / 1000;
        for (;;) {
                char buf[256];
                ssize_t n = lseek(fd, 0, SEEK_SET) == 0 ? io_read(fd, buf, sizeof buf - 1) : -1;
                if (n <= 0)
                        break;
                buf[n] = '\0';
                if (strstr(buf, "populated 0"))
                        break;
                int left = ms_until(&deadline);
                if (left == 0 || io_poll_one(fd, POLLPRI, left) <= 0)
                        break;
        }
        io_close(fd);
        (void)rmdir(path);
}

int launch_guard_main(int argc, char **argv) {
        /* argv: launch-agent --guard KIND [PATH] */
        if (argc < 3 || (strcmp(argv[2], "cgroup") && strcmp(argv[2], "pgroup")) ||
            (!strcmp(argv[2], "cgroup") && argc < 4)) {
                msg_error("launch-agent: usage: launch-agent --guard cgroup PATH | pgroup");
                return 2;
        }
        bool cgroup = !strcmp(argv[2], "cgroup");
        signal(SIGHUP, SIG_IGN);
        signal(SIGINT, SIG_IGN);
        signal(SIGPIPE, SIG_IGN);
        char in[GUARD_INPUT_MAX + 1];
        size_t len = 0;
        long pgid = 0;
        for (;;) {
                char c;
                ssize_t n = io_read(STDIN_FILENO, &c, 1);
                if (n <= 0)
                        break;
                if (c == 'D')
                        return 0;
                if (c == '\n') {
                        in[len] = '\0';
                        if (in[0] == 'P')
                                pgid = strtol(in + 1, NULL, 10);
                        len = 0;
                } else if (len < GUARD_INPUT_MAX) {
                        in[len++] = c;
                }
        }
        /* The agent is gone without saying done. */
        if (cgroup) {
                kill_cgroup(argv[3]);
                remove_cgroup_when_empty(argv[3]);
        } else if (pgid > 1)
                (void)kill(-(pid_t)pgid, SIGKILL);
        msg_error("launch-agent: guard: the agent died; its command's group was killed");
        return 1;
}
