/* test_notify.c — the sd_notify receiver (lib/notify.c): the parser on good, malformed and
 * unknown input, and the socket: credentials, the 4096-byte limit (a longer datagram is
 * dropped, never cut), NUL bytes, BARRIER=1 answered by closing its fd, and fds passed with
 * any message closed so that none leak. */
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "harness.h"
#include "notify.h"
#include "tend.h"

static struct notify_msg *parse(const char *text) {
        static struct notify_msg m;
        memset(&m, 0, sizeof m);
        size_t len = strlen(text);
        assert_true(len <= NOTIFY_MSG_MAX);
        memcpy(m.buf, text, len);
        assert_int_equal(notify_parse(m.buf, len, &m), 0);
        return &m;
}

/* ---- the parser ---------------------------------------------------------------------------- */

static void parses_known_keys(void **state) {
        struct notify_msg *m = parse("READY=1\nSTATUS=Serving 3 clients\nMAINPID=4242\n"
                                     "WATCHDOG=1\nWATCHDOG_USEC=5000000\nEXTEND_TIMEOUT_USEC=7\n"
                                     "ERRNO=2\nRELOADING=1\nMONOTONIC_USEC=99\nSTOPPING=1\n");
        assert_true(m->ready);
        assert_string_equal(m->status, "Serving 3 clients");
        assert_true(m->have_mainpid);
        assert_int_equal(m->mainpid, 4242);
        assert_true(m->watchdog);
        assert_false(m->watchdog_trigger);
        assert_true(m->have_watchdog_usec);
        assert_int_equal(m->watchdog_usec, 5000000);
        assert_true(m->have_extend);
        assert_int_equal(m->extend_usec, 7);
        assert_true(m->have_errno);
        assert_int_equal(m->errno_value, 2);
        assert_true(m->reloading);
        assert_true(m->have_monotonic);
        assert_int_equal(m->monotonic_usec, 99);
        assert_true(m->stopping);
        assert_int_equal(m->n_unknown, 0);
}

static void ignores_unknown_and_malformed(void **state) {
        struct notify_msg *m = parse("X_TEND_PRIVATE=1\nFDSTORE=1\nFDNAME=x\nnot a line\n"
                                     "READY=0\nREADY=yes\nMAINPID=-1\nMAINPID=0\nMAINPID=12x\n"
                                     "WATCHDOG_USEC=99999999999999999999999\nERRNO=-3\n"
                                     "=value\n\n\n");
        assert_false(m->ready);
        assert_false(m->have_mainpid);
        assert_false(m->have_watchdog_usec);
        assert_false(m->have_errno);
        assert_true(m->n_unknown >= 5);
        assert_null(m->status);
}

static void last_line_without_newline_and_empty_status(void **state) {
        struct notify_msg *m = parse("STATUS=\nREADY=1");
        assert_true(m->ready);
        assert_non_null(m->status);
        assert_string_equal(m->status, "");
        m = parse("WATCHDOG=trigger");
        assert_true(m->watchdog_trigger);
        assert_false(m->watchdog);
        m = parse("STATUS=a=b=c\nSTATUS=second wins");
        assert_string_equal(m->status, "second wins");
        m = parse("");
        assert_false(m->ready);
}

static void refuses_nul_and_oversize(void **state) {
        static struct notify_msg m;
        memset(&m, 0, sizeof m);
        memcpy(m.buf, "READY=1\0STATUS=x", 16);
        assert_int_equal(notify_parse(m.buf, 16, &m), -EBADMSG);
        assert_false(m.ready);
        static char big[NOTIFY_MSG_MAX + 2];
        memset(big, 'A', sizeof big);
        assert_int_equal(notify_parse(big, NOTIFY_MSG_MAX + 1, &m), -EBADMSG);
}

static void exactly_max_is_accepted(void **state) {
        static struct notify_msg m;
        memset(&m, 0, sizeof m);
        /* "STATUS=" + padding to exactly 4096 bytes. */
        memcpy(m.buf, "STATUS=", 7);
        memset(m.buf + 7, 'x', NOTIFY_MSG_MAX - 7);
        assert_int_equal(notify_parse(m.buf, NOTIFY_MSG_MAX, &m), 0);
        assert_int_equal(strlen(m.status), NOTIFY_MSG_MAX - 7);
}

/* ---- the socket ------------------------------------------------------------------------------ */

struct fx {
        char dir[128];
        char path[160];
        int fd;
        int client;
};

static int setup(void **state) {
        struct fx *f = calloc(1, sizeof *f);
        const char *base = getenv("TEND_TEST_SESSION");
        snprintf(f->dir, sizeof f->dir, "%s/notifyXXXXXX", base && *base ? base : "/tmp");
        if (!mkdtemp(f->dir))
                return -1;
        snprintf(f->path, sizeof f->path, "%s/s.notify", f->dir);
        f->fd = f->client = -1;
        *state = f;
        return 0;
}

static int teardown(void **state) {
        struct fx *f = *state;
        if (f->fd >= 0)
                close(f->fd);
        if (f->client >= 0)
                close(f->client);
        unlink(f->path);
        rmdir(f->dir);
        free(f);
        return 0;
}

static void open_socket(struct fx *f) {
        int e = notify_socket_open(f->path, (uid_t)-1, (gid_t)-1, &f->fd);
        assert_int_equal(e, 0);
        struct stat st;
        assert_int_equal(stat(f->path, &st), 0);
        assert_true(S_ISSOCK(st.st_mode));
        assert_int_equal(st.st_mode & 0777, 0600);
        assert_true(fcntl(f->fd, F_GETFD) & FD_CLOEXEC);
        f->client = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        assert_true(f->client >= 0);
}

static void send_with_fds(struct fx *f, const void *data, size_t len, const int *fds, size_t n) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        memcpy(sa.sun_path, f->path, strlen(f->path) + 1);
        struct iovec iov = { .iov_base = (void *)data, .iov_len = len };
        union {
                struct cmsghdr align;
                char buf[CMSG_SPACE(sizeof(int) * 8)];
        } control;
        memset(&control, 0, sizeof control);
        struct msghdr mh = { .msg_name = &sa, .msg_namelen = sizeof sa, .msg_iov = &iov,
                             .msg_iovlen = 1 };
        if (n) {
                mh.msg_control = control.buf;
                mh.msg_controllen = CMSG_SPACE(sizeof(int) * n);
                struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
                c->cmsg_level = SOL_SOCKET;
                c->cmsg_type = SCM_RIGHTS;
                c->cmsg_len = CMSG_LEN(sizeof(int) * n);
                memcpy(CMSG_DATA(c), fds, sizeof(int) * n);
        }
        assert_true(sendmsg(f->client, &mh, MSG_NOSIGNAL) == (ssize_t)len);
}

static void send_text(struct fx *f, const char *text) {
        send_with_fds(f, text, strlen(text), NULL, 0);
}

static int count_fds(void) {
        int n = 0;
        DIR *d = opendir("/proc/self/fd");
        assert_non_null(d);
        while (readdir(d))
                n++;
        closedir(d);
        return n;
}

static void receives_with_credentials(void **state) {
        struct fx *f = *state;
        open_socket(f);
        struct notify_msg *m = malloc(sizeof *m);
        assert_int_equal(notify_receive(f->fd, m), -EAGAIN);
        send_text(f, "READY=1\nSTATUS=up");
        assert_int_equal(notify_receive(f->fd, m), 0);
        assert_true(m->have_creds);
        assert_int_equal(m->pid, getpid());
        assert_int_equal(m->uid, getuid());
        assert_int_equal(m->gid, getgid());
        assert_true(m->ready);
        assert_string_equal(m->status, "up");
        assert_int_equal(notify_receive(f->fd, m), -EAGAIN);
        free(m);
}

static void drops_oversized_and_nul(void **state) {
        struct fx *f = *state;
        open_socket(f);
        int big_buf = 1 << 16;
        (void)setsockopt(f->client, SOL_SOCKET, SO_SNDBUF, &big_buf, sizeof big_buf);
        struct notify_msg *m = malloc(sizeof *m);
        static char big[NOTIFY_MSG_MAX + 100];
        memcpy(big, "READY=1\nSTATUS=", 15);
        memset(big + 15, 'y', sizeof big - 15);
        send_with_fds(f, big, sizeof big, NULL, 0);
        send_with_fds(f, "READY=1\0X", 9, NULL, 0);
        send_text(f, "STATUS=after");
        assert_int_equal(notify_receive(f->fd, m), -EBADMSG); /* cut, never half-read */
        assert_int_equal(notify_receive(f->fd, m), -EBADMSG); /* NUL inside */
        assert_int_equal(notify_receive(f->fd, m), 0);        /* the next one is fine */
        assert_false(m->ready);
        assert_string_equal(m->status, "after");
        /* Exactly 4096 bytes passes. */
        memcpy(big, "STATUS=", 7);
        memset(big + 7, 'z', NOTIFY_MSG_MAX - 7);
        send_with_fds(f, big, NOTIFY_MSG_MAX, NULL, 0);
        assert_int_equal(notify_receive(f->fd, m), 0);
        assert_int_equal(strlen(m->status), NOTIFY_MSG_MAX - 7);
        free(m);
}

static void barrier_closes_its_fd(void **state) {
        struct fx *f = *state;
        open_socket(f);
        struct notify_msg *m = malloc(sizeof *m);
        int p[2];
        assert_int_equal(pipe2(p, O_CLOEXEC), 0);
        send_text(f, "STATUS=before");
        send_with_fds(f, "BARRIER=1", 9, &p[1], 1);
        close(p[1]); /* ours; the copy in flight is the receiver's */
        struct pollfd pfd = { .fd = p[0], .events = POLLIN };
        assert_int_equal(poll(&pfd, 1, 0), 0); /* nobody has closed it yet */
        assert_int_equal(notify_receive(f->fd, m), 0);
        assert_string_equal(m->status, "before");
        assert_int_equal(poll(&pfd, 1, 0), 0); /* the barrier is still queued */
        assert_int_equal(notify_receive(f->fd, m), 0);
        assert_true(m->barrier);
        assert_int_equal(m->n_fds, 1);
        /* The sender's wait ends: every write end is gone. */
        assert_int_equal(poll(&pfd, 1, 0), 1);
        assert_true(pfd.revents & POLLHUP);
        close(p[0]);
        free(m);
}

static void passed_fds_never_leak(void **state) {
        struct fx *f = *state;
        open_socket(f);
        struct notify_msg *m = malloc(sizeof *m);
        int before = count_fds();
        int fds[5];
        for (int i = 0; i < 5; i++)
                fds[i] = open("/dev/null", O_RDONLY | O_CLOEXEC);
        /* FDSTORE (not supported), a READY with fds, a too-long one with fds, and one with
         * a NUL: all their fds are closed. */
        send_with_fds(f, "FDSTORE=1\nFDNAME=x", 18, fds, 5);
        send_with_fds(f, "READY=1", 7, fds, 2);
        static char big[NOTIFY_MSG_MAX + 10];
        memset(big, 'q', sizeof big);
        int big_buf = 1 << 16;
        (void)setsockopt(f->client, SOL_SOCKET, SO_SNDBUF, &big_buf, sizeof big_buf);
        send_with_fds(f, big, sizeof big, fds, 3);
        send_with_fds(f, "A=\0", 3, fds, 1);
        for (int i = 0; i < 5; i++)
                close(fds[i]);
        assert_int_equal(notify_receive(f->fd, m), 0);
        assert_int_equal(m->n_fds, 5);
        assert_int_equal(notify_receive(f->fd, m), 0);
        assert_true(m->ready);
        assert_int_equal(notify_receive(f->fd, m), -EBADMSG);
        assert_int_equal(notify_receive(f->fd, m), -EBADMSG);
        assert_int_equal(notify_receive(f->fd, m), -EAGAIN);
        assert_int_equal(count_fds(), before);
        free(m);
}

static void replaces_stale_socket_and_rejects_long_path(void **state) {
        struct fx *f = *state;
        open_socket(f);
        int again;
        /* A second open at the same path replaces the socket file (stale from a crash). */
        assert_int_equal(notify_socket_open(f->path, (uid_t)-1, (gid_t)-1, &again), 0);
        close(again);
        char longpath[200];
        memset(longpath, 'a', sizeof longpath - 1);
        longpath[0] = '/';
        longpath[sizeof longpath - 1] = '\0';
        assert_int_equal(notify_socket_open(longpath, (uid_t)-1, (gid_t)-1, &again),
                         -ENAMETOOLONG);
}

static const struct CMUnitTest tests[] = {
        cmocka_unit_test(parses_known_keys),
        cmocka_unit_test(ignores_unknown_and_malformed),
        cmocka_unit_test(last_line_without_newline_and_empty_status),
        cmocka_unit_test(refuses_nul_and_oversize),
        cmocka_unit_test(exactly_max_is_accepted),
        cmocka_unit_test_setup_teardown(receives_with_credentials, setup, teardown),
        cmocka_unit_test_setup_teardown(drops_oversized_and_nul, setup, teardown),
        cmocka_unit_test_setup_teardown(barrier_closes_its_fd, setup, teardown),
        cmocka_unit_test_setup_teardown(passed_fds_never_leak, setup, teardown),
        cmocka_unit_test_setup_teardown(replaces_stale_socket_and_rejects_long_path, setup,
                                        teardown),
};

TEND_TEST_MAIN(tests)
