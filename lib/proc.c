/* proc.c — the process handle: a pid never travels without its pidfd.
 *
 * The exit is learned from the pidfd becoming readable and collected with
 * waitid(P_PIDFD), never with waitpid(-1), so other waiters in the process keep their
 * children. If another waiter takes ours, the status is recovered from the pidfd
 * (PIDFD_INFO_EXIT, Linux >= 6.15) or reported as lost — never invented. */
#include "internal.h"

#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif

/* Linux 6.13 / 6.15 uapi, absent from older headers. The 64-byte layout is the first
 * version the kernel accepts; exit_code sits in what 6.13 called spare0. */
struct tend_pidfd_info {
        uint64_t mask;
        uint64_t cgroupid;
        uint32_t pid, tgid, ppid, ruid, rgid, euid, egid, suid, sgid, fsuid, fsgid;
        int32_t exit_code;
};
#define TEND_PIDFD_GET_INFO _IOWR(0xFF, 11, struct tend_pidfd_info)
#define TEND_PIDFD_INFO_EXIT (1ull << 3)

enum proc_state { PROC_RUNNING, PROC_EXITED, PROC_LOST };

struct tend_proc {
        tend_loop *loop;
        tend_proc *hash_next; /* the loop's table of registered processes (loop.c) */
        tend_watch *watch;
        tend_group *group;
        pid_t pid;
        int pidfd;
        int stdio_fd[3];
        int pty_fd;
        enum proc_state state;
        /* The exit, kept small: a supervisor holds a handle per service for as long as it
         * runs. struct tend_exit is built from these on demand (exit_get). */
        int wait_status;
        bool recovered;
        bool exit_notified;
        uint64_t start_usec, end_usec;
        struct rusage *rusage; /* malloc'd at the reap; NULL: none (recovered, or no memory) */
        tend_exit_cb exit_cb;
        void *exit_userdata;
        /* Stop ladder (ladder.c). */
        struct proc_ladder *ladder;
};

tend_proc **proc_hash_next(tend_proc *p) {
        return &p->hash_next;
}

/* ladder.c */
void ladder_proc_exited(tend_proc *p);
void ladder_proc_free(tend_proc *p);

struct proc_ladder **proc_ladder_slot(tend_proc *p);
struct proc_ladder **proc_ladder_slot(tend_proc *p) {
        return &p->ladder;
}

static void on_pidfd(tend_watch *w, int fd, uint32_t revents, void *userdata) {
        proc_handle_exit(userdata);
}

int proc_new(tend_loop *loop, pid_t pid, int pidfd, tend_group *group, int stdio_fds[3],
             int pty_fd, uint64_t start_usec, tend_proc **ret_proc);
int proc_new(tend_loop *loop, pid_t pid, int pidfd, tend_group *group, int stdio_fds[3],
             int pty_fd, uint64_t start_usec, tend_proc **ret_proc) {
        tend_proc *p = calloc(1, sizeof *p);
        if (!p)
                return -ENOMEM;
        p->loop = loop;
        p->pid = pid;
        p->pidfd = pidfd;
        p->group = group;
        for (int i = 0; i < 3; i++)
                p->stdio_fd[i] = stdio_fds[i];
        p->pty_fd = pty_fd;
        p->start_usec = start_usec;
        int r = tend_watch_new(loop, pidfd, EPOLLIN, on_pidfd, p, &p->watch);
        if (r < 0) {
                free(p);
                return r;
        }
        loop_proc_add(loop, p);
        group_proc_added(group);
        *ret_proc = p;
        return 0;
}

/* The handle no longer stands for a live process: reaped, lost, or freed while running. */
static void proc_unregister(tend_proc *p) {
        loop_proc_remove(p->loop, p);
        group_proc_gone(p->group);
}

void proc_detach_group(tend_proc *p) {
        p->group = NULL;
}

TEND_PUBLIC tend_proc *tend_proc_free(tend_proc *p) {
        if (!p)
                return NULL;
        ladder_proc_free(p);
        if (p->state == PROC_RUNNING)
                proc_unregister(p);
        tend_watch_free(p->watch);
        io_close(p->pidfd);
        for (int i = 0; i < 3; i++)
                io_close(p->stdio_fd[i]);
        io_close(p->pty_fd);
        free(p->rusage);
        free(p);
        return NULL;
}

tend_loop *proc_loop(const tend_proc *p) {
        return p->loop;
}

TEND_PUBLIC pid_t tend_proc_pid(const tend_proc *p) {
        return p->pid;
}
TEND_PUBLIC int tend_proc_pidfd(const tend_proc *p) {
        return p->pidfd;
}
TEND_PUBLIC tend_group *tend_proc_group(const tend_proc *p) {
        return p->group;
}
TEND_PUBLIC int tend_proc_stdio_fd(const tend_proc *p, int stream) {
        return stream >= 0 && stream < 3 ? p->stdio_fd[stream] : -1;
}
TEND_PUBLIC int tend_proc_take_stdio_fd(tend_proc *p, int stream) {
        if (stream < 0 || stream >= 3)
                return -1;
        int fd = p->stdio_fd[stream];
        p->stdio_fd[stream] = -1;
        return fd;
}
TEND_PUBLIC int tend_proc_pty_fd(const tend_proc *p) {
        return p->pty_fd;
}
TEND_PUBLIC int tend_proc_take_pty_fd(tend_proc *p) {
        int fd = p->pty_fd;
        p->pty_fd = -1;
        return fd;
}
TEND_PUBLIC bool tend_proc_exited(const tend_proc *p) {
        return p->state != PROC_RUNNING;
}
TEND_PUBLIC void tend_proc_on_exit(tend_proc *p, tend_exit_cb cb, void *userdata) {
        p->exit_cb = cb;
        p->exit_userdata = userdata;
}

static int status_from_siginfo(const siginfo_t *si) {
        switch (si->si_code) {
        case CLD_EXITED:
                return (si->si_status & 0xff) << 8;
        case CLD_DUMPED:
                return (si->si_status & 0x7f) | 0x80;
        default:
                return si->si_status & 0x7f;
        }
}

static void fill_exit(tend_proc *p, int wait_status) {
        p->wait_status = wait_status;
        p->end_usec = tend_now_usec();
}

static void exit_get(const tend_proc *p, struct tend_exit *ex) {
        memset(ex, 0, sizeof *ex);
        ex->wait_status = p->wait_status;
        if (WIFEXITED(p->wait_status)) {
                ex->code = WEXITSTATUS(p->wait_status);
        } else {
                ex->signo = WTERMSIG(p->wait_status);
                ex->core = WCOREDUMP(p->wait_status);
        }
        ex->recovered = p->recovered;
        if (p->rusage)
                ex->rusage = *p->rusage;
        ex->start_usec = p->start_usec;
        ex->end_usec = p->end_usec;
}

/* Someone else reaped our child (ECHILD). Ask the pidfd what it was.
 *
 * The kernel (>= 6.15) stores the status on the pidfd in release_task(), just before it
 * detaches the pid, and the detach wakes pidfd pollers with POLLHUP. The thief's wait marks
 * the child dead before that, and a thief preempted in between can keep the status unpublished
 * for as long as it is off the CPU (seen: 1000 sched_yield()s were not enough under load). So
 * "no status yet" is waited out on that event: POLLHUP, after which the status is either there
 * or never will be. Returns 0 (recovered), 1 (not published yet; only when !block), or
 * -TEND_ESTATUSLOST. */
static int recover_status(tend_proc *p, bool block) {
        bool released = false;
        for (;;) {
                struct tend_pidfd_info info;
                memset(&info, 0, sizeof info);
                info.mask = TEND_PIDFD_INFO_EXIT;
                int r = ioctl(p->pidfd, TEND_PIDFD_GET_INFO, &info);
                if (r == 0 && (info.mask & TEND_PIDFD_INFO_EXIT)) {
                        fill_exit(p, info.exit_code);
                        p->recovered = true;
                        return 0;
                }
                /* ESRCH while the task is being detached is transient; ENOTTY/EINVAL: no
                 * PIDFD_GET_INFO (kernel < 6.13). */
                if (r < 0 && errno != ESRCH)
                        return -TEND_ESTATUSLOST;
                if (released)
                        return -TEND_ESTATUSLOST; /* detached without a status: < 6.15 */
                struct pollfd pfd = { .fd = p->pidfd, .events = 0 };
                int n = poll(&pfd, 1, block ? -1 : 0);
                if (n > 0 && (pfd.revents & POLLHUP))
                        released = true; /* look once more: the status came before the HUP */
                else if (n < 0 && errno != EINTR)
                        return -TEND_ESTATUSLOST;
                else if (!block)
                        return 1;
        }
}

/* Reap if it has ended. Returns 1 when reaped now, 0 if still running, or < 0. */
static int proc_reap(tend_proc *p, bool block) {
        if (p->state != PROC_RUNNING)
                return 1;
        siginfo_t si;
        struct rusage ru;
        memset(&si, 0, sizeof si);
        memset(&ru, 0, sizeof ru);
        int r;
        /* The raw system call takes a struct rusage, which glibc's waitid() does not pass on;
         * __WALL because the exit signal may not be SIGCHLD (FACTS: ECHILD without it). */
        for (;;) {
                r = (int)syscall(SYS_waitid, P_PIDFD, p->pidfd, &si,
                                 WEXITED | __WALL | (block ? 0 : WNOHANG), &ru);
                if (r == 0 || errno != EINTR)
                        break;
        }
        if (r < 0) {
                if (errno != ECHILD)
                        return -errno;
                r = recover_status(p, block);
                if (r > 0) {
                        /* Wait for the pidfd's POLLHUP (epoll reports it whatever the events
                         * asked for); EPOLLIN stays set now and would wake the loop at once. */
                        if (p->watch)
                                (void)tend_watch_set_events(p->watch, 0);
                        return 0;
                }
                if (r < 0)
                        p->state = PROC_LOST;
                else
                        p->state = PROC_EXITED;
        } else {
                if (si.si_pid == 0)
                        return 0;
                fill_exit(p, status_from_siginfo(&si));
                p->rusage = malloc(sizeof *p->rusage); /* NULL: reported as zero */
                if (p->rusage)
                        *p->rusage = ru;
                p->state = PROC_EXITED;
        }
        /* Reaped: drop the pidfd so that signalling afterwards cannot reach anything. */
        proc_unregister(p);
        p->watch = tend_watch_free(p->watch);
        p->pidfd = io_close(p->pidfd);
        return 1;
}

void proc_handle_exit(tend_proc *p) {
        if (p->exit_notified)
                return;
        int r = proc_reap(p, false);
        if (r == 0)
                return;
        if (r < 0) {
                /* waitid failed for a reason other than ECHILD: nothing sane to retry. */
                p->state = PROC_LOST;
                proc_unregister(p);
                p->watch = tend_watch_free(p->watch);
                p->pidfd = io_close(p->pidfd);
        }
        p->exit_notified = true;
        ladder_proc_exited(p);
        if (p->exit_cb) {
                if (p->state == PROC_EXITED) {
                        struct tend_exit ex;
                        exit_get(p, &ex);
                        p->exit_cb(p, 0, &ex, p->exit_userdata);
                } else {
                        p->exit_cb(p, -TEND_ESTATUSLOST, NULL, p->exit_userdata);
                }
        }
}

/* The caller collected the status itself: no exit callback after this, but a running
 * ladder still learns of the end. */
static void proc_note_collected(tend_proc *p) {
        if (p->exit_notified)
                return;
        p->exit_notified = true;
        ladder_proc_exited(p);
}

static int result(const tend_proc *p, struct tend_exit *ret_exit) {
        if (p->state == PROC_LOST)
                return -TEND_ESTATUSLOST;
        if (ret_exit)
                exit_get(p, ret_exit);
        return 0;
}

TEND_PUBLIC int tend_proc_poll(tend_proc *p, struct tend_exit *ret_exit) {
        int r = proc_reap(p, false);
        if (r < 0)
                return r;
        if (r == 0)
                return -EAGAIN;
        proc_note_collected(p);
        return result(p, ret_exit);
}

TEND_PUBLIC int tend_proc_wait(tend_proc *p, struct tend_exit *ret_exit) {
        int r = proc_reap(p, true);
        if (r < 0)
                return r;
        proc_note_collected(p);
        return result(p, ret_exit);
}

static bool pid_in_group(tend_group *g, pid_t pid) {
        pid_t small[256], *pids = small;
        size_t cap = ARRAY_SIZE(small);
        bool found = false;
        for (int tries = 0; tries < 4; tries++) {
                int n = tend_group_members(g, pids, cap);
                if (n < 0)
                        break;
                if ((size_t)n <= cap) {
                        for (int i = 0; i < n && !found; i++)
                                found = pids[i] == pid;
                        break;
                }
                if (pids != small)
                        free(pids);
                cap = (size_t)n + 64;
                pids = malloc(cap * sizeof *pids);
                if (!pids)
                        return false;
        }
        if (pids != small)
                free(pids);
        return found;
}

TEND_PUBLIC int tend_proc_adopt(tend_loop *loop, pid_t pid, tend_group *group,
                                tend_proc **ret_proc) {
        if (!loop || pid <= 0 || !ret_proc)
                return -EINVAL;
        if (loop_proc_find(loop, pid))
                return -EEXIST;
        long fd = syscall(SYS_pidfd_open, pid, 0);
        if (fd < 0)
                return -errno;
        /* After the open: a pid recycled before it names a process that is not a member. */
        if (group && !pid_in_group(group, pid)) {
                io_close((int)fd);
                return -ESRCH;
        }
        int stdio[3] = { -1, -1, -1 };
        int r = proc_new(loop, pid, (int)fd, group, stdio, -1, tend_now_usec(), ret_proc);
        if (r < 0)
                io_close((int)fd);
        return r;
}

TEND_PUBLIC int tend_proc_signal(tend_proc *p, int signo) {
        if (p->state != PROC_RUNNING || p->pidfd < 0)
                return -ESRCH;
        if (syscall(SYS_pidfd_send_signal, p->pidfd, signo, NULL, 0) < 0)
                return -errno;
        return 0;
}
