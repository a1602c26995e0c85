/* prog.c — set-up and tear-down that several subcommands share. */
#include "cmd.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/prctl.h>
#include <termios.h>
#include <unistd.h>

int prog_owner_loop(tend_loop **ret_loop, tend_orphan_cb on_orphan, void *userdata) {
        /* A closed reader of our stdout must not kill us before a child's status is known:
         * blocked, SIGPIPE turns into EPIPE; children get their own mask. */
        sigset_t pipe_set;
        sigemptyset(&pipe_set);
        sigaddset(&pipe_set, SIGPIPE);
        sigprocmask(SIG_BLOCK, &pipe_set, NULL);

        tend_loop *loop;
        int e = tend_loop_new(&loop);
        if (e < 0) {
                msg_error("cannot create the event loop: %s", tend_strerror(e));
                return e;
        }
        /* Every descendant that loses its parent comes to us, in every mode (DESIGN §1.7). */
        if (prctl(PR_SET_CHILD_SUBREAPER, 1) < 0) {
                e = -errno;
                msg_error("cannot become a subreaper: %s", strerror(errno));
                tend_loop_free(loop);
                return e;
        }
        e = tend_loop_reap_orphans(loop, on_orphan, userdata);
        if (e < 0) {
                msg_error("cannot watch SIGCHLD: %s", tend_strerror(e));
                tend_loop_free(loop);
                return e;
        }
        *ret_loop = loop;
        return 0;
}

void prog_take_terminal_back(void) {
        /* We are in the background now: tcsetpgrp would stop us with SIGTTOU. */
        sigset_t ttou, old;
        sigemptyset(&ttou);
        sigaddset(&ttou, SIGTTOU);
        sigprocmask(SIG_BLOCK, &ttou, &old);
        (void)tcsetpgrp(STDIN_FILENO, getpgrp());
        sigprocmask(SIG_SETMASK, &old, NULL);
}

void prog_hold_closed_stdio(void) {
        for (int fd = 0; fd <= 2; fd++) {
                if (fcntl(fd, F_GETFD) >= 0 || errno != EBADF)
                        continue;
                int n = open("/dev/null", O_RDWR | O_CLOEXEC | O_NOCTTY);
                if (n >= 0 && n != fd)
                        io_close(n);
        }
}

int prog_write_line_to(const char *path, const char *text) {
        size_t len = strlen(text);
        if (!strcmp(path, "-")) {
                int e = io_write_all(STDERR_FILENO, text, len);
                return e < 0 ? e : io_write_all(STDERR_FILENO, "\n", 1);
        }
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOCTTY, 0666);
        if (fd < 0)
                return -errno;
        int e = io_write_all(fd, text, len);
        if (e == 0)
                e = io_write_all(fd, "\n", 1);
        /* A failed close of a file we wrote can be the first news of a full disk (NFS); EINTR
         * leaves the fd closed on Linux and says nothing of the data. */
        if (close(fd) < 0 && e == 0 && errno != EINTR)
                e = -errno;
        return e;
}
