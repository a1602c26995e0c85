/* outq.c — passing a child's output on to our own stdout/stderr without ever blocking the loop.
 *
 * Our stdout may be a pipe to a slow (or stuck) reader. A blocking write there would stop the
 * whole loop: no timeout, no signal forwarding. Setting O_NONBLOCK on it is not ours to do —
 * the open file description is shared with whoever gave it to us (a shell, a terminal), and
 * they would start seeing EAGAIN. So a pipe, FIFO or terminal is reopened through
 * /proc/self/fd/N, which gives us a file description of our own to make non-blocking. Output
 * that cannot be written at once is queued; above a high-water mark the producer is paused
 * (backpressure: the child blocks on its full pipe), below the low-water mark it resumes.
 * Regular files never block for long and are written directly. */
#include "outq.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <unistd.h>

#define OUTQ_HIGH (1024u * 1024u)
#define OUTQ_LOW (OUTQ_HIGH / 4)

void outq_init(struct outq *q, tend_loop *loop, int fd, outq_resume_cb resume, void *userdata) {
        memset(q, 0, sizeof *q);
        q->loop = loop;
        q->fd = fd;
        q->resume = resume;
        q->userdata = userdata;
}

/* At the first write, not at outq_init(): the reopen is a first look into /proc for a fresh
 * process (20-30 us here, on the way to every `tend run` whose stdout is a pipe, a terminal or
 * /dev/null), and a command that writes nothing never needs it. */
static void outq_open(struct outq *q) {
        q->opened = true;
        struct stat st;
        if (q->fd < 0 || fstat(q->fd, &st) < 0)
                return;
        if (!S_ISFIFO(st.st_mode) && !S_ISCHR(st.st_mode))
                return; /* regular files: plain writes */
        char path[64];
        snprintf(path, sizeof path, "/proc/self/fd/%d", q->fd);
        int own = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
        if (own < 0)
                return; /* e.g. no /proc: fall back to blocking writes */
        q->fd = own;
        q->own_fd = true;
}

static int outq_grow(struct outq *q, size_t need) {
        if (q->head > 0) {
                memmove(q->buf, q->buf + q->head, q->len - q->head);
                q->len -= q->head;
                q->head = 0;
        }
        if (q->cap - q->len >= need)
                return 0;
        size_t cap = q->cap ? q->cap : 64 * 1024;
        while (cap - q->len < need)
                cap *= 2;
        char *b = realloc(q->buf, cap);
        if (!b)
                return -ENOMEM;
        q->buf = b;
        q->cap = cap;
        return 0;
}

static void on_writable(tend_watch *w, int fd, uint32_t revents, void *userdata);

static void outq_set_watch(struct outq *q, bool on) {
        if (on && !q->watch) {
                if (tend_watch_new(q->loop, q->fd, EPOLLOUT, on_writable, q, &q->watch) < 0)
                        q->watch = NULL;
        } else if (!on && q->watch) {
                q->watch = tend_watch_free(q->watch);
        }
}

/* Write what is queued without blocking. */
static void outq_push(struct outq *q) {
        while (q->head < q->len) {
                ssize_t n = write(q->fd, q->buf + q->head, q->len - q->head);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN)
                                break;
                        q->error = errno;
                        q->head = q->len = 0;
                        break;
                }
                q->head += (size_t)n;
        }
        if (q->head == q->len)
                q->head = q->len = 0;
}

static void on_writable(tend_watch *w, int fd, uint32_t revents, void *userdata) {
        struct outq *q = userdata;
        outq_push(q);
        if (q->len == 0 || q->error)
                outq_set_watch(q, false);
        if (q->paused && (q->error || q->len - q->head <= OUTQ_LOW)) {
                q->paused = false;
                if (q->resume)
                        q->resume(q->userdata);
        }
}

bool outq_write(struct outq *q, const void *data, size_t len) {
        if (q->fd < 0 || q->error || len == 0)
                return false;
        if (!q->opened)
                outq_open(q);
        if (!q->own_fd) {
                int e = io_write_all(q->fd, data, len);
                if (e < 0)
                        q->error = -e;
                return false;
        }
        if (outq_grow(q, len) < 0) {
                /* No memory to queue: write it blocking rather than lose it. */
                io_set_nonblock(q->fd, false);
                outq_push(q);
                int e = io_write_all(q->fd, data, len);
                io_set_nonblock(q->fd, true);
                if (e < 0)
                        q->error = -e;
                return false;
        }
        memcpy(q->buf + q->len, data, len);
        q->len += len;
        outq_push(q);
        if (q->len > 0 && !q->error)
                outq_set_watch(q, true);
        if (!q->error && q->len - q->head > OUTQ_HIGH)
                q->paused = true;
        return q->paused;
}

void outq_finish(struct outq *q) {
        outq_set_watch(q, false);
        if (q->own_fd && q->len > q->head && !q->error) {
                /* The end: everything left must still go out, so now we may wait for it. */
                io_set_nonblock(q->fd, false);
                int e = io_write_all(q->fd, q->buf + q->head, q->len - q->head);
                if (e < 0)
                        q->error = -e;
        }
        q->head = q->len = 0;
}

void outq_free(struct outq *q) {
        outq_set_watch(q, false);
        free(q->buf);
        q->buf = NULL;
        if (q->own_fd)
                q->fd = io_close(q->fd);
}
