/* supervise_ready.c — knowing when a service is ready, without guessing (DESIGN §1.14), and
 * finding the main process of a forking one (§1.13).
 *
 *  notify  sd_notify on a socket of the service's own (lib/notify.c). A message is believed
 *          when its sender is the main process or in the service's group; a sender that has
 *          already exited (systemd-notify is gone by the time its datagram is read) is
 *          believed when its uid is the service's or root's — the socket is the service's
 *          and only that user may write to it, and a process of the same user could ptrace
 *          the service anyway. MAINPID= is taken only for a pid inside the group.
 *  fd:N    s6's notification fd: the first newline on the pipe means ready; EOF before it
 *          means the service will never say so.
 *  stop    Upstart's `expect stop`: the main process stops itself; on SIGCHLD its pidfd is
 *          asked (waitid WSTOPPED), and it is continued.
 *  tcp:    a non-blocking connect, tried again with a growing pause (20 ms doubling to 1 s)
 *  exec:   the command run again the same way until it exits 0. These two probes are the
 *          only repeated work, and only while a service is starting: an idle tend does not
 *          wake up. The start's deadline (ready-timeout) bounds them.
 *
 * Forking services: once the start command has exited successfully, the main process is
 * the one that remains in the group — read from the pidfile when there is one (waited for
 * with inotify; accepted only if that pid is in the group), otherwise the only process left,
 * or the only one re-parented to tend. When it cannot be told, the group stands for it: the
 * service runs while any process of the group does. */
#include "supervise.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/inotify.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define PROBE_FIRST_USEC (20u * 1000u)
#define PROBE_MAX_USEC (1000u * 1000u)
#define MEMBERS_MAX (1u << 16)

static void post_ready_event(struct svc *s, enum svc_event ev, const char *cause) {
        struct svc_input in = { .event = ev, .cause = cause };
        svc_post_full(s, &in);
        sv_settle(s->sv);
}

/* Readiness reached. A forking service is ready only once its start command is done too. */
static void reached(struct svc *s, const char *cause) {
        if (s->m.state != SVC_STARTING || s->m.phase != SVC_PHASE_START)
                return;
        if (s->cfg->type == SVC_TYPE_FORKING && !s->start_done) {
                s->rd->ready_pending = true;
                free(s->rd->ready_cause);
                s->rd->ready_cause = strdup(cause); /* NULL: "ready" will do */
                return;
        }
        post_ready_event(s, SVC_EV_READY, cause);
}

static bool group_has(tend_group *g, pid_t pid) {
        pid_t small[256], *pids = small;
        size_t cap = ARRAY_SIZE(small);
        for (int tries = 0; tries < 4; tries++) {
                int n = tend_group_members(g, pids, cap);
                if (n < 0)
                        break;
                if ((size_t)n <= cap) {
                        bool found = false;
                        for (int i = 0; i < n && !found; i++)
                                found = pids[i] == pid;
                        if (pids != small)
                                free(pids);
                        return found;
                }
                if (pids != small)
                        free(pids);
                cap = (size_t)n + 64 > MEMBERS_MAX ? MEMBERS_MAX : (size_t)n + 64;
                pids = malloc(cap * sizeof *pids);
                if (!pids)
                        return false;
        }
        if (pids != small)
                free(pids);
        return false;
}

/* Gone or a zombie? */
static bool process_gone(pid_t pid) {
        char path[64], buf[512];
        snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
        ssize_t n = io_read_file(path, buf, sizeof buf);
        if (n < 0)
                return true;
        const char *paren = strrchr(buf, ')');
        return paren && paren[1] == ' ' && (paren[2] == 'Z' || paren[2] == 'X');
}

/* ---- sd_notify ------------------------------------------------------------------------- */

static bool sender_believed(struct svc *s, const struct notify_msg *m) {
        if (!m->have_creds || m->pid <= 0)
                return false;
        if (s->main && !s->main_exited && m->pid == s->main_pid)
                return true;
        if (group_has(s->group, m->pid))
                return true;
        uid_t owner = s->cfg->x->has_uid ? s->cfg->x->uid : geteuid();
        return process_gone(m->pid) && (m->uid == owner || m->uid == 0);
}

static void apply_notify(struct svc *s, const struct notify_msg *m) {
        if (m->status) {
                free(s->rd->status_text);
                s->rd->status_text = strdup(m->status);
        }
        if (m->have_errno)
                s->rd->notify_errno = m->errno_value;
        if (m->stopping)
                s->rd->stopping_said = true;
        if (m->have_mainpid && m->mainpid != s->main_pid &&
            (s->m.state == SVC_STARTING || svc_is_up(&s->m))) {
                if (!group_has(s->group, m->mainpid))
                        sv_say(s->sv, "svc '%s': MAINPID=%d ignored: not a process of the service",
                               s->cfg->name, (int)m->mainpid);
                else if (svc_adopt_main(s, m->mainpid) < 0)
                        sv_say(s->sv, "svc '%s': MAINPID=%d ignored: cannot follow it",
                               s->cfg->name, (int)m->mainpid);
        }
        if (m->have_extend && m->extend_usec) {
                struct svc_input in = { .event = SVC_EV_EXTEND, .usec = m->extend_usec };
                svc_post_full(s, &in);
        }
        if (m->have_watchdog_usec && m->watchdog_usec) {
                /* The service's own interval, for the rest of this run. Set here too, not only
                 * through the event, so that it holds when READY=1 comes in the same message
                 * (the machine takes pings only once running). */
                s->m.watchdog_usec = m->watchdog_usec;
                struct svc_input in = { .event = SVC_EV_WATCHDOG, .usec = m->watchdog_usec };
                svc_post_full(s, &in);
        }
        if (m->watchdog)
                svc_post(s, SVC_EV_WATCHDOG, NULL);
        if (m->watchdog_trigger)
                svc_post(s, SVC_EV_WATCHDOG_FAIL, "watchdog: the service asked (WATCHDOG=trigger)");
        /* RELOADING=1 before READY=1, as systemd reads them: a message with both is a
         * reload that is already over. RELOADING=1 while still starting is ignored (the
         * service is not ready yet, which says the same). */
        if (m->reloading && s->m.state == SVC_RUNNING)
                svc_post(s, SVC_EV_RELOADING, "reloading: notify (RELOADING=1)");
        if (m->ready) {
                if (s->m.state == SVC_RELOADING)
                        svc_post(s, SVC_EV_READY, "reloaded: notify (READY=1)");
                else if (s->cfg->ready == SVC_READY_NOTIFY)
                        reached(s, "ready: notify");
        }
}

static void on_notify(tend_watch *w, int fd, uint32_t revents, void *userdata) {
        struct svc *s = userdata;
        struct sv *sv = s->sv;
        /* One message at a time, each handled before the next is read (BARRIER=1). A bound
         * per wake-up keeps one chatty service from starving the others. */
        for (int i = 0; i < 64; i++) {
                struct notify_msg *m = malloc(sizeof *m);
                if (!m)
                        break;
                int r = notify_receive(fd, m);
                if (r == -EAGAIN) {
                        free(m);
                        break;
                }
                if (r < 0) {
                        if (r == -EBADMSG && s->rd->notify_dropped++ == 0)
                                sv_say(sv, "svc '%s': dropped a malformed sd_notify message "
                                           "(truncated or with a NUL byte)", s->cfg->name);
                        free(m);
                        if (r != -EBADMSG)
                                break;
                        continue;
                }
                if (!sender_believed(s, m)) {
                        if (s->rd->notify_dropped++ == 0)
                                sv_say(sv, "svc '%s': ignored an sd_notify message from pid %d, "
                                           "which is not a process of the service",
                                       s->cfg->name, (int)m->pid);
                } else {
                        apply_notify(s, m);
                }
                free(m);
                if (s->freed)
                        break;
        }
        sv_settle(sv);
}

int ready_notify_open(struct svc *s) {
        char *path;
        if (asprintf(&path, "%s/%s.notify", s->sv->runtime_dir, s->cfg->name) < 0)
                return -ENOMEM;
        int e = notify_socket_open(path, s->cfg->x->has_uid ? s->cfg->x->uid : (uid_t)-1,
                                   s->cfg->x->has_gid ? s->cfg->x->gid : (gid_t)-1, &s->rd->notify_fd);
        if (e < 0) {
                msg_error("svc '%s': cannot make its notify socket '%s': %s%s", s->cfg->name,
                          path, tend_strerror(e),
                          e == -ENAMETOOLONG ? " (use a shorter --runtime-dir)" : "");
                free(path);
                return e;
        }
        s->rd->notify_path = path;
        struct stat st;
        if (stat(path, &st) == 0) {
                s->rd->notify_dev = st.st_dev;
                s->rd->notify_ino = st.st_ino;
        }
        if (asprintf(&s->rd->notify_env, "NOTIFY_SOCKET=%s", path) < 0) {
                s->rd->notify_env = NULL;
                return -ENOMEM;
        }
        return tend_watch_new(s->sv->loop, s->rd->notify_fd, EPOLLIN, on_notify, s,
                              &s->rd->notify_watch);
}

void ready_notify_close(struct svc *s) {
        if (!s->rd)
                return;
        s->rd->notify_watch = tend_watch_free(s->rd->notify_watch);
        s->rd->notify_fd = io_close(s->rd->notify_fd);
        /* Only our own socket: a reload may have made the next one at the same path. */
        struct stat st;
        if (s->rd->notify_path && stat(s->rd->notify_path, &st) == 0 && st.st_dev == s->rd->notify_dev &&
            st.st_ino == s->rd->notify_ino)
                (void)unlink(s->rd->notify_path);
        free(s->rd->notify_path);
        free(s->rd->notify_env);
        s->rd->notify_path = s->rd->notify_env = NULL;
}

/* ---- fd:N ------------------------------------------------------------------------------ */

static void on_ready_fd(tend_watch *w, int fd, uint32_t revents, void *userdata) {
        struct svc *s = userdata;
        char buf[256];
        ssize_t n = io_read(fd, buf, sizeof buf);
        if (n == -EAGAIN)
                return;
        bool newline = n > 0 && memchr(buf, '\n', (size_t)n);
        if (n > 0 && !newline)
                return; /* more to come */
        s->rd->ready_watch = tend_watch_free(s->rd->ready_watch);
        s->rd->ready_fd = io_close(s->rd->ready_fd);
        char cause[SVC_CAUSE_MAX];
        if (newline) {
                snprintf(cause, sizeof cause, "ready: fd %d", s->cfg->x->ready_fd);
                reached(s, cause);
                return;
        }
        if (s->m.state != SVC_STARTING || s->m.phase != SVC_PHASE_START)
                return;
        snprintf(cause, sizeof cause, "closed its notification fd %d without a newline",
                 s->cfg->x->ready_fd);
        post_ready_event(s, SVC_EV_SPAWN_FAILED, cause);
}

/* ---- probes ------------------------------------------------------------------------------ */

static void probe_attempt(struct svc *s);

static void on_probe_timer(tend_timer *t, void *userdata) {
        probe_attempt(userdata);
        sv_settle(((struct svc *)userdata)->sv);
}

static void probe_again(struct svc *s) {
        if (!s->rd->probe_timer && tend_timer_new(s->sv->loop, on_probe_timer, s, &s->rd->probe_timer) < 0)
                return; /* the start deadline still ends it */
        s->rd->probe_interval = s->rd->probe_interval ? s->rd->probe_interval * 2 : PROBE_FIRST_USEC;
        if (s->rd->probe_interval > PROBE_MAX_USEC)
                s->rd->probe_interval = PROBE_MAX_USEC;
        tend_timer_start(s->rd->probe_timer, s->rd->probe_interval);
}

static void tcp_close(struct svc *s) {
        s->rd->tcp_watch = tend_watch_free(s->rd->tcp_watch);
        s->rd->tcp_fd = io_close(s->rd->tcp_fd);
}

static void tcp_connected(struct svc *s) {
        tcp_close(s);
        char cause[SVC_CAUSE_MAX];
        snprintf(cause, sizeof cause, "ready: tcp %s accepted a connection", s->cfg->x->tcp_text);
        reached(s, cause);
}

static void on_tcp(tend_watch *w, int fd, uint32_t revents, void *userdata) {
        struct svc *s = userdata;
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
                err = errno;
        if (err == 0) {
                tcp_connected(s);
                return;
        }
        tcp_close(s);
        probe_again(s);
}

static void on_probe_exit(tend_proc *p, int err, const struct tend_exit *ex, void *userdata) {
        struct svc *s = userdata;
        if (p != s->rd->probe)
                return;
        s->rd->probe = NULL;
        svc_bury(s, p);
        if (err == 0 && ex && !ex->signo && ex->code == 0) {
                reached(s, "ready: exec probe succeeded");
                return;
        }
        probe_again(s);
        sv_settle(s->sv);
}

static void probe_attempt(struct svc *s) {
        if (s->m.state != SVC_STARTING || s->m.phase != SVC_PHASE_START)
                return;
        if (s->cfg->ready == SVC_READY_TCP) {
                tcp_close(s);
                const struct sockaddr *sa = (const struct sockaddr *)s->cfg->x->tcp_addr;
                s->rd->tcp_fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
                if (s->rd->tcp_fd < 0) {
                        probe_again(s);
                        return;
                }
                if (connect(s->rd->tcp_fd, sa, s->cfg->x->tcp_addr_len) == 0) {
                        tcp_connected(s);
                        return;
                }
                if (errno == EINPROGRESS &&
                    tend_watch_new(s->sv->loop, s->rd->tcp_fd, EPOLLOUT, on_tcp, s, &s->rd->tcp_watch) == 0)
                        return;
                tcp_close(s);
                probe_again(s);
        } else if (s->cfg->ready == SVC_READY_EXEC) {
                char cause[SVC_CAUSE_MAX], what[SVC_CAUSE_MAX];
                if (svc_spawn_command(s, &s->cfg->x->ready_exec, on_probe_exit, &s->rd->probe, what,
                                      sizeof what) < 0) {
                        s->rd->probe = NULL;
                        snprintf(cause, sizeof cause, "ready probe: %.170s", what);
                        post_ready_event(s, SVC_EV_SPAWN_FAILED, cause);
                }
        }
}

/* ---- stop -------------------------------------------------------------------------------- */

void ready_check_stopped(struct svc *s) {
        if (!s->rd || !s->rd->wait_stop || !s->main || s->main_exited)
                return;
        int fd = tend_proc_pidfd(s->main);
        if (fd < 0)
                return;
        siginfo_t si;
        memset(&si, 0, sizeof si);
        if (waitid((idtype_t)P_PIDFD, (id_t)fd, &si, WSTOPPED | WNOHANG) < 0 || si.si_pid == 0)
                return;
        s->rd->wait_stop = false;
        s->sv->n_wait_stop--;
        (void)tend_proc_signal(s->main, SIGCONT);
        reached(s, "ready: stopped itself (SIGSTOP), continued");
}

/* ---- the hooks for supervise_service.c ---------------------------------------------------- */

int ready_before_spawn(struct svc *s, struct tend_fd_map *map, bool *has_map) {
        if (!s->rd)
                return 0; /* ready = none, type = simple: nothing to prepare */
        s->rd->ready_pending = false;
        free(s->rd->ready_cause);
        s->rd->ready_cause = NULL;
        s->rd->probe_interval = 0;
        if (s->cfg->ready != SVC_READY_FD)
                return 0;
        int p[2];
        if (pipe2(p, O_CLOEXEC) < 0)
                return -errno;
        s->rd->ready_fd = p[0];
        *map = (struct tend_fd_map){ .parent_fd = p[1], .child_fd = s->cfg->x->ready_fd };
        *has_map = true;
        return 0;
}

static enum svc_event start_watching(struct svc *s, char *cause, size_t size) {
        switch (s->cfg->ready) {
        case SVC_READY_NONE:
                if (s->cfg->type == SVC_TYPE_FORKING) {
                        if (s->main)
                                snprintf(cause, size, "ready: start command done, main pid %d",
                                         (int)s->main_pid);
                        else
                                snprintf(cause, size, "ready: start command done, "
                                                      "main process not known: following the group");
                } else {
                        snprintf(cause, size, "started; ready = none");
                }
                return SVC_EV_READY;
        case SVC_READY_TCP:
        case SVC_READY_EXEC:
                if (!s->rd->probe_timer &&
                    tend_timer_new(s->sv->loop, on_probe_timer, s, &s->rd->probe_timer) < 0)
                        return SVC_EV_COUNT;
                tend_timer_start(s->rd->probe_timer, 0); /* from the loop, not from inside a step */
                return SVC_EV_COUNT;
        default:
                return SVC_EV_COUNT;
        }
}

enum svc_event ready_after_spawn(struct svc *s, char *cause, size_t size) {
        if (!s->rd) {
                snprintf(cause, size, "started; ready = none");
                return SVC_EV_READY;
        }
        switch (s->cfg->ready) {
        case SVC_READY_FD:
                if (s->rd->ready_fd >= 0 && tend_watch_new(s->sv->loop, s->rd->ready_fd, EPOLLIN,
                                                       on_ready_fd, s, &s->rd->ready_watch) < 0) {
                        snprintf(cause, size, "cannot watch the notification fd");
                        return SVC_EV_SPAWN_FAILED;
                }
                return SVC_EV_COUNT;
        case SVC_READY_STOP:
                s->rd->wait_stop = true;
                s->sv->n_wait_stop++;
                return SVC_EV_COUNT; /* the stop comes with a SIGCHLD */
        default:
                break;
        }
        if (s->cfg->type == SVC_TYPE_FORKING)
                return SVC_EV_COUNT; /* the rest once the start command is done */
        return start_watching(s, cause, size);
}

/* The pidfile, if it names a process of the service. 1 adopted, 0 not (yet), < 0 error. */
static int try_pidfile(struct svc *s) {
        char buf[64];
        ssize_t n = io_read_file(s->cfg->x->pidfile, buf, sizeof buf);
        if (n <= 0)
                return 0;
        char *end;
        errno = 0;
        long pid = strtol(buf, &end, 10);
        while (*end == '\n' || *end == ' ' || *end == '\t' || *end == '\r')
                end++;
        if (errno || *end || pid <= 0 || pid > INT_MAX) {
                if (!s->rd->pidfile_complained)
                        sv_say(s->sv, "svc '%s': pidfile '%s' does not hold a pid",
                               s->cfg->name, s->cfg->x->pidfile);
                s->rd->pidfile_complained = true;
                return 0;
        }
        if (svc_adopt_main(s, (pid_t)pid) == 0)
                return 1;
        if (!s->rd->pidfile_complained)
                sv_say(s->sv, "svc '%s': pidfile '%s' names pid %ld, which is not a process "
                              "of the service; waiting", s->cfg->name, s->cfg->x->pidfile, pid);
        s->rd->pidfile_complained = true;
        return 0;
}

static enum svc_event main_found(struct svc *s, char *cause, size_t size) {
        if (s->rd->ready_pending) {
                s->rd->ready_pending = false;
                snprintf(cause, size, "%s", s->rd->ready_cause ? s->rd->ready_cause : "ready");
                free(s->rd->ready_cause);
                s->rd->ready_cause = NULL;
                return SVC_EV_READY;
        }
        return start_watching(s, cause, size);
}

static void inotify_close(struct svc *s) {
        s->rd->inotify_watch = tend_watch_free(s->rd->inotify_watch);
        s->rd->inotify_fd = io_close(s->rd->inotify_fd);
}

static void on_inotify(tend_watch *w, int fd, uint32_t revents, void *userdata) {
        struct svc *s = userdata;
        char buf[4096];
        while (io_read(fd, buf, sizeof buf) > 0)
                ;
        if (s->m.state != SVC_STARTING || s->m.phase != SVC_PHASE_START || s->main) {
                inotify_close(s);
                return;
        }
        if (try_pidfile(s) <= 0)
                return;
        inotify_close(s);
        char cause[SVC_CAUSE_MAX];
        enum svc_event ev = main_found(s, cause, sizeof cause);
        if (ev != SVC_EV_COUNT)
                post_ready_event(s, ev, cause);
}

enum svc_event ready_start_command_done(struct svc *s, char *cause, size_t size) {
        if (s->cfg->x->pidfile) {
                if (try_pidfile(s) > 0)
                        return main_found(s, cause, size);
                /* Not there yet: wait for it to be written, as long as the start may take. */
                char dir[PATH_MAX];
                snprintf(dir, sizeof dir, "%s", s->cfg->x->pidfile);
                char *slash = strrchr(dir, '/');
                if (slash == dir)
                        dir[1] = '\0';
                else if (slash)
                        *slash = '\0';
                s->rd->inotify_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
                if (s->rd->inotify_fd < 0 ||
                    inotify_add_watch(s->rd->inotify_fd, dir,
                                      IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE) < 0 ||
                    tend_watch_new(s->sv->loop, s->rd->inotify_fd, EPOLLIN, on_inotify, s,
                                   &s->rd->inotify_watch) < 0) {
                        snprintf(cause, size, "cannot watch for the pidfile '%s': %s",
                                 s->cfg->x->pidfile, strerror(errno));
                        inotify_close(s);
                        return SVC_EV_SPAWN_FAILED;
                }
                /* It may have been written between the first look and the watch. */
                if (try_pidfile(s) > 0) {
                        inotify_close(s);
                        return main_found(s, cause, size);
                }
                return SVC_EV_COUNT;
        }
        pid_t pids[64];
        int n = tend_group_members(s->group, pids, ARRAY_SIZE(pids));
        if (n <= 0) {
                snprintf(cause, size, "the start command exited and left no process running");
                return SVC_EV_EXIT;
        }
        pid_t pick = 0;
        if (n == 1) {
                pick = pids[0];
        } else {
                /* A daemon that forked away from its starter was re-parented to us. */
                pid_t self = getpid();
                int found = 0;
                for (int i = 0; i < n && i < (int)ARRAY_SIZE(pids); i++) {
                        char path[64], buf[512];
                        snprintf(path, sizeof path, "/proc/%d/stat", (int)pids[i]);
                        if (io_read_file(path, buf, sizeof buf) < 0)
                                continue;
                        const char *paren = strrchr(buf, ')');
                        int ppid = 0;
                        char st;
                        if (paren && sscanf(paren + 1, " %c %d", &st, &ppid) == 2 && ppid == self) {
                                pick = pids[i];
                                found++;
                        }
                }
                if (found != 1)
                        pick = 0;
        }
        if (pick && svc_adopt_main(s, pick) < 0)
                pick = 0;
        if (!pick)
                sv_say(s->sv, "svc '%s': %d processes left by the start command and no pidfile: "
                              "following the group", s->cfg->name, n);
        return main_found(s, cause, size);
}

void ready_cancel(struct svc *s) {
        if (!s->rd)
                return;
        s->rd->ready_watch = tend_watch_free(s->rd->ready_watch);
        s->rd->ready_fd = io_close(s->rd->ready_fd);
        tcp_close(s);
        if (s->rd->probe_timer)
                s->rd->probe_timer = tend_timer_free(s->rd->probe_timer);
        s->rd->probe_interval = 0;
        if (s->rd->probe) {
                (void)tend_proc_signal(s->rd->probe, SIGKILL);
                svc_bury(s, s->rd->probe);
                s->rd->probe = NULL;
        }
        if (s->rd->wait_stop) {
                s->rd->wait_stop = false;
                s->sv->n_wait_stop--;
        }
        inotify_close(s);
        s->rd->ready_pending = false;
        free(s->rd->ready_cause);
        s->rd->ready_cause = NULL;
}
