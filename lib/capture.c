/* capture.c — reading a child's output from the loop, by chunk or by line, and ending the read
 * in bounded time once the child is gone (DESIGN §1.1–1.2).
 *
 * Buffers are lazy: a supervisor holds two captures per service for the service's whole
 * life, and most of them are idle. The read buffer is allocated when the fd is readable and
 * freed again after a read that did not fill it (the pipe is then empty: idle), so a steady
 * stream keeps it and an idle pipe holds none; the line buffer exists only while a line is
 * incomplete. An idle capture costs its struct and its watch.
 *
 * Splicing (tend_capture_splice_to): the data goes from the pipe to its one destination by
 * splice(2), never through user space and never through the callback. One call moves what
 * the pipe holds. With SPLICE_F_NONBLOCK, EAGAIN means the pipe was empty *or* the
 * destination (a pipe) is full; poll() on the destination tells which. While it is full the
 * pipe is not watched and the destination is (EPOLLOUT): the writer blocks on its own full
 * pipe, as with a paused capture. Whatever splice cannot do ends splicing for good and the
 * read path goes on from the same place in the stream, so nothing is lost or reordered:
 *   - EINVAL: the destination takes no splice — on Linux 6.18 a file opened O_APPEND (seen:
 *     EINVAL before anything is moved, even with the pipe empty), /dev/full, a terminal;
 *   - any other error (ENOSPC, EFBIG, EIO, EPIPE): the callback gets the data, and its own
 *     write meets and reports the same error as it would have without splicing;
 *   - at the bounded drain (the writer is gone), a full destination: nothing may wait for
 *     its reader then, so the rest goes to the callback, whose consumer queues it. */
#include "internal.h"

#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <unistd.h>

#define DEFAULT_LINE_MAX (64u * 1024u)
#define DEFAULT_READ_SIZE (64u * 1024u)
/* What a pty may hold that is not a pipe: the drain bound when F_GETPIPE_SZ does not apply. */
#define NONPIPE_DRAIN_MAX (1024u * 1024u)
/* Bytes asked of one splice: more than any pipe holds, so one call empties it. */
#define SPLICE_MAX ((size_t)1 << 30)

struct tend_capture {
        tend_loop *loop;
        int fd;
        tend_watch *watch;
        enum tend_capture_mode mode;
        size_t line_max, read_size;
        char *buf;           /* NULL while idle */
        char *line;          /* NULL while no line is incomplete */
        size_t line_len;
        tend_capture_cb cb;
        void *userdata;
        uint64_t bytes;
        size_t pipe_size;      /* while the pipe may still grow: its size */
        size_t grow_pipe_to;   /* 0: no (more) growing */
        int splice_fd;         /* the destination while splicing, else -1 (not ours) */
        tend_watch *out_watch; /* on splice_fd while it is full */
        bool paused;
        bool done;
};

/* Hand the kept partial line over and let its buffer go. */
static void line_flush(tend_capture *c) {
        char *line = c->line;
        size_t len = c->line_len;
        c->line = NULL;
        c->line_len = 0;
        c->cb(c, line, len, false, c->userdata);
        free(line);
}

static void deliver_lines(tend_capture *c, const char *data, size_t len) {
        while (len > 0 && !c->done) { /* done: the consumer closed us from its callback */
                const char *nl = memchr(data, '\n', len);
                size_t take = nl ? (size_t)(nl - data) + 1 : len;
                if (c->line_len == 0 && nl && take <= c->line_max) {
                        /* A whole line in the read buffer: hand it over without copying. */
                        c->cb(c, data, take, false, c->userdata);
                } else {
                        size_t room = c->line_max - c->line_len;
                        if (take > room)
                                take = room;
                        if (!c->line && !(c->line = malloc(c->line_max))) {
                                /* Out of memory: the piece goes as a line of its own. */
                                c->cb(c, data, take, false, c->userdata);
                                data += take;
                                len -= take;
                                continue;
                        }
                        memcpy(c->line + c->line_len, data, take);
                        c->line_len += take;
                        if (c->line[c->line_len - 1] == '\n' || c->line_len == c->line_max)
                                line_flush(c);
                }
                data += take;
                len -= take;
        }
}

static void deliver(tend_capture *c, const char *data, size_t len) {
        c->bytes += len;
        if (c->mode == TEND_CAPTURE_LINE)
                deliver_lines(c, data, len);
        else
                c->cb(c, data, len, false, c->userdata);
}

/* Watch the pipe unless paused or waiting for the splice destination. */
static void update_watch(tend_capture *c) {
        if (c->watch)
                (void)tend_watch_set_events(c->watch, c->paused || c->out_watch ? 0 : EPOLLIN);
}

/* Splicing ends for good; the read path goes on from where it stopped. */
static void splice_stop(tend_capture *c) {
        c->splice_fd = -1;
        c->out_watch = tend_watch_free(c->out_watch);
        update_watch(c);
}

/* End of stream: flush a last partial line, close, and say eof. The eof callback may free
 * the capture, so nothing touches it afterwards. */
static void finish(tend_capture *c) {
        if (c->done)
                return;
        c->done = true;
        if (c->line_len)
                line_flush(c);
        free(c->buf);
        c->buf = NULL;
        c->watch = tend_watch_free(c->watch);
        c->out_watch = tend_watch_free(c->out_watch);
        c->splice_fd = -1;
        c->fd = io_close(c->fd);
        c->cb(c, NULL, 0, true, c->userdata);
}

/* One read. Returns bytes read, 0 at the end of the stream, or -EAGAIN. */
static ssize_t read_some(tend_capture *c, size_t max) {
        char small[256]; /* when the buffer cannot be had: slower, nothing lost */
        if (!c->buf)
                c->buf = malloc(c->read_size);
        char *buf = c->buf ? c->buf : small;
        size_t size = c->buf ? c->read_size : sizeof small;
        ssize_t n = io_read(c->fd, buf, max < size ? max : size);
        if (n > 0)
                deliver(c, buf, (size_t)n); /* a data callback does not free the capture */
        /* A read that did not fill the buffer emptied the pipe: the buffer goes until the
         * next wake-up. A steady stream fills it at each read and keeps it. */
        if (n <= 0 || (size_t)n < size) {
                free(c->buf);
                c->buf = NULL;
        }
        if (n > 0)
                return n;
        if (n == -EAGAIN)
                return n;
        /* 0 is EOF; EIO is how a pty master says the last slave closed; any other error
         * also ends the stream, as there is nothing more to be read from it. */
        return 0;
}

static void on_out_writable(tend_watch *w, int fd, uint32_t revents, void *userdata) {
        tend_capture *c = userdata;
        /* Room again, or an error that the next splice reports (EPIPE): read the pipe. */
        c->out_watch = tend_watch_free(c->out_watch);
        update_watch(c);
}

/* One splice. Returns bytes moved, 0 at the end of the stream, or -EAGAIN (the pipe is empty,
 * or the destination is full and now watched). Stops splicing (splice_fd -1) when the read
 * path must take over, and then the return value means nothing. */
static ssize_t splice_some(tend_capture *c, size_t max, bool draining) {
        ssize_t n = io_splice(c->fd, c->splice_fd, max, SPLICE_F_NONBLOCK);
        if (n > 0) {
                c->bytes += (uint64_t)n;
                return n;
        }
        if (n == 0)
                return 0;
        if (n == -EAGAIN) {
                int ev = io_poll_one(c->splice_fd, POLLOUT, 0);
                bool failed = ev < 0 || (ev & (POLLERR | POLLHUP | POLLNVAL));
                if (!failed && (ev & POLLOUT))
                        return -EAGAIN; /* the destination has room: our pipe was empty */
                if (!failed && !draining) {
                        /* The destination is full: wait for it, not for our pipe. */
                        if (c->out_watch || tend_watch_new(c->loop, c->splice_fd, EPOLLOUT,
                                                           on_out_writable, c,
                                                           &c->out_watch) == 0) {
                                update_watch(c);
                                return -EAGAIN;
                        }
                        /* Cannot be watched (e.g. watched already in this loop): the read
                         * path, whose consumer queues, takes over. */
                }
        }
        splice_stop(c);
        return -EAGAIN;
}

/* A splice took a whole pipe: the writer is faster than one pipe per wake-up, so let the
 * pipe hold more, and one splice move more (once; F_SETPIPE_SZ may refuse, e.g. past
 * pipe-user-pages-soft, and then the pipe stays as it is). The read path leaves the pipe
 * alone: it takes read_size bytes per wake-up whatever the pipe holds (measured: no gain). */
static void maybe_grow(tend_capture *c, ssize_t n) {
        if (!c->grow_pipe_to || n <= 0 || (size_t)n < c->pipe_size)
                return;
        (void)fcntl(c->fd, F_SETPIPE_SZ, (int)c->grow_pipe_to);
        c->grow_pipe_to = 0;
}

/* Move some data on: by splice while splicing, else by read and the callback. */
static ssize_t move_some(tend_capture *c, size_t max, bool draining) {
        if (c->splice_fd >= 0) {
                ssize_t n = splice_some(c, max, draining);
                if (c->splice_fd >= 0) {
                        if (!draining)
                                maybe_grow(c, n);
                        return n;
                }
        }
        return read_some(c, max);
}

static void on_readable(tend_watch *w, int fd, uint32_t revents, void *userdata) {
        tend_capture *c = userdata;
        if (move_some(c, c->splice_fd >= 0 ? SPLICE_MAX : SIZE_MAX, false) == 0)
                finish(c);
}

TEND_PUBLIC int tend_capture_new(tend_loop *loop, int fd, const struct tend_capture_opts *opts,
                                 tend_capture_cb cb, void *userdata,
                                 tend_capture **ret_capture) {
        if (fd < 0 || !cb)
                return -EINVAL;
        tend_capture *c = calloc(1, sizeof *c);
        if (!c)
                return -ENOMEM;
        c->loop = loop;
        c->fd = fd;
        c->splice_fd = -1;
        c->cb = cb;
        c->userdata = userdata;
        c->mode = opts ? opts->mode : TEND_CAPTURE_CHUNK;
        c->line_max = opts && opts->line_max ? opts->line_max : DEFAULT_LINE_MAX;
        c->read_size = opts && opts->read_size ? opts->read_size : DEFAULT_READ_SIZE;
        if (opts && opts->grow_pipe_to && opts->grow_pipe_to <= INT_MAX) {
                int size = fcntl(fd, F_GETPIPE_SZ);
                if (size > 0 && (size_t)size < opts->grow_pipe_to) {
                        c->pipe_size = (size_t)size;
                        c->grow_pipe_to = opts->grow_pipe_to;
                }
        }
        int r = io_set_nonblock(fd, true);
        if (r < 0)
                goto fail;
        r = tend_watch_new(loop, fd, EPOLLIN, on_readable, c, &c->watch);
        if (r < 0)
                goto fail;
        *ret_capture = c;
        return 0;
fail:
        free(c->buf);
        free(c->line);
        free(c);
        return r;
}

TEND_PUBLIC tend_capture *tend_capture_free(tend_capture *c) {
        if (!c)
                return NULL;
        tend_watch_free(c->watch);
        tend_watch_free(c->out_watch);
        io_close(c->fd);
        free(c->buf);
        free(c->line);
        free(c);
        return NULL;
}

TEND_PUBLIC void tend_capture_drain(tend_capture *c) {
        if (c->done)
                return;
        /* The writer is gone, so everything it wrote is already in the pipe; a pipe holds at
         * most its size. Whatever comes after that is from a descendant that kept the write
         * end, and waiting for it could take forever (DESIGN §1.1). */
        int size = fcntl(c->fd, F_GETPIPE_SZ);
        size_t left = size > 0 ? (size_t)size : NONPIPE_DRAIN_MAX;
        while (left > 0) {
                ssize_t n = move_some(c, left, true);
                if (n <= 0)
                        break;
                left -= (size_t)n;
        }
        finish(c);
}

TEND_PUBLIC void tend_capture_pause(tend_capture *c, bool paused) {
        if (c->done || !c->watch)
                return;
        c->paused = paused;
        update_watch(c);
}

TEND_PUBLIC int tend_capture_splice_to(tend_capture *c, int fd) {
        if (fd < 0) {
                if (c->splice_fd >= 0)
                        splice_stop(c);
                return 0;
        }
        if (c->done || c->mode != TEND_CAPTURE_CHUNK)
                return -EINVAL;
        /* splice(2) needs a pipe on one side: ours (a pty is not one). */
        if (!c->pipe_size && fcntl(c->fd, F_GETPIPE_SZ) < 0)
                return -EINVAL;
        if (c->splice_fd >= 0 && c->splice_fd != fd)
                splice_stop(c);
        c->splice_fd = fd;
        return 0;
}

TEND_PUBLIC void tend_capture_close(tend_capture *c) {
        if (c->done)
                return;
        c->done = true;
        /* From a data callback, read_some() goes on after the call: with c->buf NULL it frees
         * nothing more, and a closed c->fd reads as the end in a drain's loop. */
        free(c->buf);
        c->buf = NULL;
        free(c->line);
        c->line = NULL;
        c->line_len = 0;
        c->watch = tend_watch_free(c->watch);
        c->out_watch = tend_watch_free(c->out_watch);
        c->splice_fd = -1;
        c->fd = io_close(c->fd);
}

TEND_PUBLIC bool tend_capture_done(const tend_capture *c) {
        return c->done;
}

TEND_PUBLIC uint64_t tend_capture_bytes(const tend_capture *c) {
        return c->bytes;
}
