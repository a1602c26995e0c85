/* notify.h — the receiving side of systemd's sd_notify protocol (lib/notify.c).
 *
 * Internal for the same reason as service.h: libtend's "ready" box, not yet public API.
 *
 * One socket per service: an AF_UNIX datagram socket bound to a path, given to the service in
 * NOTIFY_SOCKET. SO_PASSCRED is on, so every datagram carries its sender's pid, uid and gid
 * (the caller decides whom to believe: the socket itself names the service). One datagram is
 * one message of newline-separated KEY=VALUE lines, at most NOTIFY_MSG_MAX bytes. A datagram
 * that was truncated (longer than that) or has a NUL byte in it is dropped whole. Unknown keys
 * and known keys with a malformed value are ignored, as systemd does.
 *
 * File descriptors that come with a datagram (SCM_RIGHTS) are always closed by
 * notify_receive(), so none leak. That is also how BARRIER=1 is answered: the sender passes
 * one end of a pipe and waits for the other to hang up; since datagrams are read one at a time
 * and each is handled before the next is read, everything queued before the barrier has been
 * handled when its fd is closed. A caller must therefore finish handling each message before
 * it calls notify_receive() again. */
#ifndef TEND_NOTIFY_H
#define TEND_NOTIFY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define NOTIFY_MSG_MAX 4096

struct notify_msg {
        /* Sender, from SCM_CREDENTIALS (have_creds false if the kernel sent none). */
        bool have_creds;
        pid_t pid;
        uid_t uid;
        gid_t gid;

        bool ready;            /* READY=1 */
        bool reloading;        /* RELOADING=1 */
        bool stopping;         /* STOPPING=1 */
        bool watchdog;         /* WATCHDOG=1 */
        bool watchdog_trigger; /* WATCHDOG=trigger */
        bool barrier;          /* BARRIER=1 (its fd has been closed) */
        bool have_mainpid;     /* MAINPID=n, n > 0 */
        pid_t mainpid;
        bool have_watchdog_usec; /* WATCHDOG_USEC=n */
        uint64_t watchdog_usec;
        bool have_extend;      /* EXTEND_TIMEOUT_USEC=n */
        uint64_t extend_usec;
        bool have_monotonic;   /* MONOTONIC_USEC=n (with RELOADING=1) */
        uint64_t monotonic_usec;
        bool have_errno;       /* ERRNO=n, n >= 0 */
        int errno_value;
        const char *status;    /* STATUS=text, or NULL; points into buf */
        unsigned n_fds;        /* file descriptors that came with it (all closed) */
        unsigned n_unknown;    /* lines with keys it does not know (ignored) */
        char buf[NOTIFY_MSG_MAX + 1];
};

/* Parse one message of len bytes at data (modified in place: lines are cut at '\n'; string
 * fields point into data, which must stay alive and be NUL-terminated at data[len]).
 * Credentials and fds are left as they are in *m. Returns 0, or -EBADMSG if data holds a NUL
 * byte or len exceeds NOTIFY_MSG_MAX. */
int notify_parse(char *data, size_t len, struct notify_msg *m);

/* Create the socket at path (an existing socket file there is replaced), non-blocking and
 * close-on-exec, with SO_PASSCRED, mode 0600, owned by uid:gid when uid is not (uid_t)-1 so
 * that a service running as that user can send to it. Returns 0 and the fd, or -errno. */
int notify_socket_open(const char *path, uid_t uid, gid_t gid, int *ret_fd);

/* Read one datagram. Returns 0 and *m filled (m->buf holds the text); -EAGAIN when none is
 * queued; -EBADMSG when one was read and dropped (truncated or with a NUL byte; its fds
 * closed); or another -errno. */
int notify_receive(int fd, struct notify_msg *m);

#endif
