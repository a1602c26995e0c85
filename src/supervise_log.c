/* supervise_log.c — where a service's output goes.
 *
 * Each service has a pipe per stream that tend makes once and holds for the service's whole
 * life: every run of the service (and its hooks and probes) gets the same write ends, and
 * tend keeps reading the read ends. So what a process writes just before it crashes is in
 * the pipe, not lost with the process (DESIGN §1.2), and restarts do not reopen anything.
 *
 * Sinks, per line:
 *   file:PATH  a timestamp (UTC) and the stream, then the line; the file is rotated when
 *              the next line would take it past size= (PATH -> PATH.1 -> ... -> PATH.keep).
 *              A write that fails (a full disk, an I/O error) drops the line and counts it:
 *              the event loop never waits on a disk. The first failure and the recovery are
 *              reported.
 *   inherit    "NAME: line" on tend's own stdout or stderr, through a non-blocking queue;
 *              when our reader is too far behind, lines are dropped and counted.
 *   none       /dev/null, no pipe at all. */
#include "supervise.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define LOG_LINE_MAX 4096

struct log_stream {
        struct svc_logger *l;
        int stream;
        int wfd;
        tend_capture *cap;
};

struct svc_logger {
        struct sv *sv;
        const char *name;            /* the service's configuration's: a changed definition */
        enum svc_log kind;           /* makes a new service, and a new logger with it */
        struct log_stream st[3];
        const char *path;
        uint64_t max_size;
        unsigned keep;
        int fd;
        uint64_t size;
        bool failing;
        int error;
        unsigned long dropped;
        unsigned long rotations;
};

static int file_open(struct svc_logger *l) {
        l->fd = open(l->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0644);
        if (l->fd < 0)
                return -errno;
        struct stat st;
        l->size = fstat(l->fd, &st) == 0 && S_ISREG(st.st_mode) ? (uint64_t)st.st_size : 0;
        return 0;
}

static void file_rotate(struct svc_logger *l) {
        l->fd = io_close(l->fd);
        size_t n = strlen(l->path) + 16;
        char *from = malloc(n), *to = malloc(n);
        if (from && to) {
                for (unsigned i = l->keep; i > 1; i--) {
                        snprintf(from, n, "%s.%u", l->path, i - 1);
                        snprintf(to, n, "%s.%u", l->path, i);
                        (void)rename(from, to);
                }
                if (l->keep) {
                        snprintf(to, n, "%s.1", l->path);
                        (void)rename(l->path, to);
                } else {
                        (void)unlink(l->path);
                }
        }
        free(from);
        free(to);
        l->rotations++;
        (void)file_open(l);
}

static void note_failure(struct svc_logger *l, int err) {
        l->dropped++;
        l->error = err;
        if (!l->failing) {
                l->failing = true;
                sv_say(l->sv, "svc '%s': cannot write log '%s': %s; dropping lines until it works again",
                       l->name, l->path, strerror(err));
        }
}

/* "2026-11-02T10:00:00.123Z stdout " into head (64 bytes); returns its length. */
static size_t line_head(char *head, size_t size, int stream) {
        struct timespec ts;
        struct tm tm;
        clock_gettime(CLOCK_REALTIME, &ts);
        gmtime_r(&ts.tv_sec, &tm);
        size_t h = strftime(head, size, "%Y-%m-%dT%H:%M:%S", &tm);
        h += (size_t)snprintf(head + h, size - h, ".%03ldZ %s ", ts.tv_nsec / 1000000,
                              stream == 1 ? "stdout" : "stderr");
        return h;
}

static void file_line(struct svc_logger *l, int stream, const char *data, size_t len) {
        char head[64];
        size_t h = line_head(head, sizeof head, stream);
        bool nl = len && data[len - 1] == '\n';
        if (l->fd < 0) {
                int e = file_open(l);
                if (e < 0) {
                        note_failure(l, -e);
                        return;
                }
        }
        uint64_t need = h + len + (nl ? 0 : 1);
        if (l->max_size && l->size > 0 && l->size + need > l->max_size) {
                file_rotate(l);
                if (l->fd < 0) {
                        note_failure(l, errno);
                        return;
                }
        }
        struct iovec iov[3] = {
                { head, h }, { (void *)data, len }, { (void *)"\n", nl ? 0 : 1 },
        };
        ssize_t w;
        do
                w = writev(l->fd, iov, 3);
        while (w < 0 && errno == EINTR);
        if (w < 0 || (uint64_t)w != need) {
                if (w > 0)
                        l->size += (uint64_t)w;
                note_failure(l, w < 0 ? errno : ENOSPC);
                return;
        }
        l->size += need;
        control_on_log_line(l->sv, l->name, head, h, data, len); /* `tend ctl logs --follow` */
        if (l->failing) {
                l->failing = false;
                sv_say(l->sv, "svc '%s': log '%s' is written again (%lu lines dropped so far)",
                       l->name, l->path, l->dropped);
        }
}

static void inherit_line(struct svc_logger *l, int stream, const char *data, size_t len) {
        char buf[CONFIG_NAME_MAX + 3 + LOG_LINE_MAX + 1];
        size_t n = (size_t)snprintf(buf, sizeof buf, "%s: ", l->name);
        if (len > LOG_LINE_MAX)
                len = LOG_LINE_MAX;
        memcpy(buf + n, data, len);
        n += len;
        if (!len || data[len - 1] != '\n')
                buf[n++] = '\n';
        if (!sv_output(l->sv, stream, buf, n))
                l->dropped++;
        /* `tend ctl logs --follow` gets the line as the file would have it, dropped here or
         * not (its own queue is bounded separately). */
        if (control_has_followers(l->sv)) {
                char head[64];
                size_t h = line_head(head, sizeof head, stream);
                control_on_log_line(l->sv, l->name, head, h, data, len);
        }
}

static void on_line(tend_capture *c, const char *data, size_t len, bool eof, void *userdata) {
        struct log_stream *st = userdata;
        if (eof || !len)
                return;
        if (st->l->kind == SVC_LOG_FILE)
                file_line(st->l, st->stream, data, len);
        else
                inherit_line(st->l, st->stream, data, len);
}

/* log = none has nothing of its own (no pipe, no file, nothing counted): every such service
 * shares this one, which is never written to — at 10,000 services that is 1.6 MB less. */
static struct svc_logger logger_none = {
        .kind = SVC_LOG_NONE,
        .fd = -1,
        .st = { { .wfd = -1 }, { .stream = 1, .wfd = -1 }, { .stream = 2, .wfd = -1 } },
};

int logger_new(struct sv *sv, const struct svc_config *cfg, struct svc_logger **ret) {
        if (cfg->log == SVC_LOG_NONE) {
                *ret = &logger_none;
                return 0;
        }
        struct svc_logger *l = calloc(1, sizeof *l);
        if (!l)
                return -ENOMEM;
        l->sv = sv;
        l->fd = -1;
        l->kind = cfg->log;
        l->name = cfg->name;
        for (int i = 0; i < 3; i++)
                l->st[i] = (struct log_stream){ .l = l, .stream = i, .wfd = -1 };
        int e = -ENOMEM;
        if (!l->name)
                goto fail;
        if (l->kind == SVC_LOG_FILE) {
                l->path = cfg->x->log_path;
                l->max_size = cfg->x->log_size;
                l->keep = cfg->x->log_keep;
                e = file_open(l);
                if (e < 0)
                        note_failure(l, -e); /* tried again at each line */
                l->dropped = 0;
        }
        struct tend_capture_opts opts = { .mode = TEND_CAPTURE_LINE, .line_max = LOG_LINE_MAX,
                                          .read_size = LOG_LINE_MAX };
        for (int i = 1; i <= 2; i++) {
                int p[2];
                if (pipe2(p, O_CLOEXEC) < 0) {
                        e = -errno;
                        goto fail;
                }
                l->st[i].wfd = p[1];
                e = tend_capture_new(sv->loop, p[0], &opts, on_line, &l->st[i], &l->st[i].cap);
                if (e < 0) {
                        io_close(p[0]);
                        goto fail;
                }
        }
        *ret = l;
        return 0;
fail:
        logger_free(l);
        return e;
}

void logger_free(struct svc_logger *l) {
        if (!l || l == &logger_none)
                return;
        for (int i = 1; i <= 2; i++) {
                l->st[i].wfd = io_close(l->st[i].wfd);
                /* Whatever is still in the pipe, up to its size (a leftover process that
                 * holds the write end cannot keep us). */
                if (l->st[i].cap)
                        tend_capture_drain(l->st[i].cap);
                tend_capture_free(l->st[i].cap);
        }
        io_close(l->fd);
        free(l);
}

int logger_fd(const struct svc_logger *l, int stream) {
        if (!l || stream < 1 || stream > 2)
                return -1;
        return l->st[stream].wfd;
}

void logger_describe(const struct svc_logger *l, json_t *o) {
        static const char *const kinds[] = { [SVC_LOG_INHERIT] = "inherit",
                                             [SVC_LOG_FILE] = "file", [SVC_LOG_NONE] = "none" };
        json_t *j = json_object();
        if (!j)
                return;
        json_object_set_new(j, "kind", json_string(kinds[l->kind]));
        if (l->path)
                json_object_set_new(j, "path", json_string(l->path));
        json_object_set_new(j, "dropped_lines", json_integer((json_int_t)l->dropped));
        if (l->kind == SVC_LOG_FILE) {
                json_object_set_new(j, "keep", json_integer(l->keep));
                json_object_set_new(j, "rotations", json_integer((json_int_t)l->rotations));
                json_object_set_new(j, "error", l->failing ? json_string(strerror(l->error))
                                                           : json_null());
        }
        json_object_set_new(o, "log", j);
}

enum svc_log logger_kind(const struct svc_logger *l) {
        return l->kind;
}

const char *logger_path(const struct svc_logger *l) {
        return l->path;
}

unsigned logger_keep(const struct svc_logger *l) {
        return l->keep;
}
