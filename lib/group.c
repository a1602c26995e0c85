/* group.c — a child and all its descendants.
 *
 * Two kinds:
 *  - CGROUP: a cgroup v2 leaf of its own below the calling process's cgroup. The kernel keeps
 *    the membership: a descendant cannot leave by setsid() or double fork. cgroup.kill (5.14)
 *    kills the whole tree atomically; cgroup.events says when the last live task has gone.
 *  - PGROUP: a process group, with this process as child subreaper so that descendants that
 *    leave the process group are re-parented here and stay visible in /proc. Membership is
 *    reconstructed from /proc (see pgroup_snapshot() for the exact rule and its limits).
 *
 * Members are always reported as live processes: a zombie (state Z with no live thread left)
 * is not a member. Signals go through pidfds opened after the member list was read and checked
 * again after opening, so a pid recycled in between is never signalled.
 */
#include "internal.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif

/* Bounds. */
#define GROUP_HINT_MAX 48          /* characters of name_hint kept in the cgroup name */
#define GROUP_MKDIR_TRIES 16       /* names tried when a stale directory has our name */
#define GROUP_CG_DEPTH_MAX 32      /* nested cgroups walked below the leaf */
#define GROUP_MEMBERS_MAX (4u << 20) /* pid_max can be at most 4194304 */
#define GROUP_SIGNAL_PASSES 8      /* re-reads of the member list in one signal-all */
#define GROUP_KILL_PASSES 32       /* the same for the SIGKILL fallback without cgroup.kill */
#define GROUP_FREE_TRIES 8         /* rmdir attempts in tend_group_free() */
#define GROUP_FREE_WAIT_MS 50      /* wait for cgroup.events between two of them */
#define GROUP_LINE_MAX 16384       /* one line of mountinfo or /proc/PID/cgroup */
#define GROUP_CG_MOUNTS_MAX 8

struct empty_listener {
        group_empty_listener fn; /* NULL: removed during a dispatch, compacted after it */
        void *userdata;
};

/* Our own cgroup v2 path, shared by the process-group groups made while we were in it (a
 * supervisor makes thousands of them, all in the same cgroup). Under own_cg_lock. */
struct own_cg {
        unsigned refs;
        char path[];
};
static struct own_cg *own_cg_get(void);

struct tend_group {
        tend_loop *loop;
        enum tend_group_kind kind;
        /* The empty event: populated is what the event machinery saw last. It goes true when a
         * process is spawned into the group (or seen in it) and false, with the callbacks,
         * when the group is seen empty again. */
        bool populated;
        /* Callbacks may free the group: while they run, tend_group_free() tears everything
         * down but leaves the memory to the dispatcher, which releases it when they return. */
        bool dead;
        bool settle_queued; /* group_settle() waits for the end of the loop's round */
        int dispatching;
        /* Live process handles (tend_proc) spawned or adopted into the group: while one
         * lives the group cannot be empty, and its pidfd will say when it ends. */
        unsigned n_live;
        unsigned n_listeners, cap_listeners;
        struct empty_listener *listeners;
        tend_group_empty_cb empty_cb;
        void *empty_userdata;
        struct proc_ladder *ladder; /* a group-only stop ladder, owned by ladder.c */

        /* What only one kind needs (a supervisor holds thousands of groups): see kind. */
        union {
                /* CGROUP
                 * A supervisor holds thousands of groups, against an fd limit that may be no
                 * more than twice that: an idle cgroup group holds no fd. The directory is
                 * opened for a spawn (CLONE_INTO_CGROUP) and for each operation;
                 * cgroup.events is opened and watched only while it is the one way to learn
                 * of the empty event: the group is populated and no live handle of ours is
                 * in it (cgroup_need_watch). */
                struct {
                        char *path;   /* absolute directory path, e.g.
                                         /sys/fs/cgroup/unified/tend-x-12-1 (in names[]) */
                        char *rel;    /* the same as /proc/PID/cgroup writes it, e.g.
                                         /tend-x-12-1 (in names[], often path's end) */
                        char *parent_path; /* cgroup_setup() only: the directory it made the
                                              cgroup in (then the parent of path) */
                        int dir_fd;   /* the directory during a spawn, else -1 */
                        int events_fd; /* cgroup.events, watched for POLLPRI (-1: not now) */
                        tend_watch *watch;
                        tend_timer *recheck; /* made when needed: an empty event found outside
                                                the loop's dispatch is delivered from the loop
                                                (cgroup_need_watch) */
                        bool removed;   /* tend_group_remove_if_empty() removed the cgroup:
                                           empty for good, nothing to spawn into */
                        bool cg_killed; /* cgroup.kill was written: spawn by migration
                                           (group_spawn_migrates) */
                        uint32_t empty_round; /* the loop's round in which cgroup.events
                                                 last said "populated 0" (cg_known_empty) */
                };
                /* PGROUP */
                struct {
                        pid_t pgid;   /* the process group a child joins (0 until the first
                                         spawn) */
                        bool has_member; /* pg_scan's answer */
                        unsigned n_pgids, cap_pgids;
                        /* Members by process group: every process group a spawned child led
                         * or joined that still exists. Not only the latest: a service's main
                         * process leads a new one at each run, and what an earlier run left
                         * behind (a background job whose shell has died) is still in the
                         * earlier one. Pruned when a group has no process left, before its
                         * number can name an unrelated process group. */
                        pid_t *pgids;
                        struct pg_loop *pgl; /* the groups of its loop: one /proc walk per
                                                SIGCHLD */
                        struct own_cg *own; /* our cgroup v2 path once read (see
                                               pgroup_root_is_ours); NULL before */
                };
        };
        char names[]; /* CGROUP: path, then rel (unless it is the end of path), each
                         NUL-terminated */
};

/* ---- process-wide state, detected once ------------------------------------------------ */

struct cg_mount {
        char *root;  /* the mount's root inside the hierarchy ("/" usually) */
        char *point; /* where it is mounted */
};

static pthread_once_t cg_mounts_once = PTHREAD_ONCE_INIT;
static int cg_mounts_err; /* 0 or -errno: why no cgroup2 mount is usable */
static size_t cg_mounts_n;
static struct cg_mount cg_mounts[GROUP_CG_MOUNTS_MAX];

static int cg_kill_state;     /* 0 unknown, 1 cgroup.kill present, -1 absent; atomic */
static int subreaper_done;    /* atomic */
static int n_pgroup_groups;   /* live PGROUP groups in the process; atomic */
static int n_cgroup_groups;   /* live CGROUP groups in the process; atomic */
static unsigned long cg_name_counter; /* atomic */

/* ---- small helpers -------------------------------------------------------------------- */

static int sys_pidfd_open(pid_t pid) {
        /* pidfds are close-on-exec by definition. */
        long r = syscall(SYS_pidfd_open, pid, 0);
        return r < 0 ? -errno : (int)r;
}

static int sys_pidfd_send_signal(int pidfd, int signo) {
        return syscall(SYS_pidfd_send_signal, pidfd, signo, NULL, 0) < 0 ? -errno : 0;
}

static int open_proc(void) {
        int fd = open("/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        return fd < 0 ? -errno : fd;
}

/* Reads lines from an fd through a fixed buffer. Lines longer than the buffer are skipped
 * whole (mountinfo and /proc/PID/cgroup lines are bounded by PATH_MAX in practice, so a
 * skipped line cannot be one we need). */
struct line_reader {
        int fd;
        char *buf;
        size_t size, start, end;
        bool eof, skipping;
};

static int lr_init(struct line_reader *lr, int fd) {
        *lr = (struct line_reader){ .fd = fd, .size = GROUP_LINE_MAX };
        lr->buf = malloc(lr->size);
        return lr->buf ? 0 : -ENOMEM;
}

static void lr_done(struct line_reader *lr) {
        free(lr->buf);
        lr->buf = NULL;
}

/* 1 and *ret_line (NUL-terminated, without '\n'), 0 at the end, or -errno. */
static int lr_next(struct line_reader *lr, char **ret_line) {
        for (;;) {
                char *b = lr->buf + lr->start;
                char *nl = memchr(b, '\n', lr->end - lr->start);
                if (nl) {
                        *nl = '\0';
                        lr->start = (size_t)(nl + 1 - lr->buf);
                        if (lr->skipping) {
                                lr->skipping = false;
                                continue;
                        }
                        *ret_line = b;
                        return 1;
                }
                if (lr->eof) {
                        if (lr->end > lr->start && !lr->skipping) {
                                lr->buf[lr->end] = '\0';
                                *ret_line = lr->buf + lr->start;
                                lr->start = lr->end;
                                return 1;
                        }
                        return 0;
                }
                if (lr->start > 0) {
                        memmove(lr->buf, lr->buf + lr->start, lr->end - lr->start);
                        lr->end -= lr->start;
                        lr->start = 0;
                }
                if (lr->end == lr->size - 1) {
                        /* Over-long line: drop it up to its newline. */
                        lr->skipping = true;
                        lr->end = 0;
                }
                ssize_t n = io_read(lr->fd, lr->buf + lr->end, lr->size - 1 - lr->end);
                if (n < 0)
                        return (int)n;
                if (n == 0)
                        lr->eof = true;
                else
                        lr->end += (size_t)n;
        }
}

/* Undo mountinfo's octal escapes (\040 for space, \011, \012, \134) in place. */
static void unescape_octal(char *s) {
        char *w = s;
        for (const char *r = s; *r;) {
                if (r[0] == '\\' && r[1] >= '0' && r[1] <= '3' && r[2] >= '0' && r[2] <= '7' &&
                    r[3] >= '0' && r[3] <= '7') {
                        *w++ = (char)(((r[1] - '0') << 6) | ((r[2] - '0') << 3) | (r[3] - '0'));
                        r += 4;
                } else {
                        *w++ = *r++;
                }
        }
        *w = '\0';
}

/* Is path equal to prefix or below it (on a '/' boundary)? Returns the rest ("" or "/...")
 * or NULL. A prefix of "/" matches every absolute path. */
static const char *path_below(const char *path, const char *prefix) {
        if (strcmp(prefix, "/") == 0)
                return path[0] == '/' ? path : NULL;
        size_t n = strlen(prefix);
        if (strncmp(path, prefix, n) != 0)
                return NULL;
        if (path[n] != '\0' && path[n] != '/')
                return NULL;
        return path + n;
}

/* ---- cgroup2 discovery ---------------------------------------------------------------- */

static void cg_mounts_detect(void) {
        int fd = open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
                cg_mounts_err = -errno;
                return;
        }
        struct line_reader lr;
        int r = lr_init(&lr, fd);
        if (r < 0) {
                io_close(fd);
                cg_mounts_err = r;
                return;
        }
        char *line;
        while ((r = lr_next(&lr, &line)) > 0 && cg_mounts_n < GROUP_CG_MOUNTS_MAX) {
                /* "ID PARENT MAJ:MIN ROOT POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER".
                 * The optional fields are zero or more, so the filesystem type is found after
                 * the lone "-" separator, not at a fixed position. */
                char *field[6] = { 0 };
                char *save = NULL;
                char *tok = strtok_r(line, " ", &save);
                size_t i = 0;
                for (; tok && i < 6; i++, tok = strtok_r(NULL, " ", &save))
                        field[i] = tok;
                if (i < 6)
                        continue;
                while (tok && strcmp(tok, "-") != 0)
                        tok = strtok_r(NULL, " ", &save);
                if (!tok)
                        continue;
                char *fstype = strtok_r(NULL, " ", &save);
                if (!fstype || strcmp(fstype, "cgroup2") != 0)
                        continue;
                unescape_octal(field[3]);
                unescape_octal(field[4]);
                char *root = strdup(field[3]);
                char *point = strdup(field[4]);
                if (!root || !point) {
                        free(root);
                        free(point);
                        r = -ENOMEM;
                        break;
                }
                cg_mounts[cg_mounts_n++] = (struct cg_mount){ .root = root, .point = point };
        }
        lr_done(&lr);
        io_close(fd);
        if (r < 0 && cg_mounts_n == 0)
                cg_mounts_err = r;
        else if (cg_mounts_n == 0)
                cg_mounts_err = -ENOENT; /* no cgroup2 mounted: v1 only, or no cgroups */
}

/* The 0:: (cgroup v2) path of a process, from "<dirfd>/<file>" (/proc/self/cgroup or
 * PID/cgroup below an fd of /proc). malloc'd into *ret. -ENOENT when there is no 0:: line,
 * -ESRCH/-ENOENT when the process is gone. */
static int read_cgroup_path(int dirfd, const char *file, char **ret) {
        int fd = openat(dirfd, file, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        struct line_reader lr;
        int r = lr_init(&lr, fd);
        if (r < 0) {
                io_close(fd);
                return r;
        }
        char *line;
        bool found = false;
        while ((r = lr_next(&lr, &line)) > 0) {
                if (strncmp(line, "0::", 3) == 0) {
                        found = true;
                        break;
                }
        }
        if (found) {
                char *p = strdup(line + 3);
                r = p ? 0 : -ENOMEM;
                if (p)
                        *ret = p;
        } else if (r == 0) {
                r = -ENOENT;
        }
        lr_done(&lr);
        io_close(fd);
        return r;
}

/* The directory of the cgroup v2 path `cg` (as /proc/self/cgroup writes it), malloc'd. */
static int cg_dir_of(const char *cg, char **ret) {
        pthread_once(&cg_mounts_once, cg_mounts_detect);
        if (cg_mounts_err < 0)
                return cg_mounts_err;
        /* A mount shows the hierarchy from its root down. Prefer the one showing all of it;
         * else the one whose root is the deepest ancestor of our cgroup (a container that
         * bind-mounts only its own subtree). */
        const struct cg_mount *best = NULL;
        const char *rest = NULL;
        size_t best_len = 0;
        for (size_t i = 0; i < cg_mounts_n; i++) {
                const char *r = path_below(cg, cg_mounts[i].root);
                if (!r)
                        continue;
                size_t len = strcmp(cg_mounts[i].root, "/") == 0 ? SIZE_MAX
                                                                 : strlen(cg_mounts[i].root);
                if (!best || len > best_len) {
                        best = &cg_mounts[i];
                        rest = r;
                        best_len = len;
                }
        }
        if (!best)
                return -ENOENT; /* our cgroup is outside every visible cgroup2 mount */
        size_t n = strlen(best->point) + strlen(rest) + 1;
        if (n > PATH_MAX)
                return -ENAMETOOLONG;
        char *dir = malloc(n);
        if (!dir)
                return -ENOMEM;
        /* rest is "" or starts with '/'; a mount point of "/" would give "//x", still valid. */
        size_t plen = strlen(best->point);
        memcpy(dir, best->point, plen);
        memcpy(dir + plen, rest, strlen(rest) + 1);
        *ret = dir;
        return 0;
}

/* PIDFD_GET_INFO (Linux 6.13 uapi, absent from older headers; the first layout the kernel
 * accepts, as in proc.c). */
struct group_pidfd_info {
        uint64_t mask;
        uint64_t cgroupid;
        uint32_t pid, tgid, ppid, ruid, rgid, euid, egid, suid, sgid, fsuid, fsgid;
        int32_t exit_code;
};
#define GROUP_PIDFD_GET_INFO _IOWR(0xFF, 11, struct group_pidfd_info)
#define GROUP_PIDFD_INFO_CGROUPID (1ull << 2)
#define GROUP_CGROUP2_SUPER_MAGIC 0x63677270

/* cgroup_setup's way past /proc/self/mountinfo, whose generation costs a fresh process
 * 60-110 us here (more than the mkdir of the leaf, for every `tend run`), and, when we are in
 * the root of what the mount shows, past /proc/self/cgroup too (16-30 us per read here, with
 * eleven hierarchies to print). The cgroup2 mount is nearly always /sys/fs/cgroup (unified
 * layout) or /sys/fs/cgroup/unified (hybrid), and the inode number of a cgroup's directory is
 * the cgroup's id, which PIDFD_GET_INFO (Linux 6.13) reports for us. A candidate directory is
 * taken only when its inode is our cgroup's id (a mount that shows only a subtree, a
 * namespace, a move meanwhile: no match). */
struct cg_fast {
        uint64_t id;            /* our cgroup's id */
        const char *points[2];  /* candidate mount points that are cgroup2 mounts */
        size_t n_points;
};

/* 0 with *ret_dir set when our cgroup is the root of a candidate mount (then it is "/" as
 * /proc/self/cgroup would write it); -ENOENT otherwise, with f filled in for cg_dir_fast()
 * (f->n_points == 0: no fast way). */
static int cg_root_fast(struct cg_fast *f, char **ret_dir) {
        f->id = 0;
        f->n_points = 0;
        int pidfd = sys_pidfd_open(getpid());
        if (pidfd < 0)
                return -ENOENT;
        struct group_pidfd_info info;
        memset(&info, 0, sizeof info);
        info.mask = GROUP_PIDFD_INFO_CGROUPID;
        int r = ioctl(pidfd, GROUP_PIDFD_GET_INFO, &info);
        io_close(pidfd);
        if (r < 0 || !(info.mask & GROUP_PIDFD_INFO_CGROUPID))
                return -ENOENT;
        f->id = info.cgroupid;
        static const char *const points[] = { "/sys/fs/cgroup", "/sys/fs/cgroup/unified" };
        for (size_t i = 0; i < ARRAY_SIZE(points); i++) {
                struct statfs sf;
                if (statfs(points[i], &sf) < 0 || sf.f_type != GROUP_CGROUP2_SUPER_MAGIC)
                        continue;
                f->points[f->n_points++] = points[i];
                struct stat st;
                if (stat(points[i], &st) == 0 && (uint64_t)st.st_ino == f->id) {
                        char *dir = strdup(points[i]);
                        if (!dir)
                                return -ENOMEM;
                        *ret_dir = dir;
                        return 0;
                }
        }
        return -ENOENT;
}

/* Our cgroup `own` (as /proc/self/cgroup writes it, not "/") below a candidate mount of f. */
static int cg_dir_fast(const struct cg_fast *f, const char *own, char **ret) {
        for (size_t i = 0; i < f->n_points; i++) {
                size_t n = strlen(f->points[i]) + strlen(own) + 1;
                if (n > PATH_MAX)
                        return -ENOENT;
                char *dir = malloc(n);
                if (!dir)
                        return -ENOMEM;
                size_t pl = strlen(f->points[i]);
                memcpy(dir, f->points[i], pl);
                memcpy(dir + pl, own, strlen(own) + 1);
                struct stat st;
                if (stat(dir, &st) == 0 && S_ISDIR(st.st_mode) && (uint64_t)st.st_ino == f->id) {
                        *ret = dir;
                        return 0;
                }
                free(dir);
        }
        return -ENOENT;
}

static void name_sanitize(const char *hint, char *out, size_t size) {
        size_t w = 0;
        for (const char *c = hint ? hint : ""; *c && w + 1 < size; c++) {
                bool ok = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
                          (*c >= '0' && *c <= '9') || *c == '_' || *c == '.' || *c == '-';
                out[w++] = ok ? *c : '_';
        }
        out[w] = '\0';
}

/* The cgroup's directory: the group's own fd while it has one (during a spawn), otherwise a
 * fresh one, which the caller closes (*to_close; -1 when there is none to close). */
static int cg_dir(const tend_group *g, int *to_close) {
        *to_close = -1;
        if (g->dir_fd >= 0)
                return g->dir_fd;
        int fd = open(g->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        *to_close = fd;
        return fd;
}

/* DIR/NAME into buf (PATH_MAX): files of a cgroup by full path, one system call each where
 * opening the directory first would take three. false when it does not fit. */
static bool cg_file(char *buf, const char *dir, const char *name) {
        return (size_t)snprintf(buf, PATH_MAX, "%s/%s", dir, name) < PATH_MAX;
}

/* cgroup.events opened for reading: through the directory's fd while one is open, else by
 * its full path. */
static int cg_open_events(const tend_group *g) {
        int fd;
        if (g->dir_fd >= 0) {
                fd = openat(g->dir_fd, "cgroup.events", O_RDONLY | O_CLOEXEC);
        } else {
                char path[PATH_MAX];
                if (!cg_file(path, g->path, "cgroup.events"))
                        return -ENAMETOOLONG;
                fd = open(path, O_RDONLY | O_CLOEXEC);
        }
        return fd < 0 ? -errno : fd;
}

static bool cg_kill_available(const char *dir) {
        int s = __atomic_load_n(&cg_kill_state, __ATOMIC_RELAXED);
        if (s == 0) {
                char file[PATH_MAX];
                struct stat st;
                s = cg_file(file, dir, "cgroup.kill") && stat(file, &st) == 0 ? 1 : -1;
                __atomic_store_n(&cg_kill_state, s, __ATOMIC_RELAXED);
        }
        return s > 0;
}

/* ---- /proc/PID/stat ------------------------------------------------------------------- */

struct pstat {
        pid_t ppid, pgid;
        char state;
        long nthreads;
        unsigned long long start; /* clock ticks after boot */
};

/* -ENOENT/-ESRCH when the process has gone: normal, the caller skips it. */
static int pstat_read(int procfd, pid_t pid, struct pstat *ret) {
        char path[32];
        char buf[4096]; /* 52 numeric fields and a 64-byte comm: well below this */
        snprintf(path, sizeof path, "%d/stat", (int)pid);
        ssize_t n = io_read_file_at(procfd, path, buf, sizeof buf);
        if (n < 0)
                return (int)n == -EFBIG ? -EIO : (int)n;
        /* comm is "(...)" and may itself hold spaces and ')': the fields resume after the
         * last ')'. */
        char *p = strrchr(buf, ')');
        if (!p || p[1] != ' ' || !p[2])
                return -EIO;
        p += 2;
        struct pstat s = { .state = *p++ };
        long long f[20];
        for (int i = 1; i < 20; i++) {
                char *end;
                f[i] = strtoll(p, &end, 10);
                if (end == p)
                        return -EIO;
                p = end;
        }
        /* Indexes after the state: 1 ppid, 2 pgrp, 17 num_threads, 19 starttime. */
        s.ppid = (pid_t)f[1];
        s.pgid = (pid_t)f[2];
        s.nthreads = (long)f[17];
        s.start = (unsigned long long)f[19];
        *ret = s;
        return 0;
}

/* A zombie whose threads have all exited is dead; a zombie thread-group leader whose other
 * threads still run shows state Z with num_threads >= 2 and is alive. */
static bool pstat_dead(const struct pstat *s) {
        return (s->state == 'Z' || s->state == 'X' || s->state == 'x') && s->nthreads <= 1;
}

/* ---- member vectors ------------------------------------------------------------------- */

struct member {
        pid_t pid;
        bool leaderless; /* main thread gone, other threads live (see tend_group_kill) */
        unsigned long long start;
};

struct mvec {
        struct member *v;
        size_t n, cap;
};

static int mvec_push(struct mvec *m, pid_t pid, const struct pstat *s) {
        if (m->n == m->cap) {
                if (m->cap >= GROUP_MEMBERS_MAX)
                        return -E2BIG;
                size_t ncap = m->cap ? m->cap * 2 : 64;
                struct member *nv = realloc(m->v, ncap * sizeof *nv);
                if (!nv)
                        return -ENOMEM;
                m->v = nv;
                m->cap = ncap;
        }
        m->v[m->n++] = (struct member){
                .pid = pid,
                .leaderless = s && s->state == 'Z' && s->nthreads > 1,
                .start = s ? s->start : 0,
        };
        return 0;
}

static void mvec_free(struct mvec *m) {
        free(m->v);
        *m = (struct mvec){ 0 };
}

static int member_cmp(const void *a, const void *b) {
        const struct member *x = a, *y = b;
        if (x->pid != y->pid)
                return x->pid < y->pid ? -1 : 1;
        if (x->start != y->start)
                return x->start < y->start ? -1 : 1;
        return 0;
}

static void mvec_sort_unique(struct mvec *m) {
        if (m->n < 2)
                return;
        qsort(m->v, m->n, sizeof *m->v, member_cmp);
        size_t w = 1;
        for (size_t i = 1; i < m->n; i++)
                if (member_cmp(&m->v[i], &m->v[w - 1]) != 0)
                        m->v[w++] = m->v[i];
        m->n = w;
}

/* Is x among the first n entries (which must be sorted)? */
static bool mvec_contains(const struct mvec *m, size_t n, const struct member *x) {
        return n && bsearch(x, m->v, n, sizeof *m->v, member_cmp);
}

/* ---- CGROUP members ------------------------------------------------------------------- */

/* Parse cgroup.procs as a stream of decimal pids: it can be long, and its size is not known
 * in advance (kernfs reports 0). */
static int cg_read_procs(int dir_fd, struct mvec *out) {
        int fd = openat(dir_fd, "cgroup.procs", O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        char buf[4096];
        long cur = 0;
        bool in_num = false;
        int r = 0;
        for (;;) {
                ssize_t n = io_read(fd, buf, sizeof buf);
                if (n < 0) {
                        r = (int)n;
                        break;
                }
                for (ssize_t i = 0; i < n && r == 0; i++) {
                        char c = buf[i];
                        if (c >= '0' && c <= '9') {
                                if (cur > INT_MAX / 10)
                                        r = -EIO;
                                cur = cur * 10 + (c - '0');
                                in_num = true;
                        } else if (in_num) {
                                r = mvec_push(out, (pid_t)cur, NULL);
                                cur = 0;
                                in_num = false;
                        }
                }
                if (r < 0)
                        break;
                if (n == 0) {
                        if (in_num)
                                r = mvec_push(out, (pid_t)cur, NULL);
                        break;
                }
        }
        io_close(fd);
        return r;
}

/* cgroup.procs of dir_fd and of every cgroup below it (a delegated member may make its own
 * sub-cgroups; processes must be inside leaves there). */
static int cg_collect(int dir_fd, int depth, struct mvec *out) {
        int r = cg_read_procs(dir_fd, out);
        if (r == -ENOENT || r == -ENODEV)
                return 0; /* a sub-cgroup removed while we walk */
        if (r < 0)
                return r;
        if (depth >= GROUP_CG_DEPTH_MAX)
                return 0;
        int fd = openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return errno == ENOENT || errno == ENODEV ? 0 : -errno;
        DIR *d = fdopendir(fd);
        if (!d) {
                r = -errno;
                io_close(fd);
                return r;
        }
        struct dirent *de;
        while (r == 0 && (de = readdir(d))) {
                if (de->d_type != DT_DIR || strcmp(de->d_name, ".") == 0 ||
                    strcmp(de->d_name, "..") == 0)
                        continue;
                int sub = openat(dir_fd, de->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                if (sub < 0)
                        continue; /* removed meanwhile */
                r = cg_collect(sub, depth + 1, out);
                io_close(sub);
        }
        closedir(d);
        return r;
}

static int events_fd_read(int fd);

static unsigned long events_reads; /* of cgroup.events (for the tests); atomic */

/* Read cgroup.events of g through fd, and remember an empty answer for the rest of the
 * loop's round (cg_known_empty). */
static int cg_events_read(tend_group *g, int fd) {
        __atomic_add_fetch(&events_reads, 1, __ATOMIC_RELAXED);
        int p = events_fd_read(fd);
        if (p == 0)
                g->empty_round = loop_round(g->loop);
        return p;
}

/* Seen empty earlier in this round of the loop, with nothing of ours spawned into it since:
 * still empty, without a read. Only our spawns and adoptions (group_cgroup_fd and
 * group_proc_added forget the answer) can put a process into an empty cgroup of ours; one
 * moved in from outside meanwhile is as if moved just after that read. A supervised
 * service's restart asks three times in one round (its stop, its cleanup, the group's look
 * after the round); the first answer serves all three. */
static bool cg_known_empty(const tend_group *g) {
        uint32_t round = loop_round(g->loop);
        return round != 0 && g->empty_round == round;
}

unsigned long group_events_reads(void) {
        return __atomic_load_n(&events_reads, __ATOMIC_RELAXED);
}

/* Is the cgroup tree surely empty? cgroup.events says "populated 0" once no live task is
 * left anywhere below it. Read through an fd of its own: reading the watched one would
 * consume the change notification that the empty event waits for. 1 empty, 0 not known to
 * be, -ENOENT the cgroup is gone (which the kernel allows only once it is empty). */
static int cg_surely_empty(tend_group *g) {
        if (cg_known_empty(g))
                return 1;
        int fd = cg_open_events(g);
        if (fd < 0)
                return fd == -ENOENT ? fd : 0;
        int r = cg_events_read(g, fd);
        io_close(fd);
        return r == 0;
}

/* Live members, sorted by pid, each with its start time. */
static int cgroup_snapshot(tend_group *g, struct mvec *out) {
        if (g->removed)
                return 0;
        /* The common end of a run: nothing left. Four system calls instead of opening the
         * directory, reading cgroup.procs and listing the directory for sub-cgroups. */
        int empty = cg_surely_empty(g);
        if (empty != 0)
                return 0; /* empty, or removed under us */
        int to_close;
        int dfd = cg_dir(g, &to_close);
        if (dfd == -ENOENT)
                return 0;
        if (dfd < 0)
                return dfd;
        struct mvec raw = { 0 };
        int r = cg_collect(dfd, 0, &raw);
        io_close(to_close);
        if (r < 0)
                goto out;
        mvec_sort_unique(&raw); /* cgroup.procs may list a pid twice after a move back */
        int procfd = open_proc();
        if (procfd < 0) {
                r = procfd;
                goto out;
        }
        for (size_t i = 0; i < raw.n && r == 0; i++) {
                struct pstat s;
                if (pstat_read(procfd, raw.v[i].pid, &s) < 0 || pstat_dead(&s))
                        continue; /* gone or a zombie: not a member */
                r = mvec_push(out, raw.v[i].pid, &s);
        }
        io_close(procfd);
out:
        mvec_free(&raw);
        return r;
}

/* ---- PGROUP members ------------------------------------------------------------------- */

struct pent {
        pid_t pid;
        struct pstat s;
        signed char mark; /* in the group through ancestry: -1 unknown, 0 no, 1 yes */
        tend_group *owner; /* pg_scan: the group of its topmost ancestor below us, if any */
};

static int pent_cmp(const void *a, const void *b) {
        const struct pent *x = a, *y = b;
        return x->pid < y->pid ? -1 : x->pid > y->pid;
}

static unsigned long proc_walks; /* walks of all of /proc (for the tests); atomic */

/* Every process of /proc but this one, sorted by pid, into *ret (malloc'd; NULL when there
 * is none). Returns the count or -errno. */
static ssize_t proc_walk(int procfd, pid_t self, struct pent **ret) {
        __atomic_add_fetch(&proc_walks, 1, __ATOMIC_RELAXED);
        *ret = NULL;
        int dfd = openat(procfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
        if (!d) {
                int r = -errno;
                io_close(dfd);
                return r;
        }
        struct pent *a = NULL;
        size_t n = 0, cap = 0;
        int r = 0;
        struct dirent *de;
        while ((de = readdir(d))) {
                char *end;
                long pid = strtol(de->d_name, &end, 10);
                if (*end || pid <= 0 || pid > INT_MAX || pid == self || pid == group_walk_hides)
                        continue;
                struct pstat s;
                if (pstat_read(procfd, (pid_t)pid, &s) < 0)
                        continue; /* exited since readdir */
                if (n == cap) {
                        if (cap >= GROUP_MEMBERS_MAX) {
                                r = -E2BIG;
                                break;
                        }
                        size_t ncap = cap ? cap * 2 : 256;
                        struct pent *na = realloc(a, ncap * sizeof *na);
                        if (!na) {
                                r = -ENOMEM;
                                break;
                        }
                        a = na;
                        cap = ncap;
                }
                a[n++] = (struct pent){ .pid = (pid_t)pid, .s = s, .mark = -1 };
        }
        closedir(d);
        if (r < 0) {
                free(a);
                return r;
        }
        if (n) /* a is NULL when /proc held nobody else (PID 1 alone in its namespace) */
                qsort(a, n, sizeof *a, pent_cmp);
        *ret = a;
        return (ssize_t)n;
}

#define GROUP_PGIDS_MAX 64 /* process groups remembered per group (the oldest goes first) */

/* Forget the process groups that have no process left (zombies count: their number is not
 * free yet). */
static void pgids_prune(tend_group *g) {
        size_t w = 0;
        for (size_t i = 0; i < g->n_pgids; i++)
                if (!(kill(-g->pgids[i], 0) < 0 && errno == ESRCH))
                        g->pgids[w++] = g->pgids[i];
        g->n_pgids = w;
}

static bool pgids_has(const tend_group *g, pid_t pgid) {
        for (size_t i = 0; i < g->n_pgids; i++)
                if (g->pgids[i] == pgid)
                        return true;
        return false;
}

static void pgids_add(tend_group *g, pid_t pgid) {
        if (pgid <= 0 || pgids_has(g, pgid))
                return;
        pgids_prune(g);
        if (g->n_pgids == GROUP_PGIDS_MAX) {
                memmove(g->pgids, g->pgids + 1, (g->n_pgids - 1) * sizeof *g->pgids);
                g->n_pgids--;
        }
        if (g->n_pgids == g->cap_pgids) {
                size_t cap = g->cap_pgids ? g->cap_pgids * 2 : 2;
                pid_t *nv = realloc(g->pgids, cap * sizeof *nv);
                if (!nv)
                        return; /* its members are still found through their ancestry */
                g->pgids = nv;
                g->cap_pgids = cap;
        }
        g->pgids[g->n_pgids++] = pgid;
}

/* A direct child of this process: does the subtree below it belong to g? */
static bool pgroup_root_is_ours(tend_group *g, int procfd, pid_t pid) {
        tend_proc *p = loop_proc_find(g->loop, pid);
        if (p)
                return tend_proc_group(p) == g;
        /* Not spawned through the loop: an orphan re-parented to us by the subreaper, or a
         * child the application made itself — they look the same. Only a sole process-group
         * group that has had a process claims them. */
        if (g->pgid == 0 || __atomic_load_n(&n_pgroup_groups, __ATOMIC_RELAXED) != 1)
                return false;
        /* Orphans of CGROUP groups in the same process are still inside their cgroups; ours
         * stay in the cgroup we are in. Our path is read only now, when the answer needs it:
         * a process without cgroup groups (`tend run --no-cgroup`, a supervisor on a
         * machine without cgroup v2) never reads /proc/self/cgroup (16-30 us, the first read
         * in a fresh process). Should we have been moved since the spawn, our orphans are
         * not claimed: they are still reaped, only not counted as the group's. */
        if (__atomic_load_n(&n_cgroup_groups, __ATOMIC_RELAXED) > 0 &&
            (g->own || (g->own = own_cg_get()))) {
                char file[32], *cg = NULL;
                snprintf(file, sizeof file, "%d/cgroup", (int)pid);
                if (read_cgroup_path(procfd, file, &cg) < 0)
                        return false;
                bool same = strcmp(cg, g->own->path) == 0;
                free(cg);
                return same;
        }
        return true;
}

/* The common end of a run — the command exited and left nothing behind — known without
 * reading /proc (one /proc/PID/stat per process on the machine): this process has no child
 * at all, not even a zombie, and nobody is in the group's process group. Every live
 * descendant's topmost live ancestor below us would be a child of ours (we are a child
 * subreaper: orphans come to us), so without children there are no descendants; and a
 * member by process group alone would be in one of its process groups, which would still
 * exist (pgids_prune). */
static bool pgroup_surely_empty(const tend_group *g) {
        siginfo_t si;
        memset(&si, 0, sizeof si);
        if (waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT | __WALL) == 0 || errno != ECHILD)
                return false;
        return g->n_pgids == 0; /* pruned by the caller */
}

/* Members of a process-group group:
 *   every live process in one of the group's process groups (g->pgids), and
 *   every live descendant of a process spawned into the group (also after it setsid()s), and,
 *   when this is the only process-group group of the process, every live descendant of a
 *   child of this process that was not spawned through the loop — with the subreaper, that is
 *   where double-forked, setsid()ed descendants end up once their parent has died.
 * Limits: with several process-group groups, a descendant that left the process group and
 * whose parent died cannot be attributed and is not a member; with one, children the
 * application forked itself are counted as the group's. The whole of /proc is read. */
static int pgroup_snapshot(tend_group *g, struct mvec *out) {
        pgids_prune(g);
        if (pgroup_surely_empty(g))
                return 0;
        int procfd = open_proc();
        if (procfd < 0)
                return procfd;
        int r = 0;
        struct pent *a = NULL;
        size_t n = 0, *chain = NULL;
        pid_t self = getpid();
        ssize_t got = proc_walk(procfd, self, &a);
        if (got < 0) {
                r = (int)got;
                goto out;
        }
        n = (size_t)got;
        chain = malloc((n ? n : 1) * sizeof *chain);
        if (!chain) {
                r = -ENOMEM;
                goto out;
        }
        for (size_t i = 0; i < n && r == 0; i++) {
                /* Walk up the parents until one is classified, a child of ours, or outside
                 * the snapshot; the answer then holds for the whole chain. The walk is
                 * bounded by n since a snapshot taken while pids change could, in theory,
                 * hold a loop. */
                size_t len = 0, cur = i;
                signed char verdict = 0;
                for (;;) {
                        struct pent *e = &a[cur];
                        if (e->mark >= 0) {
                                verdict = e->mark;
                                break;
                        }
                        if (len == n)
                                break;
                        chain[len++] = cur;
                        if (e->s.ppid == self) {
                                verdict = pgroup_root_is_ours(g, procfd, e->pid) ? 1 : 0;
                                break;
                        }
                        struct pent key = { .pid = e->s.ppid };
                        struct pent *parent =
                                e->s.ppid > 0 ? bsearch(&key, a, n, sizeof *a, pent_cmp) : NULL;
                        if (!parent)
                                break;
                        cur = (size_t)(parent - a);
                }
                for (size_t k = 0; k < len; k++)
                        a[chain[k]].mark = verdict;
                const struct pent *e = &a[i];
                if (pstat_dead(&e->s))
                        continue;
                if (e->mark == 1 || pgids_has(g, e->s.pgid))
                        r = mvec_push(out, e->pid, &e->s);
        }
out:
        free(chain);
        free(a);
        io_close(procfd);
        return r;
}

/* The same members as pgroup_snapshot() without reading all of /proc: from the children
 * lists of the kernel (/proc/PID/task/TID/children, CONFIG_PROC_CHILDREN), down from this
 * process's children. A supervisor of thousands of services in process groups signals,
 * stops and describes one service at a time, and a walk of /proc for each (one stat file
 * per process of the machine) made that O(services x processes): stopping 10,000 services
 * took over an hour. This reads this process's children list, the stat file of the
 * children not spawned through the loop (orphans, few), and the tree of the group's own
 * roots. A process of the group's process groups is found below its roots or as an orphan
 * (re-parented to us): a process group lies within one session, and a service's session is
 * its own (spawned with setsid) — so nothing of the /proc walk's rule is lost there.
 * Returns -ENOENT when the kernel has no children lists (the caller walks /proc). */

static int pid_push(pid_t **v, size_t *n, size_t *cap, pid_t pid) {
        if (*n == *cap) {
                if (*cap >= GROUP_MEMBERS_MAX)
                        return -E2BIG;
                size_t nc = *cap ? *cap * 2 : 64;
                pid_t *nv = realloc(*v, nc * sizeof *nv);
                if (!nv)
                        return -ENOMEM;
                *v = nv;
                *cap = nc;
        }
        (*v)[(*n)++] = pid;
        return 0;
}

/* Append the children of pid (the children files of all its threads) to *v. 0 when pid
 * has gone; -ENOENT when the kernel has no children files. */
static int children_of(int procfd, pid_t pid, pid_t **v, size_t *n, size_t *cap) {
        char dir[48];
        snprintf(dir, sizeof dir, "%d/task", (int)pid);
        int tfd = openat(procfd, dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (tfd < 0)
                return errno == ENOENT || errno == ESRCH ? 0 : -errno;
        DIR *d = fdopendir(tfd);
        if (!d) {
                int r = -errno;
                io_close(tfd);
                return r;
        }
        int r = 0;
        bool any_thread = false, any_file = false;
        struct dirent *de;
        while (r == 0 && (de = readdir(d))) {
                if (de->d_name[0] == '.')
                        continue;
                any_thread = true;
                char file[sizeof de->d_name + 16];
                snprintf(file, sizeof file, "%s/children", de->d_name);
                int fd = openat(tfd, file, O_RDONLY | O_CLOEXEC);
                if (fd < 0)
                        continue; /* no such file, or the thread has gone */
                any_file = true;
                char buf[4096];
                long cur = 0;
                bool in_num = false;
                for (;;) {
                        ssize_t got = io_read(fd, buf, sizeof buf);
                        if (got < 0) {
                                if (got != -ESRCH)
                                        r = (int)got;
                                break;
                        }
                        for (ssize_t i = 0; i < got && r == 0; i++) {
                                if (buf[i] >= '0' && buf[i] <= '9') {
                                        if (cur > INT_MAX / 10)
                                                r = -EIO;
                                        cur = cur * 10 + (buf[i] - '0');
                                        in_num = true;
                                } else if (in_num) {
                                        r = pid_push(v, n, cap, (pid_t)cur);
                                        cur = 0;
                                        in_num = false;
                                }
                        }
                        if (r < 0)
                                break;
                        if (got == 0) {
                                if (in_num)
                                        r = pid_push(v, n, cap, (pid_t)cur);
                                break;
                        }
                }
                io_close(fd);
        }
        closedir(d);
        if (r == 0 && any_thread && !any_file)
                return -ENOENT;
        return r;
}

bool group_force_proc_walk; /* tests: take the /proc walk as if there were no children lists */
pid_t group_walk_hides; /* tests: a process the walks of /proc miss (as seen once; pg_loop_hook) */

static int pgroup_tree_snapshot(tend_group *g, int procfd, struct mvec *out) {
        if (group_force_proc_walk)
                return -ENOENT;
        pid_t *q = NULL; /* pids to look at: this process's children first, then roots' */
        size_t n = 0, cap = 0;
        pid_t self = getpid();
        int r = children_of(procfd, self, &q, &n, &cap);
        size_t n_direct = n;
        /* The direct children: ours (spawned into g), an orphan in one of g's process
         * groups, or claimed by the sole process-group group; the others are dropped
         * (another group's tree, or the application's own). An orphan that is not ours
         * may still have descendants in g's process groups: they are looked at, and kept
         * only by their process group. */
        size_t w = 0;
        for (size_t i = 0; i < n_direct && r == 0; i++) {
                pid_t c = q[i];
                tend_proc *p = loop_proc_find(g->loop, c);
                if (p) {
                        if (tend_proc_group(p) == g)
                                q[w++] = c;
                        continue;
                }
                q[w++] = -c; /* unregistered: decided below from its stat */
        }
        n = n_direct = w;
        /* Breadth first: q[k] > 0 is ours with its whole subtree; q[k] < 0 is a process that
         * is ours only by its process group (and so are its descendants, by theirs). */
        for (size_t k = 0; k < n && r == 0; k++) {
                bool sure = q[k] > 0;
                pid_t pid = sure ? q[k] : -q[k];
                struct pstat s;
                if (pstat_read(procfd, pid, &s) < 0)
                        continue; /* gone */
                if (!sure && k < n_direct && s.ppid == self &&
                    (pgids_has(g, s.pgid) || pgroup_root_is_ours(g, procfd, pid)))
                        sure = true; /* an orphan of ours: the whole subtree */
                bool member = sure || pgids_has(g, s.pgid);
                if (member && !pstat_dead(&s))
                        r = mvec_push(out, pid, &s);
                if (r < 0)
                        break;
                size_t before = n;
                r = children_of(procfd, pid, &q, &n, &cap);
                if (r == -ENOENT)
                        r = 0; /* it exited meanwhile */
                for (size_t j = before; j < n && !sure; j++)
                        q[j] = -q[j];
        }
        free(q);
        return r;
}

/* Live members sorted by (pid, start). */
static int group_snapshot(tend_group *g, struct mvec *out) {
        int r;
        if (g->kind == TEND_GROUP_CGROUP) {
                r = cgroup_snapshot(g, out);
        } else {
                pgids_prune(g);
                if (pgroup_surely_empty(g))
                        return 0;
                int procfd = open_proc();
                r = procfd < 0 ? procfd : pgroup_tree_snapshot(g, procfd, out);
                io_close(procfd);
                if (r == -ENOENT) {
                        mvec_free(out);
                        r = pgroup_snapshot(g, out);
                }
        }
        if (r < 0) {
                mvec_free(out);
                return r;
        }
        mvec_sort_unique(out);
        return 0;
}

/* ---- signalling one member safely ----------------------------------------------------- */

/* Signal m through a pidfd. Between reading the member list and pidfd_open() the process may
 * have died and its pid been given to an unrelated process; so after opening, check that the
 * pidfd's process is still the member: in the cgroup (CGROUP), or the same start time and
 * alive (PGROUP). While the pidfd's process lives /proc/PID is that process; if it died after
 * the check, pidfd_send_signal() cannot reach anyone else. Returns 1 signalled, 0 not a
 * member any more, or -errno (-EPERM). */
static int signal_member(tend_group *g, int procfd, const struct member *m, int signo) {
        int fd = sys_pidfd_open(m->pid);
        if (fd < 0)
                return fd == -ESRCH ? 0 : fd;
        int r;
        if (g->kind == TEND_GROUP_CGROUP) {
                char file[32], *cg = NULL;
                snprintf(file, sizeof file, "%d/cgroup", (int)m->pid);
                r = read_cgroup_path(procfd, file, &cg);
                if (r == 0) {
                        r = path_below(cg, g->rel) ? 1 : 0;
                        free(cg);
                } else if (r == -ENOENT || r == -ESRCH) {
                        r = 0;
                }
        } else {
                struct pstat s;
                r = pstat_read(procfd, m->pid, &s);
                if (r == 0)
                        r = s.start == m->start && !pstat_dead(&s) ? 1 : 0;
                else if (r == -ENOENT || r == -ESRCH)
                        r = 0;
        }
        if (r == 1) {
                r = sys_pidfd_send_signal(fd, signo);
                if (r == 0)
                        r = 1;
                else if (r == -ESRCH)
                        r = 0;
        }
        io_close(fd);
        return r;
}

/* Signal every member but `skip` (0: none), re-reading the list until a pass finds nobody new
 * (members fork while we walk), at most `passes` times. A process is signalled at most once
 * per call. */
static int group_signal_passes(tend_group *g, int signo, int passes, pid_t skip) {
        int procfd = open_proc();
        if (procfd < 0)
                return procfd;
        struct mvec done = { 0 };
        int count = 0, err = 0, r = 0;
        for (int pass = 0; pass < passes; pass++) {
                struct mvec cur = { 0 };
                r = group_snapshot(g, &cur);
                if (r < 0)
                        break;
                /* done[0..before) is sorted: what earlier passes signalled. This pass appends
                 * to it unsorted, which is fine as cur holds each (pid, start) once. */
                size_t before = done.n;
                for (size_t i = 0; i < cur.n; i++) {
                        if (mvec_contains(&done, before, &cur.v[i]) || cur.v[i].pid == skip)
                                continue;
                        int s = signal_member(g, procfd, &cur.v[i], signo);
                        if (s > 0)
                                count++;
                        else if (s < 0 && !err)
                                err = s;
                        r = mvec_push(&done, cur.v[i].pid, NULL);
                        if (r == 0)
                                done.v[done.n - 1] = cur.v[i];
                        if (r < 0)
                                break;
                }
                mvec_free(&cur);
                if (r < 0 || done.n == before)
                        break;
                mvec_sort_unique(&done);
        }
        mvec_free(&done);
        io_close(procfd);
        if (r < 0 && count == 0)
                return r;
        if (count == 0 && err)
                return err;
        return count;
}

/* ---- the empty event ------------------------------------------------------------------ */

/* 1 populated, 0 empty, or -errno, from cgroup.events content. */
static int parse_populated(const char *text) {
        for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
                if (strncmp(p, "populated ", 10) == 0)
                        return p[10] == '1' ? 1 : 0;
        }
        return -EIO;
}

/* Read the watched cgroup.events fd again from offset 0. Reading it is also what re-arms the
 * notification: kernfs reports POLLPRI|POLLERR from the moment the file changes until this
 * open file reads it again. */
static int events_fd_read(int fd) {
        char buf[256];
        size_t used = 0;
        /* From offset 0, which is what re-arms the notification. kernfs makes the text in one
         * go and hands it over in one call when it fits (21 bytes on 6.18): one pread, read
         * on only while the populated line is not complete. */
        for (;;) {
                ssize_t n = io_pread(fd, buf + used, sizeof buf - 1 - used, (off_t)used);
                if (n < 0)
                        return (int)n;
                used += (size_t)n;
                buf[used] = '\0';
                const char *line = strstr(buf, "populated ");
                if (n == 0 || used == sizeof buf - 1 || (line && strchr(line, '\n')))
                        break;
        }
        return parse_populated(buf);
}

static void group_release(tend_group *g);

/* The end of a dispatch that holds g (g->dispatching was raised): release a group freed
 * meanwhile, or compact the listeners removed meanwhile. The caller must not touch g
 * afterwards. */
static void group_unhold(tend_group *g) {
        if (--g->dispatching > 0)
                return;
        if (g->dead) {
                group_release(g);
                return;
        }
        size_t w = 0;
        for (size_t i = 0; i < g->n_listeners; i++)
                if (g->listeners[i].fn)
                        g->listeners[w++] = g->listeners[i];
        g->n_listeners = w;
}

/* populated -> empty: the listeners (stop ladders), then the public callback. Any of them may
 * free the group; the memory stays until they have all returned. Listeners added meanwhile
 * wait for the next transition. The caller must not touch g afterwards. */
static void group_fire_empty(tend_group *g) {
        g->dispatching++;
        size_t n = g->n_listeners;
        for (size_t i = 0; i < n && !g->dead; i++) {
                struct empty_listener l = g->listeners[i]; /* the array may grow meanwhile */
                if (l.fn)
                        l.fn(g, l.userdata);
        }
        if (!g->dead && g->empty_cb)
                g->empty_cb(g, g->empty_userdata);
        group_unhold(g);
}

/* ---- the empty event of cgroup groups ----
 *
 * While a live process handle of ours is in the group (n_live), the group cannot be empty,
 * and that handle's pidfd tells when it ends. So cgroup.events is needed only from the end of
 * the last of them until the group is seen empty: a supervised service that runs holds its
 * pidfd alone. The end of a handle (reaped, or freed while it runs) and the end of a spawn
 * that left no handle call cgroup_need_watch(), which opens cgroup.events and reads it, and
 * only if it is still populated watches it for POLLPRI (kernfs reports any change after that
 * read, so no transition falls between the two). The watch is closed again when the group is
 * seen empty or a new handle is spawned in. A member that moves itself out of the cgroup
 * while our handle still lives delays the event to that handle's end. */

#define GROUP_WATCH_RETRY_USEC 1000000 /* cgroup.events could not be opened (no fd left) */

static void cgroup_unwatch(tend_group *g) {
        g->watch = tend_watch_free(g->watch);
        g->events_fd = io_close(g->events_fd);
        if (g->recheck)
                tend_timer_stop(g->recheck);
}

/* Seen empty: no fd is needed any more, then the callbacks. The caller must not touch g
 * afterwards. */
static void cgroup_seen_empty(tend_group *g) {
        cgroup_unwatch(g);
        if (!g->populated)
                return;
        g->populated = false;
        group_fire_empty(g); /* last: it may free g */
}

static void cgroup_events_cb(tend_watch *w, int fd, uint32_t revents, void *userdata) {
        tend_group *g = userdata;
        (void)w;
        (void)revents; /* POLLPRI|POLLERR both only mean "changed": read and see */
        /* The read re-arms the notification. An error means the cgroup was removed under us
         * (only possible once empty) or the file broke: kernfs would then report POLLERR
         * forever, and the watch is closed either way. */
        if (cg_events_read(g, fd) == 1)
                return;
        cgroup_seen_empty(g);
}

static void cgroup_need_watch(tend_group *g, bool may_fire);

static void cgroup_recheck_cb(tend_timer *t, void *userdata) {
        (void)t;
        cgroup_need_watch(userdata, true);
}

/* Deliver the check from the loop after delay_usec: the callers of cgroup_need_watch() that
 * are not the loop's dispatch (a handle freed, a spawn's end) must not run callbacks. */
static int cgroup_recheck_later(tend_group *g, uint64_t delay_usec) {
        if (!g->recheck) {
                int r = tend_timer_new(g->loop, cgroup_recheck_cb, g, &g->recheck);
                if (r < 0)
                        return r;
        }
        tend_timer_start(g->recheck, delay_usec);
        return 0;
}

/* The group may become (or be) empty with no handle of ours left in it to tell: watch
 * cgroup.events. With may_fire (the loop dispatches: a timer), an empty group's callbacks
 * run now, and the caller must not touch g afterwards; otherwise they run from the loop. */
static void cgroup_need_watch(tend_group *g, bool may_fire) {
        if (g->kind != TEND_GROUP_CGROUP || g->dead || !g->populated || g->n_live > 0)
                return;
        if (g->removed) {
                cgroup_seen_empty(g); /* tend_group_remove_if_empty(): empty for good */
                return;
        }
        int p;
        if (!g->watch && cg_known_empty(g)) {
                p = 0;
        } else if (!g->watch) {
                int fd = cg_open_events(g);
                if (fd == -ENOENT) {
                        cgroup_seen_empty(g); /* removed under us: only possible once empty */
                        return;
                }
                /* Read before watching: kernfs tells a poller about every change after the
                 * last read of its open file, so a change between this read and the watch's
                 * start is reported at once. And the usual end of a run — nothing left —
                 * then needs no watch at all. */
                p = fd < 0 ? fd : cg_events_read(g, fd);
                if (p == 1 && tend_watch_new(g->loop, fd, EPOLLPRI, cgroup_events_cb, g,
                                             &g->watch) == 0) {
                        g->events_fd = fd;
                        return; /* POLLPRI will say when it changes */
                }
                io_close(fd);
                if (fd < 0 || p == 1) {
                        /* No fd or memory left now; the event is owed, so look again (and
                         * if not even that can be arranged, the next handle's end will). */
                        (void)cgroup_recheck_later(g, GROUP_WATCH_RETRY_USEC);
                        return;
                }
        } else {
                p = cg_events_read(g, g->events_fd);
                if (p == 1)
                        return;
        }
        /* Empty already. Nobody to tell (tend run's usual end): no detour through the loop. */
        if (g->n_listeners == 0 && !g->empty_cb) {
                cgroup_unwatch(g);
                g->populated = false;
                return;
        }
        /* Out of memory for the timer: the event now rather than never. */
        if (may_fire || cgroup_recheck_later(g, 0) < 0)
                cgroup_seen_empty(g);
}

/* The empty event of process-group groups. Their membership is read from /proc, and a
 * SIGCHLD may have emptied any of them: with one walk of /proc per group, a supervisor of N
 * services would read N x (processes) files per SIGCHLD. So the groups of a loop share one
 * SIGCHLD hook (a pg_loop), which walks /proc once, finds for every process the group of
 * its topmost ancestor below us (the rule of pgroup_snapshot) and its process group, and so
 * learns in one pass which of the populated groups still have a member. */
struct pg_loop {
        tend_loop *loop;
        struct pg_loop *next;
        tend_group **groups;  /* its PGROUP groups */
        size_t n, cap;
        int dispatching;      /* the hook runs: freeing waits for it (dead) */
        bool dead;
};

static pthread_mutex_t pg_loops_lock = PTHREAD_MUTEX_INITIALIZER;
static struct pg_loop *pg_loops; /* under pg_loops_lock; each one used by its loop's thread */

static int ptr_cmp(const void *a, const void *b) {
        uintptr_t x = (uintptr_t)*(tend_group *const *)a, y = (uintptr_t)*(tend_group *const *)b;
        return x < y ? -1 : x > y;
}

struct pgid_owner {
        pid_t pgid;
        tend_group *g;
};

static int pgid_cmp(const void *a, const void *b) {
        pid_t x = ((const struct pgid_owner *)a)->pgid, y = ((const struct pgid_owner *)b)->pgid;
        return x < y ? -1 : x > y;
}

/* The group a direct child of ours (pid) and its descendants belong to, as
 * pgroup_root_is_ours() decides it, or NULL. */
static tend_group *pg_root_owner(struct pg_loop *pl, int procfd, pid_t pid) {
        tend_proc *p = loop_proc_find(pl->loop, pid);
        if (p)
                return tend_proc_group(p);
        if (pl->n != 1)
                return NULL;
        return pgroup_root_is_ours(pl->groups[0], procfd, pid) ? pl->groups[0] : NULL;
}

/* Set has_member on each of the n groups of v (sorted by address) that has a live member.
 * Returns 0 or -errno. */
static int pg_scan(struct pg_loop *pl, tend_group **v, size_t n) {
        for (size_t i = 0; i < n; i++)
                v[i]->has_member = false;
        /* Without any child, only a live process group can hold members (see
         * pgroup_surely_empty): no walk when none does. */
        siginfo_t si;
        memset(&si, 0, sizeof si);
        bool children = waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT | __WALL) == 0 ||
                        errno != ECHILD;
        bool walk = children;
        size_t n_owners = 0;
        for (size_t i = 0; i < n; i++) {
                pgids_prune(v[i]);
                n_owners += v[i]->n_pgids;
        }
        walk = walk || n_owners > 0;
        if (!walk)
                return 0;
        int procfd = open_proc();
        if (procfd < 0)
                return procfd;
        pid_t self = getpid();
        struct pent *a = NULL;
        struct pgid_owner *by_pgid = NULL;
        size_t *chain = NULL;
        ssize_t got = proc_walk(procfd, self, &a);
        int r = got < 0 ? (int)got : 0;
        size_t na = got > 0 ? (size_t)got : 0;
        if (r == 0) {
                by_pgid = malloc((n_owners ? n_owners : 1) * sizeof *by_pgid);
                chain = malloc((na ? na : 1) * sizeof *chain);
                if (!by_pgid || !chain)
                        r = -ENOMEM;
        }
        if (r < 0)
                goto out;
        size_t k_owner = 0;
        for (size_t i = 0; i < n; i++)
                for (size_t k = 0; k < v[i]->n_pgids; k++)
                        by_pgid[k_owner++] = (struct pgid_owner){ v[i]->pgids[k], v[i] };
        qsort(by_pgid, n_owners, sizeof *by_pgid, pgid_cmp);
        for (size_t i = 0; i < na; i++) {
                /* Up the parents to one already classified, a child of ours, or one outside
                 * the snapshot; the owner found holds for the whole chain (bounded by na: a
                 * snapshot taken while pids change could hold a loop). */
                size_t len = 0, cur = i;
                tend_group *owner = NULL;
                for (;;) {
                        struct pent *e = &a[cur];
                        if (e->mark >= 0) {
                                owner = e->owner;
                                break;
                        }
                        if (len == na)
                                break;
                        chain[len++] = cur;
                        if (e->s.ppid == self) {
                                owner = pg_root_owner(pl, procfd, e->pid);
                                break;
                        }
                        struct pent key = { .pid = e->s.ppid };
                        struct pent *parent =
                                e->s.ppid > 0 ? bsearch(&key, a, na, sizeof *a, pent_cmp) : NULL;
                        if (!parent)
                                break;
                        cur = (size_t)(parent - a);
                }
                for (size_t k = 0; k < len; k++) {
                        a[chain[k]].mark = 1;
                        a[chain[k]].owner = owner;
                }
                const struct pent *e = &a[i];
                if (pstat_dead(&e->s))
                        continue;
                tend_group **hit = owner ? bsearch(&owner, v, n, sizeof *v, ptr_cmp) : NULL;
                if (hit)
                        (*hit)->has_member = true;
                struct pgid_owner key_o = { .pgid = e->s.pgid };
                struct pgid_owner *o = e->s.pgid > 0 && n_owners
                                               ? bsearch(&key_o, by_pgid, n_owners,
                                                         sizeof *by_pgid, pgid_cmp)
                                               : NULL;
                if (o) {
                        /* Several groups may hold this pgid (a child joined another's);
                         * every one is told. */
                        struct pgid_owner *lo = o, *hi = o;
                        while (lo > by_pgid && lo[-1].pgid == e->s.pgid)
                                lo--;
                        while (hi + 1 < by_pgid + n_owners && hi[1].pgid == e->s.pgid)
                                hi++;
                        for (; lo <= hi; lo++)
                                lo->g->has_member = true;
                }
        }
out:
        free(chain);
        free(by_pgid);
        free(a);
        io_close(procfd);
        return r;
}

static void pg_loop_hook(void *userdata) {
        struct pg_loop *pl = userdata;
        /* A group that never had a process, or was seen empty, can only become populated
         * by a spawn into it, which sets populated: only populated ones are looked at. */
        size_t n = 0;
        for (size_t i = 0; i < pl->n; i++)
                n += pl->groups[i]->populated;
        if (n == 0)
                return;
        tend_group **v = malloc(n * sizeof *v);
        if (!v)
                return; /* try again at the next SIGCHLD */
        n = 0;
        for (size_t i = 0; i < pl->n; i++)
                if (pl->groups[i]->populated)
                        v[n++] = pl->groups[i];
        qsort(v, n, sizeof *v, ptr_cmp);
        /* The callbacks may free groups, this one's or others', and with the last of them
         * the pg_loop: hold them all until the end. */
        pl->dispatching++;
        for (size_t i = 0; i < n; i++)
                v[i]->dispatching++;
        if (pg_scan(pl, v, n) == 0) {
                for (size_t i = 0; i < n; i++) {
                        tend_group *g = v[i];
                        if (g->dead || !g->populated || g->has_member)
                                continue;
                        /* The walk of /proc has been seen to miss a live process: a service's
                         * leftover (ignoring SIGTERM, reparented to us, in the group's process
                         * group) absent from a walk taken as its shell exited, while the
                         * children lists read just after showed it. An empty event fired then
                         * is never fired again (populated is false), and a stop ladder waiting
                         * for it waits forever. So the end is confirmed by the snapshot
                         * tend_group_empty() itself uses (the kernel's children lists) before
                         * it is announced; a member found keeps the group populated, and its
                         * own end brings the next SIGCHLD. */
                        if (tend_group_members(g, NULL, 0) > 0)
                                continue;
                        g->populated = false;
                        group_fire_empty(g);
                }
        }
        for (size_t i = 0; i < n; i++)
                group_unhold(v[i]);
        free(v);
        if (--pl->dispatching == 0 && pl->dead)
                free(pl);
}

/* Join g to its loop's pg_loop (made, with its hook, for the first group). */
static int pg_loop_add(tend_group *g) {
        pthread_mutex_lock(&pg_loops_lock);
        struct pg_loop *pl = pg_loops;
        while (pl && pl->loop != g->loop)
                pl = pl->next;
        int r = 0;
        if (!pl) {
                pl = calloc(1, sizeof *pl);
                if (!pl) {
                        r = -ENOMEM;
                        goto out;
                }
                pl->loop = g->loop;
                r = loop_add_sigchld_hook(g->loop, pg_loop_hook, pl);
                if (r < 0) {
                        free(pl);
                        goto out;
                }
                pl->next = pg_loops;
                pg_loops = pl;
        }
        if (pl->n == pl->cap) {
                size_t cap = pl->cap ? pl->cap * 2 : 8;
                tend_group **nv = realloc(pl->groups, cap * sizeof *nv);
                if (!nv) {
                        r = -ENOMEM;
                        goto out_empty;
                }
                pl->groups = nv;
                pl->cap = cap;
        }
        pl->groups[pl->n++] = g;
        g->pgl = pl;
        goto out;
out_empty:
        if (pl->n == 0) {
                /* Made for g alone: undo. */
                struct pg_loop **pp = &pg_loops;
                while (*pp != pl)
                        pp = &(*pp)->next;
                *pp = pl->next;
                loop_remove_sigchld_hook(g->loop, pg_loop_hook, pl);
                free(pl->groups);
                free(pl);
        }
out:
        pthread_mutex_unlock(&pg_loops_lock);
        return r;
}

static void pg_loop_remove(tend_group *g) {
        struct pg_loop *pl = g->pgl;
        if (!pl)
                return;
        g->pgl = NULL;
        pthread_mutex_lock(&pg_loops_lock);
        for (size_t i = 0; i < pl->n; i++)
                if (pl->groups[i] == g) {
                        pl->groups[i] = pl->groups[--pl->n];
                        break;
                }
        if (pl->n == 0) {
                struct pg_loop **pp = &pg_loops;
                while (*pp != pl)
                        pp = &(*pp)->next;
                *pp = pl->next;
                loop_remove_sigchld_hook(pl->loop, pg_loop_hook, pl);
                free(pl->groups);
                pl->groups = NULL;
                pl->cap = 0;
                if (pl->dispatching)
                        pl->dead = true; /* the hook frees it when it returns */
                else
                        free(pl);
        }
        pthread_mutex_unlock(&pg_loops_lock);
}

unsigned long group_proc_walks(void) {
        return __atomic_load_n(&proc_walks, __ATOMIC_RELAXED);
}

/* ---- creation and removal ------------------------------------------------------------- */

static bool cgroup_error_is_fatal(int r) {
        return r == -ENOMEM;
}

static int cgroup_setup(tend_group *g, const char *name_hint) {
        char *own = NULL;
        struct cg_fast fast;
        int r = cg_root_fast(&fast, &g->parent_path);
        if (r == 0) {
                own = strdup("/");
                r = own ? 0 : -ENOMEM;
        } else if (r == -ENOENT) {
                r = read_cgroup_path(AT_FDCWD, "/proc/self/cgroup", &own);
                if (r == 0) {
                        r = strcmp(own, "/") != 0 ? cg_dir_fast(&fast, own, &g->parent_path)
                                                  : -ENOENT;
                        if (r == -ENOENT)
                                r = cg_dir_of(own, &g->parent_path);
                }
        }
        /* CLONE_INTO_CGROUP (like a write to cgroup.procs) is allowed when we may write the
         * cgroup.procs of the common ancestor of where the child comes from and where it goes
         * (the kernel's cgroup_procs_write_permission): our own cgroup, the leaf's parent.
         * mkdir may be allowed where that is not (a directory made writable but not
         * delegated), and every spawn would then fail: find out before making anything.
         * Our cgroup's file is also an old dentry; the new leaf's files would each be a
         * first lookup (a new kernfs inode). */
        char file[PATH_MAX];
        if (r == 0 && !cg_file(file, g->parent_path, "cgroup.procs"))
                r = -ENAMETOOLONG;
        else if (r == 0 && faccessat(AT_FDCWD, file, W_OK, AT_EACCESS) < 0)
                r = -errno;
        if (r < 0) {
                free(own);
                return r;
        }
        char hint[GROUP_HINT_MAX + 1];
        name_sanitize(name_hint, hint, sizeof hint);
        char name[GROUP_HINT_MAX + 64];
        for (int t = 0;; t++) {
                unsigned long k = __atomic_add_fetch(&cg_name_counter, 1, __ATOMIC_RELAXED);
                snprintf(name, sizeof name, "tend-%s%s%d-%lu", hint, hint[0] ? "-" : "",
                         (int)getpid(), k);
                size_t plen = strlen(g->parent_path) + 1 + strlen(name) + 1;
                size_t rlen = strlen(own) + 1 + strlen(name) + 1;
                if (plen > PATH_MAX) {
                        r = -ENAMETOOLONG;
                        break;
                }
                free(g->path);
                free(g->rel);
                g->path = malloc(plen);
                g->rel = malloc(rlen);
                if (!g->path || !g->rel) {
                        r = -ENOMEM;
                        break;
                }
                size_t pl = strlen(g->parent_path);
                /* The parent is the mount point itself ("/sys/fs/cgroup/unified/") when our
                 * cgroup is the root: no "//" in the path we show. */
                snprintf(g->path, plen, "%.*s/%s",
                         (int)(pl > 1 && g->parent_path[pl - 1] == '/' ? pl - 1 : pl),
                         g->parent_path, name);
                /* own is "/" for the root cgroup: avoid "//name", which /proc/PID/cgroup
                 * never writes. */
                snprintf(g->rel, rlen, "%s/%s", strcmp(own, "/") == 0 ? "" : own, name);
                if (mkdir(g->path, 0755) == 0) {
                        r = 0;
                        break;
                }
                r = -errno;
                /* EEXIST: left over by an earlier process that had our pid; take another
                 * name rather than adopt it. */
                if (r != -EEXIST || t + 1 >= GROUP_MKDIR_TRIES)
                        break;
        }
        free(own);
        if (r < 0) {
                free(g->path);
                free(g->rel);
                g->path = g->rel = NULL;
                return r;
        }
        /* By full paths: no fd is kept (see cgroup_need_watch), and the spawn opens the
         * directory itself. Whether cgroup.kill exists is asked at the first kill: a stat of
         * a file of the new leaf is a first lookup, paid by every run that kills nothing. */
        return 0;
}

static pthread_mutex_t own_cg_lock = PTHREAD_MUTEX_INITIALIZER;
static struct own_cg *own_cg_last; /* the latest one handed out (holds no reference) */

/* Our cgroup v2 path, shared with the groups made before in the same cgroup; NULL when none
 * is known. */
static struct own_cg *own_cg_get(void) {
        char *path = NULL;
        if (read_cgroup_path(AT_FDCWD, "/proc/self/cgroup", &path) < 0)
                return NULL;
        pthread_mutex_lock(&own_cg_lock);
        struct own_cg *o = own_cg_last;
        if (o && strcmp(o->path, path) == 0) {
                o->refs++;
        } else {
                size_t n = strlen(path) + 1;
                o = malloc(sizeof *o + n);
                if (o) {
                        o->refs = 1;
                        memcpy(o->path, path, n);
                        own_cg_last = o;
                }
        }
        pthread_mutex_unlock(&own_cg_lock);
        free(path);
        return o;
}

static void own_cg_put(struct own_cg *o) {
        if (!o)
                return;
        pthread_mutex_lock(&own_cg_lock);
        if (--o->refs == 0) {
                if (own_cg_last == o)
                        own_cg_last = NULL;
                free(o);
        }
        pthread_mutex_unlock(&own_cg_lock);
}

static int pgroup_setup(tend_group *g) {
        if (!__atomic_load_n(&subreaper_done, __ATOMIC_ACQUIRE)) {
                /* Orphaned descendants (double fork, setsid) are re-parented to the nearest
                 * subreaper instead of init, so they stay visible as our descendants. */
                if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0)
                        return -errno;
                __atomic_store_n(&subreaper_done, 1, __ATOMIC_RELEASE);
        }
        /* g->own, our cgroup's path, is read at its first use (pgroup_root_is_ours). */
        return pg_loop_add(g);
}

/* path and rel into the group's own allocation, parent_path dropped (cg_evacuate finds the
 * parent from path): one allocation per cgroup group rather than four. *gp moves; nothing
 * refers to the group yet. On failure *gp is unchanged. */
static int cgroup_pack(tend_group **gp) {
        tend_group *g = *gp;
        size_t lp = strlen(g->path) + 1, lr = strlen(g->rel) + 1;
        /* Where the mount shows the whole hierarchy (nearly always), rel is the end of path:
         * stored once. */
        bool tail = lr <= lp && memcmp(g->path + lp - lr, g->rel, lr) == 0;
        tend_group *n = realloc(g, sizeof *g + lp + (tail ? 0 : lr));
        if (!n)
                return -ENOMEM;
        memcpy(n->names, n->path, lp);
        if (!tail)
                memcpy(n->names + lp, n->rel, lr);
        free(n->path);
        free(n->rel);
        free(n->parent_path);
        n->path = n->names;
        n->rel = tail ? n->names + lp - lr : n->names + lp;
        n->parent_path = NULL;
        *gp = n;
        return 0;
}

TEND_PUBLIC int tend_group_new(tend_loop *loop, const char *name_hint, unsigned flags,
                               tend_group **ret_group) {
        if (!loop || !ret_group)
                return -EINVAL;
        if ((flags & TEND_GROUP_NO_CGROUP) && (flags & TEND_GROUP_REQUIRE_CGROUP))
                return -EINVAL;
        if (flags & ~(unsigned)(TEND_GROUP_NO_CGROUP | TEND_GROUP_REQUIRE_CGROUP))
                return -EINVAL;
        tend_group *g = calloc(1, sizeof *g);
        if (!g)
                return -ENOMEM;
        g->loop = loop;
        int r = -EOPNOTSUPP;
        if (!(flags & TEND_GROUP_NO_CGROUP)) {
                g->dir_fd = g->events_fd = -1;
                r = cgroup_setup(g, name_hint);
                if (r == 0) {
                        r = cgroup_pack(&g);
                        if (r < 0) {
                                (void)rmdir(g->path);
                                free(g->path);
                                free(g->rel);
                                free(g->parent_path);
                                free(g);
                                return r;
                        }
                        g->kind = TEND_GROUP_CGROUP;
                        __atomic_add_fetch(&n_cgroup_groups, 1, __ATOMIC_RELAXED);
                } else if ((flags & TEND_GROUP_REQUIRE_CGROUP) || cgroup_error_is_fatal(r)) {
                        free(g->parent_path);
                        free(g);
                        return r;
                }
                /* Otherwise (no cgroup2, read-only, not ours to write, ...): fall back. */
        }
        if (r < 0) {
                /* The cgroup fields share their memory with these (cgroup_setup() has freed
                 * all but parent_path). */
                free(g->parent_path);
                g->pgid = 0;
                g->has_member = false;
                g->n_pgids = g->cap_pgids = 0;
                g->pgids = NULL;
                g->pgl = NULL;
                g->own = NULL;
                r = pgroup_setup(g);
                if (r < 0) {
                        free(g);
                        return r;
                }
                g->kind = TEND_GROUP_PGROUP;
                __atomic_add_fetch(&n_pgroup_groups, 1, __ATOMIC_RELAXED);
        }
        *ret_group = g;
        return 0;
}

/* Remove the cgroup at dir_fd's sub-cgroups (bottom-up); then the caller removes the top. */
static void cg_rmdir_children(int dir_fd, int depth) {
        if (depth >= GROUP_CG_DEPTH_MAX)
                return;
        int fd = openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return;
        DIR *d = fdopendir(fd);
        if (!d) {
                io_close(fd);
                return;
        }
        struct dirent *de;
        while ((de = readdir(d))) {
                if (de->d_type != DT_DIR || strcmp(de->d_name, ".") == 0 ||
                    strcmp(de->d_name, "..") == 0)
                        continue;
                int sub = openat(dir_fd, de->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                if (sub < 0)
                        continue;
                cg_rmdir_children(sub, depth + 1);
                io_close(sub);
                (void)unlinkat(dir_fd, de->d_name, AT_REMOVEDIR);
        }
        closedir(d);
}

/* Move every process of the tree to the cgroup the group was made in. */
static void cg_evacuate(tend_group *g, int dir_fd) {
        struct mvec m = { 0 };
        if (cg_collect(dir_fd, 0, &m) < 0 && m.n == 0) {
                mvec_free(&m);
                return;
        }
        mvec_sort_unique(&m);
        char dir[PATH_MAX];
        snprintf(dir, sizeof dir, "%s", g->path);
        char *slash = strrchr(dir, '/');
        if (slash && slash != dir)
                *slash = '\0'; /* the cgroup it was made in */
        int parent = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (parent >= 0) {
                for (size_t i = 0; i < m.n; i++) {
                        char text[16];
                        snprintf(text, sizeof text, "%d", (int)m.v[i].pid);
                        /* cgroup.procs takes one pid per write. ESRCH: it has gone. */
                        (void)io_write_file_at(parent, "cgroup.procs", text);
                }
                io_close(parent);
        }
        mvec_free(&m);
}

static void cgroup_teardown(tend_group *g) {
        cgroup_unwatch(g);
        g->recheck = tend_timer_free(g->recheck);
        if (g->removed)
                return;
        /* Opened only when the leaf is busy: the common free is one rmdir. */
        int dfd = -1, events_fd = -1;
        for (int t = 0; t < GROUP_FREE_TRIES; t++) {
                /* Sub-cgroups (made by a member) are rare: try the leaf alone first, and list
                 * the directory only when rmdir says it is busy. */
                if (rmdir(g->path) == 0 || errno == ENOENT)
                        break;
                if (errno != EBUSY && errno != ENOTEMPTY)
                        break; /* not ours to remove after all; leave it */
                if (dfd < 0 && (dfd = open(g->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
                        break;
                cg_rmdir_children(dfd, 0);
                if (rmdir(g->path) == 0 || errno == ENOENT)
                        break;
                if (errno != EBUSY)
                        break;
                /* Still populated (zombies do not count, so these are live or still exiting
                 * tasks) or a sub-cgroup came back. Move the live ones out; a task that is
                 * already exiting cannot be moved and only needs a moment to leave, so wait
                 * for cgroup.events to change — bounded, free cannot fail or hang. */
                cg_evacuate(g, dfd);
                if (events_fd < 0)
                        events_fd = openat(dfd, "cgroup.events", O_RDONLY | O_CLOEXEC);
                if (events_fd >= 0 && events_fd_read(events_fd) == 1) {
                        struct pollfd pfd = { .fd = events_fd, .events = POLLPRI };
                        (void)poll(&pfd, 1, GROUP_FREE_WAIT_MS);
                }
        }
        io_close(events_fd);
        io_close(dfd);
}

static void group_release(tend_group *g) {
        if (g->kind == TEND_GROUP_PGROUP) {
                free(g->pgids);
                own_cg_put(g->own);
        }
        free(g->listeners);
        free(g);
}

static void detach_if_ours(tend_proc *p, void *userdata) {
        if (tend_proc_group(p) == userdata)
                proc_detach_group(p);
}

TEND_PUBLIC tend_group *tend_group_free(tend_group *g) {
        if (!g || g->dead)
                return NULL;
        /* A running handle that names g would tell it of its end after the free. */
        if (g->n_live > 0)
                loop_proc_foreach(g->loop, detach_if_ours, g);
        /* The ladder first: freeing it removes its empty listener. */
        ladder_group_free(g);
        g->dead = true;
        if (g->kind == TEND_GROUP_CGROUP) {
                cgroup_teardown(g);
                __atomic_sub_fetch(&n_cgroup_groups, 1, __ATOMIC_RELAXED);
        } else {
                pg_loop_remove(g);
                __atomic_sub_fetch(&n_pgroup_groups, 1, __ATOMIC_RELAXED);
        }
        if (g->dispatching == 0)
                group_release(g);
        return NULL;
}

/* ---- queries and actions -------------------------------------------------------------- */

TEND_PUBLIC enum tend_group_kind tend_group_kind(const tend_group *g) {
        return g->kind;
}

TEND_PUBLIC const char *tend_group_path(const tend_group *g) {
        return g && g->kind == TEND_GROUP_CGROUP ? g->path : NULL;
}

TEND_PUBLIC int tend_group_members(tend_group *g, pid_t *pids, size_t cap) {
        if (!g || (!pids && cap))
                return -EINVAL;
        struct mvec m = { 0 };
        int r = group_snapshot(g, &m);
        if (r < 0)
                return r;
        for (size_t i = 0; i < m.n && i < cap; i++)
                pids[i] = m.v[i].pid;
        r = m.n > INT_MAX ? INT_MAX : (int)m.n;
        mvec_free(&m);
        return r;
}

TEND_PUBLIC int tend_group_signal(tend_group *g, int signo) {
        if (!g || signo < 0 || signo >= NSIG)
                return -EINVAL;
        return group_signal_passes(g, signo, GROUP_SIGNAL_PASSES, 0);
}

/* SIGKILL, through pidfds, the members whose main thread has exited while other threads run.
 * cgroup.kill misses them (seen on 6.18): it sends SIGKILL to each process's leader task as
 * that one thread's private signal, and an exited leader never acts on it, nor does the
 * kernel pass it on to the live threads. pidfd_send_signal() targets the thread group and
 * works. Returns how many were found, or -errno. */
static int cg_kill_leaderless(tend_group *g) {
        struct mvec m = { 0 };
        int r = group_snapshot(g, &m);
        if (r < 0)
                return r;
        int procfd = open_proc();
        if (procfd < 0) {
                mvec_free(&m);
                return procfd;
        }
        int found = 0;
        for (size_t i = 0; i < m.n; i++) {
                if (!m.v[i].leaderless)
                        continue;
                found++;
                (void)signal_member(g, procfd, &m.v[i], SIGKILL);
        }
        io_close(procfd);
        mvec_free(&m);
        return found;
}

TEND_PUBLIC int tend_group_kill(tend_group *g) {
        if (!g)
                return -EINVAL;
        int to_close = -1;
        int dfd = g->kind == TEND_GROUP_CGROUP ? cg_dir(g, &to_close) : -1;
        if (dfd >= 0 && cg_kill_available(g->path)) {
                /* Atomic for the whole tree, forks in flight included — except for processes
                 * without a live main thread (cg_kill_leaderless). Those are killed by pidfd,
                 * then cgroup.kill once more catches whatever they forked meanwhile. */
                int r = io_write_file_at(dfd, "cgroup.kill", "1");
                if (r == 0)
                        g->cg_killed = true;
                /* Once SIGKILLed they cannot fork any more, so one more cgroup.kill after the
                 * sweep leaves nothing behind. */
                if (r == 0 && cg_kill_leaderless(g) > 0)
                        r = io_write_file_at(dfd, "cgroup.kill", "1");
                io_close(to_close);
                if (r != -ENOENT && r != -EINVAL)
                        return r;
                /* Fall through: cgroup.kill vanished? (should not happen) */
        } else {
                io_close(to_close);
        }
        /* A SIGKILLed process can no longer fork (fork fails with a fatal signal pending), so
         * each pass only has to catch children forked before their parent was hit. */
        int r = group_signal_passes(g, SIGKILL, GROUP_KILL_PASSES, 0);
        return r < 0 ? r : 0;
}

TEND_PUBLIC bool tend_group_empty(tend_group *g) {
        if (!g || (g->kind == TEND_GROUP_CGROUP && g->removed))
                return true;
        if (g->kind == TEND_GROUP_CGROUP) {
                if (cg_known_empty(g))
                        return true;
                /* A fresh open, not the watched fd: reading that one would consume the change
                 * notification the watch is waiting for. */
                int fd = cg_open_events(g);
                int p = fd < 0 ? fd : cg_events_read(g, fd);
                io_close(fd);
                if (p >= 0)
                        return p == 0;
        }
        return tend_group_members(g, NULL, 0) == 0;
}

TEND_PUBLIC int tend_group_remove_if_empty(tend_group *g) {
        if (!g || g->dead)
                return -EINVAL;
        if (g->kind != TEND_GROUP_CGROUP)
                return 0;
        if (g->removed)
                return 1;
        if (g->n_live > 0 || g->dir_fd >= 0)
                return 0; /* a handle of ours lives in it, or a spawn is under way */
        /* The kernel removes a cgroup only when no task is in it or below it, live or still
         * exiting, and nothing can enter a cgroup that is gone: success is the proof, with
         * no read of cgroup.events or cgroup.procs (the end of every `tend run`). EBUSY:
         * members or sub-cgroups, which the caller lists the usual way. */
        if (rmdir(g->path) < 0 && errno != ENOENT)
                return 0;
        g->removed = true;
        cgroup_unwatch(g);
        if (!g->populated)
                return 1;
        if (g->n_listeners == 0 && !g->empty_cb) {
                g->populated = false; /* nobody to tell */
                return 1;
        }
        /* The empty event is owed: from the loop (cgroup_need_watch sees the removal). Out
         * of memory for the timer: the event now rather than never, as cgroup_need_watch. */
        if (cgroup_recheck_later(g, 0) < 0)
                cgroup_seen_empty(g);
        return 1;
}

TEND_PUBLIC void tend_group_on_empty(tend_group *g, tend_group_empty_cb cb, void *userdata) {
        if (!g)
                return;
        g->empty_cb = cb;
        g->empty_userdata = userdata;
}

/* ---- for spawn.c ---------------------------------------------------------------------- */

int group_cgroup_fd(tend_group *g) {
        if (!g || g->kind != TEND_GROUP_CGROUP)
                return -EBADF;
        if (g->removed)
                return -ENOENT;
        g->empty_round = 0; /* a spawn begins: what was seen empty may not be */
        if (g->dir_fd < 0) {
                g->dir_fd = open(g->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                if (g->dir_fd < 0)
                        return -errno;
        }
        return g->dir_fd;
}

void group_spawn_end(tend_group *g) {
        if (!g || g->kind != TEND_GROUP_CGROUP)
                return;
        g->dir_fd = io_close(g->dir_fd);
        /* A child spawned in but without a handle (it could not be made) leaves the group
         * populated with nothing of ours to tell its end. */
        cgroup_need_watch(g, false);
}

void group_proc_added(tend_group *g) {
        if (!g)
                return;
        g->n_live++;
        /* An adopted member now stands for the group (a spawn's child did already). */
        if (g->kind == TEND_GROUP_CGROUP) {
                g->empty_round = 0;
                cgroup_unwatch(g);
        }
}

/* The round of dispatch in which the last handle in g ended is over: its exit callback has
 * run. In `tend run` that callback has removed the empty cgroup (tend_group_remove_if_empty),
 * which answers what cgroup.events would have said: no open, read and close of it. */
static void group_settle(void *arg) {
        tend_group *g = arg;
        g->settle_queued = false;
        if (!g->dead)
                cgroup_need_watch(g, true); /* the loop dispatches: it may fire (and free g) */
        group_unhold(g); /* releases g if it was freed meanwhile */
}

void group_proc_gone(tend_group *g) {
        if (!g || g->n_live == 0)
                return;
        if (--g->n_live > 0 || g->kind != TEND_GROUP_CGROUP)
                return;
        /* Reaped in the loop's dispatch: look once the callbacks of this round have run.
         * Otherwise (freed while it runs, tend_proc_wait) now. The hold keeps the memory of a
         * group freed meanwhile until then. */
        if (g->settle_queued)
                return;
        if (loop_after_dispatch(g->loop, group_settle, g) == 0) {
                g->settle_queued = true;
                g->dispatching++;
                return;
        }
        cgroup_need_watch(g, false);
}

/* Seen on 6.18: once cgroup.kill has been written to a cgroup, every later clone3() with
 * CLONE_INTO_CGROUP into it dies of SIGKILL at once (the kernel compares the kill sequence
 * of the cgroup being forked from with that of the target), while a child that moves itself
 * in through cgroup.procs lives. A group that is used again after a kill (a supervised
 * service's next run, its post-stop hook) is therefore joined that way from then on. */
bool group_spawn_migrates(const tend_group *g) {
        return g && g->kind == TEND_GROUP_CGROUP && g->cg_killed;
}

pid_t group_pgid(const tend_group *g) {
        if (!g || g->kind != TEND_GROUP_PGROUP || g->pgid <= 0)
                return 0;
        /* A process group lives as long as one of its processes (zombies included). Once it is
         * gone, joining it would fail with EPERM: let the next child lead a new one. (Its
         * number cannot be taken by someone else while a member, even a zombie, holds it.) */
        if (kill(-g->pgid, 0) < 0 && errno == ESRCH)
                return 0;
        return g->pgid;
}

void group_note_spawned(tend_group *g, pid_t pid) {
        if (!g || pid <= 0)
                return;
        g->populated = true;
        if (g->kind == TEND_GROUP_CGROUP) {
                /* Its handle (made next) stands for the group until it ends; if none can be
                 * made, group_spawn_end() watches again. */
                cgroup_unwatch(g);
                return;
        }
        /* Ask the kernel which process group the child ended up in rather than assume: it led
         * a new one if group_pgid() said 0 (first spawn, or the old group had died), or if it
         * was spawned with TEND_SPAWN_SETSID. The child is ours and unreaped, so its pid still
         * names it. A setsid child does not replace a process group that still lives; it is
         * followed as a descendant of a process spawned into the group instead. */
        pid_t pg = getpgid(pid);
        if (pg <= 0)
                pg = pid;
        if (g->pgid <= 0 || (pg != g->pgid && kill(-g->pgid, 0) < 0 && errno == ESRCH))
                g->pgid = pg;
        pgids_add(g, pg);
}

int group_add_empty_listener(tend_group *g, group_empty_listener fn, void *userdata) {
        if (!g || !fn)
                return -EINVAL;
        for (size_t i = 0; i < g->n_listeners; i++)
                if (g->listeners[i].fn == fn && g->listeners[i].userdata == userdata)
                        return 0;
        if (g->n_listeners == g->cap_listeners) {
                size_t cap = g->cap_listeners ? g->cap_listeners * 2 : 4;
                struct empty_listener *nl = realloc(g->listeners, cap * sizeof *nl);
                if (!nl)
                        return -ENOMEM;
                g->listeners = nl;
                g->cap_listeners = cap;
        }
        g->listeners[g->n_listeners++] = (struct empty_listener){ fn, userdata };
        return 0;
}

void group_remove_empty_listener(tend_group *g, void *userdata) {
        if (!g)
                return;
        size_t w = 0;
        for (size_t i = 0; i < g->n_listeners; i++) {
                if (g->listeners[i].userdata == userdata) {
                        /* During a dispatch only mark it: the dispatcher walks by index. */
                        if (g->dispatching)
                                g->listeners[i].fn = NULL;
                        else
                                continue;
                }
                g->listeners[w++] = g->listeners[i];
        }
        g->n_listeners = w;
}

struct proc_ladder **group_ladder_slot(tend_group *g) {
        return &g->ladder;
}

int group_signal_except(tend_group *g, int signo, pid_t skip) {
        if (signo < 0 || signo >= _NSIG)
                return -EINVAL;
        return group_signal_passes(g, signo, GROUP_SIGNAL_PASSES, skip);
}

tend_loop *group_loop(const tend_group *g) {
        return g ? g->loop : NULL;
}
