/* capture.c — reading a child's output from the loop, by chunk or by line, and ending the read
 * in bounded time once the child is gone (DESIGN §1.1–1.2).
 *
 * Buffers are lazy: a supervisor holds two captures per service for the service's whole
 * life, and most of them are idle. The read buffer is allocated when the fd is readable and
 * freed again after a read that did not fill it (the pipe is then empty: idle), so a steady
 * stream keeps it and an idle pipe holds none; the line buffer exists only while a line is
 * incomplete. An idle capture costs its struct and its watch. */
#include "internal.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <unistd.h>

#define DEFAULT_LINE_MAX (64u * 1024u)
#define DEFAULT_READ_SIZE (64u * 1024u)
/* What a pty may hold that is not a pipe: the drain bound when F_GETPIPE_SZ does not apply. */
#define NONPIPE_DRAIN_MAX (1024u * 1024u)

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
        while (len > 0) {
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

static void on_readable(tend_watch *w, int fd, uint32_t revents, void *userdata) {
        tend_capture *c = userdata;
        if (read_some(c, SIZE_MAX) == 0)
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
        c->cb = cb;
        c->userdata = userdata;
        c->mode = opts ? opts->mode : TEND_CAPTURE_CHUNK;
        c->line_max = opts && opts->line_max ? opts->line_max : DEFAULT_LINE_MAX;
        c->read_size = opts && opts->read_size ? opts->read_size : DEFAULT_READ_SIZE;
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
                ssize_t n = read_some(c, left);
                if (n <= 0)
                        break;
                left -= (size_t)n;
        }
        finish(c);
}

TEND_PUBLIC void tend_capture_pause(tend_capture *c, bool paused) {
        if (c->done || !c->watch)
                return;
        (void)tend_watch_set_events(c->watch, paused ? 0 : EPOLLIN);
}

TEND_PUBLIC bool tend_capture_done(const tend_capture *c) {
        return c->done;
}

TEND_PUBLIC uint64_t tend_capture_bytes(const tend_capture *c) {
        return c->bytes;
}
