/* io.c — every read and write of the library goes through here, so EINTR, EAGAIN and short
 * transfers are handled in exactly one place. */
#include "internal.h"

#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

ssize_t io_read(int fd, void *buf, size_t len) {
        for (;;) {
                ssize_t n = read(fd, buf, len);
                if (n >= 0)
                        return n;
                if (errno != EINTR)
                        return -errno;
        }
}

ssize_t io_pread(int fd, void *buf, size_t len, off_t offset) {
        for (;;) {
                ssize_t n = pread(fd, buf, len, offset);
                if (n >= 0)
                        return n;
                if (errno != EINTR)
                        return -errno;
        }
}

ssize_t io_write(int fd, const void *buf, size_t len) {
        for (;;) {
                ssize_t n = write(fd, buf, len);
                if (n >= 0)
                        return n;
                if (errno != EINTR)
                        return -errno;
        }
}

ssize_t io_splice(int fd_in, int fd_out, size_t len, unsigned int flags) {
        for (;;) {
                ssize_t n = splice(fd_in, NULL, fd_out, NULL, len, flags);
                if (n >= 0)
                        return n;
                if (errno != EINTR)
                        return -errno;
        }
}

int io_write_all(int fd, const void *buf, size_t len) {
        const char *p = buf;
        while (len > 0) {
                ssize_t n = write(fd, p, len);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN) {
                                /* A non-blocking fd that is full: wait until it can take more.
                                 * Blocking here is what the caller asked for by writing all. */
                                struct pollfd pfd = { .fd = fd, .events = POLLOUT };
                                if (poll(&pfd, 1, -1) < 0 && errno != EINTR)
                                        return -errno;
                                /* A hung-up reader (a pty master whose terminal side is all
                                 * closed answers EAGAIN forever) never takes more. */
                                if (!(pfd.revents & POLLOUT) &&
                                    (pfd.revents & (POLLHUP | POLLERR | POLLNVAL)))
                                        return -EPIPE;
                                continue;
                        }
                        return -errno;
                }
                p += n;
                len -= (size_t)n;
        }
        return 0;
}

int io_poll_one(int fd, short events, int timeout_ms) {
        struct timespec start;
        clock_gettime(CLOCK_MONOTONIC, &start);
        for (;;) {
                struct pollfd pfd = { .fd = fd, .events = events };
                int r = poll(&pfd, 1, timeout_ms);
                if (r > 0)
                        return pfd.revents;
                if (r == 0)
                        return 0;
                if (errno != EINTR)
                        return -errno;
                if (timeout_ms >= 0) {
                        /* What is left of the timeout after the interruption. */
                        struct timespec now;
                        clock_gettime(CLOCK_MONOTONIC, &now);
                        long spent = (now.tv_sec - start.tv_sec) * 1000 +
                                     (now.tv_nsec - start.tv_nsec) / 1000000;
                        if (spent >= timeout_ms)
                                return 0;
                        timeout_ms -= (int)spent;
                        start = now;
                }
        }
}

ssize_t io_read_file_at(int dirfd, const char *path, char *buf, size_t size) {
        if (size == 0)
                return -EINVAL;
        int fd = openat(dirfd, path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return -errno;
        size_t used = 0;
        for (;;) {
                if (used == size - 1) {
                        /* Full: is there more? */
                        char extra;
                        ssize_t n = io_read(fd, &extra, 1);
                        io_close(fd);
                        if (n > 0)
                                return -EFBIG;
                        if (n < 0)
                                return n;
                        break;
                }
                ssize_t n = io_read(fd, buf + used, size - 1 - used);
                if (n < 0) {
                        io_close(fd);
                        return n;
                }
                if (n == 0) {
                        io_close(fd);
                        break;
                }
                used += (size_t)n;
        }
        buf[used] = '\0';
        return (ssize_t)used;
}

ssize_t io_read_file(const char *path, char *buf, size_t size) {
        return io_read_file_at(AT_FDCWD, path, buf, size);
}

int io_write_file_at(int dirfd, const char *path, const char *text) {
        int fd = openat(dirfd, path, O_WRONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return -errno;
        int r = io_write_all(fd, text, strlen(text));
        io_close(fd);
        return r;
}

int io_close(int fd) {
        if (fd >= 0) {
                int saved = errno;
                /* Linux releases the descriptor even when close() reports EINTR; retrying
                 * could close an fd another thread just got. */
                (void)close(fd);
                errno = saved;
        }
        return -1;
}

int io_set_nonblock(int fd, bool on) {
        int fl = fcntl(fd, F_GETFL);
        if (fl < 0)
                return -errno;
        int nfl = on ? (fl | O_NONBLOCK) : (fl & ~O_NONBLOCK);
        if (nfl != fl && fcntl(fd, F_SETFL, nfl) < 0)
                return -errno;
        return 0;
}
