/* fuzz_notify.c — the sd_notify message parser (lib/notify.c): notify_parse() on the bytes
 * themselves, and notify_receive() on them sent as one datagram over a socket, with
 * credentials, without an fd and with two (which it must close: checked). */
#include "fuzz.h"
#include "notify.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int lowest_free_fd(void) {
        int fd = dup(0);
        if (fd >= 0)
                close(fd);
        return fd;
}

static void check_message(const struct notify_msg *m, const char *buf, size_t len) {
        /* Whatever it returned must point into the text it was given. */
        if (m->status && (m->status < buf || m->status > buf + len))
                FUZZ_FAIL("STATUS= points outside the message");
        if (m->status)
                FUZZ_USE(strlen(m->status));
}

static void over_socket(const uint8_t *data, size_t size, int n_fds) {
        int before = lowest_free_fd();
        int sp[2];
        if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sp) < 0)
                FUZZ_FAIL("socketpair");
        int one = 1;
        (void)setsockopt(sp[1], SOL_SOCKET, SO_PASSCRED, &one, sizeof one);
        int fds[2] = { -1, -1 };
        for (int i = 0; i < n_fds; i++)
                fds[i] = open("/dev/null", O_RDONLY | O_CLOEXEC);
        union {
                char buf[CMSG_SPACE(sizeof fds)];
                struct cmsghdr align;
        } control;
        memset(&control, 0, sizeof control);
        struct iovec iov = { .iov_base = (void *)data, .iov_len = size };
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
        if (n_fds) {
                mh.msg_control = control.buf;
                mh.msg_controllen = CMSG_SPACE(n_fds * sizeof(int));
                struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
                cm->cmsg_level = SOL_SOCKET;
                cm->cmsg_type = SCM_RIGHTS;
                cm->cmsg_len = CMSG_LEN(n_fds * sizeof(int));
                memcpy(CMSG_DATA(cm), fds, n_fds * sizeof(int));
        }
        ssize_t sent = sendmsg(sp[0], &mh, MSG_NOSIGNAL);
        for (int i = 0; i < n_fds; i++)
                close(fds[i]);
        if (sent >= 0) {
                struct notify_msg *m = malloc(sizeof *m);
                if (!m)
                        FUZZ_FAIL("malloc");
                int r = notify_receive(sp[1], m);
                if (r == 0) {
                        if (!m->have_creds || m->pid != getpid())
                                FUZZ_FAIL("credentials lost");
                        if (m->n_fds != (unsigned)n_fds)
                                FUZZ_FAIL("fd count %u, sent %d", m->n_fds, n_fds);
                        check_message(m, m->buf, size);
                } else if (r != -EBADMSG) {
                        FUZZ_FAIL("notify_receive: %d", r);
                }
                free(m);
                /* Nothing more queued. */
                struct notify_msg m2;
                if (notify_receive(sp[1], &m2) != -EAGAIN)
                        FUZZ_FAIL("a second message?");
        }
        close(sp[0]);
        close(sp[1]);
        if (lowest_free_fd() != before)
                FUZZ_FAIL("an fd leaked (lowest free fd %d, was %d)", lowest_free_fd(), before);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        /* The parser alone, on an exact-size copy (ASan sees any read past the NUL). */
        char *buf = malloc(size + 1);
        if (!buf)
                return 0;
        if (size)
                memcpy(buf, data, size);
        buf[size] = 0;
        struct notify_msg *m = calloc(1, sizeof *m);
        if (!m)
                FUZZ_FAIL("calloc");
        int r = notify_parse(buf, size, m);
        if (r == 0)
                check_message(m, buf, size);
        else if (r != -EBADMSG)
                FUZZ_FAIL("notify_parse: %d", r);
        else if (size <= NOTIFY_MSG_MAX && !memchr(data, 0, size))
                FUZZ_FAIL("a good-sized message without NUL refused");
        free(m);
        free(buf);

        /* As the supervisor gets it: one datagram, with no fd and with two. */
        if (size <= 2 * NOTIFY_MSG_MAX) {
                over_socket(data, size, 0);
                over_socket(data, size, 2);
        }
        return 0;
}
