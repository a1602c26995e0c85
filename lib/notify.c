/* notify.c — receiving sd_notify messages (see notify.h for the protocol and the rules). */
#include "notify.h"
#include "internal.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* The most fds one datagram can carry (the kernel's SCM_MAX_FD): with room for all of them
 * the kernel never has to drop some with MSG_CTRUNC — though if it did, it would close those
 * itself, so none could leak either way. */
#define NOTIFY_FDS_MAX 253

static bool parse_u64(const char *s, uint64_t *ret) {
        if (*s < '0' || *s > '9')
                return false;
        uint64_t v = 0;
        for (; *s; s++) {
                if (*s < '0' || *s > '9')
                        return false;
                unsigned d = (unsigned)(*s - '0');
                if (v > (UINT64_MAX - d) / 10)
                        return false;
                v = v * 10 + d;
        }
        *ret = v;
        return true;
}

static void parse_line(char *line, struct notify_msg *m) {
        char *eq = strchr(line, '=');
        if (!eq) {
                m->n_unknown++;
                return;
        }
        *eq = '\0';
        const char *key = line, *value = eq + 1;
        uint64_t v;
        if (!strcmp(key, "READY")) {
                if (!strcmp(value, "1"))
                        m->ready = true;
        } else if (!strcmp(key, "RELOADING")) {
                if (!strcmp(value, "1"))
                        m->reloading = true;
        } else if (!strcmp(key, "STOPPING")) {
                if (!strcmp(value, "1"))
                        m->stopping = true;
        } else if (!strcmp(key, "STATUS")) {
                m->status = value;
        } else if (!strcmp(key, "MAINPID")) {
                if (parse_u64(value, &v) && v > 0 && v <= INT_MAX) {
                        m->have_mainpid = true;
                        m->mainpid = (pid_t)v;
                }
        } else if (!strcmp(key, "WATCHDOG")) {
                if (!strcmp(value, "1"))
                        m->watchdog = true;
                else if (!strcmp(value, "trigger"))
                        m->watchdog_trigger = true;
        } else if (!strcmp(key, "WATCHDOG_USEC")) {
                if (parse_u64(value, &v)) {
                        m->have_watchdog_usec = true;
                        m->watchdog_usec = v;
                }
        } else if (!strcmp(key, "EXTEND_TIMEOUT_USEC")) {
                if (parse_u64(value, &v)) {
                        m->have_extend = true;
                        m->extend_usec = v;
                }
        } else if (!strcmp(key, "MONOTONIC_USEC")) {
                if (parse_u64(value, &v)) {
                        m->have_monotonic = true;
                        m->monotonic_usec = v;
                }
        } else if (!strcmp(key, "ERRNO")) {
                if (parse_u64(value, &v) && v <= INT_MAX) {
                        m->have_errno = true;
                        m->errno_value = (int)v;
                }
        } else if (!strcmp(key, "BARRIER")) {
                if (!strcmp(value, "1"))
                        m->barrier = true;
        } else {
                /* FDSTORE, FDNAME, X_* and whatever comes next: not ours to act on. */
                m->n_unknown++;
        }
}

int notify_parse(char *data, size_t len, struct notify_msg *m) {
        if (len > NOTIFY_MSG_MAX || memchr(data, '\0', len))
                return -EBADMSG;
        data[len] = '\0';
        for (char *line = data; line && *line;) {
                char *nl = strchr(line, '\n');
                if (nl)
                        *nl = '\0';
                if (*line)
                        parse_line(line, m);
                line = nl ? nl + 1 : NULL;
        }
        return 0;
}

int notify_socket_open(const char *path, uid_t uid, gid_t gid, int *ret_fd) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        size_t len = strlen(path);
        if (len == 0 || len >= sizeof sa.sun_path)
                return -ENAMETOOLONG;
        memcpy(sa.sun_path, path, len);
        int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return -errno;
        int one = 1, r;
        if (setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof one) < 0)
                goto fail_errno;
        (void)unlink(path);
        if (bind(fd, (struct sockaddr *)&sa,
                 (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + 1)) < 0)
                goto fail_errno;
        /* Only the service's user (and root) may send: the socket names the service. */
        if (chmod(path, 0600) < 0)
                goto fail_unlink;
        if (uid != (uid_t)-1 && chown(path, uid, gid) < 0)
                goto fail_unlink;
        *ret_fd = fd;
        return 0;
fail_unlink:
        r = -errno;
        (void)unlink(path);
        io_close(fd);
        return r;
fail_errno:
        r = -errno;
        io_close(fd);
        return r;
}

int notify_receive(int fd, struct notify_msg *m) {
        union {
                struct cmsghdr align;
                char buf[CMSG_SPACE(sizeof(struct ucred)) +
                         CMSG_SPACE(sizeof(int) * NOTIFY_FDS_MAX)];
        } control;
        memset(m, 0, offsetof(struct notify_msg, buf));
        struct iovec iov = { .iov_base = m->buf, .iov_len = NOTIFY_MSG_MAX };
        struct msghdr mh = {
                .msg_iov = &iov, .msg_iovlen = 1,
                .msg_control = control.buf, .msg_controllen = sizeof control.buf,
        };
        ssize_t n;
        do
                n = recvmsg(fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC | MSG_TRUNC);
        while (n < 0 && errno == EINTR);
        if (n < 0)
                return errno == EWOULDBLOCK ? -EAGAIN : -errno;
        /* Close every fd first, whatever the message says. */
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
                if (c->cmsg_level != SOL_SOCKET)
                        continue;
                if (c->cmsg_type == SCM_RIGHTS) {
                        size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
                        for (size_t i = 0; i < k; i++) {
                                int passed;
                                memcpy(&passed, CMSG_DATA(c) + i * sizeof(int), sizeof passed);
                                io_close(passed);
                                m->n_fds++;
                        }
                } else if (c->cmsg_type == SCM_CREDENTIALS &&
                           c->cmsg_len >= CMSG_LEN(sizeof(struct ucred))) {
                        struct ucred cred;
                        memcpy(&cred, CMSG_DATA(c), sizeof cred);
                        m->have_creds = true;
                        m->pid = cred.pid;
                        m->uid = cred.uid;
                        m->gid = cred.gid;
                }
        }
        if ((mh.msg_flags & MSG_TRUNC) || (size_t)n > NOTIFY_MSG_MAX)
                return -EBADMSG;
        return notify_parse(m->buf, (size_t)n, m);
}
