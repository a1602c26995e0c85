/* internal.h — what the library's files share and the public header does not show. */
#ifndef TEND_INTERNAL_H
#define TEND_INTERNAL_H

#include "tend.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#define TEND_PUBLIC __attribute__((visibility("default")))
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* ---- io.c: the one layer that owns EINTR, EAGAIN and short reads/writes ----------------- */

/* read() once, retrying on EINTR. Returns bytes (0 at EOF) or -errno (-EAGAIN included). */
ssize_t io_read(int fd, void *buf, size_t len);
/* pread() once at offset, retrying on EINTR. Returns bytes (0 at EOF) or -errno. */
ssize_t io_pread(int fd, void *buf, size_t len, off_t offset);
/* write() once, retrying on EINTR. Returns bytes written (maybe fewer than len) or -errno
 * (-EAGAIN on a full non-blocking fd): for writers that queue the rest themselves. */
ssize_t io_write(int fd, const void *buf, size_t len);
/* splice() once from fd_in to fd_out at their file positions (one of them a pipe), retrying
 * on EINTR. Returns bytes moved (0: fd_in is a pipe at EOF) or -errno. */
ssize_t io_splice(int fd_in, int fd_out, size_t len, unsigned int flags);
/* Write everything, retrying on EINTR and short writes; on a non-blocking fd, waits for
 * POLLOUT when the pipe is full. Returns 0 or -errno. */
int io_write_all(int fd, const void *buf, size_t len);
/* poll() one fd for events, for at most timeout_ms (-1: no bound), EINTR retried with what
 * is left of the timeout. Returns the revents, 0 on timeout, or -errno. For the few places
 * that block on purpose outside a loop (the launch guard). */
int io_poll_one(int fd, short events, int timeout_ms);
/* Read a whole small file (pseudo-files in /proc and /sys) into buf, NUL-terminated. Returns
 * the length or -errno; -EFBIG if it does not fit. */
ssize_t io_read_file(const char *path, char *buf, size_t size);
ssize_t io_read_file_at(int dirfd, const char *path, char *buf, size_t size);
/* Open path and write text to it at once (cgroup files want one write). Returns 0 or -errno. */
int io_write_file_at(int dirfd, const char *path, const char *text);
/* close() that keeps errno and ignores EINTR (Linux always releases the fd). -1 is a no-op.
 * Returns -1 so that `fd = io_close(fd);` works. */
int io_close(int fd);
/* Set or clear O_NONBLOCK. Returns 0 or -errno. */
int io_set_nonblock(int fd, bool on);

/* ---- loop.c: the parts of the loop that proc.c and group.c use ------------------------ */

/* Register a process with the loop (so the orphan reaper never takes its status, and so the
 * loop counts it as something that can still wake it). */
void loop_proc_add(tend_loop *loop, tend_proc *p);
void loop_proc_remove(tend_loop *loop, tend_proc *p);
/* Call fn for every live registered process (fn must not add or remove any). */
void loop_proc_foreach(tend_loop *loop, void (*fn)(tend_proc *p, void *userdata),
                       void *userdata);
/* Find a live registered process by pid, or NULL. */
tend_proc *loop_proc_find(tend_loop *loop, pid_t pid);
/* Called by the loop's SIGCHLD handling (only with orphan reaping on) to let groups recheck. */
typedef void (*loop_sigchld_hook)(void *userdata);
int loop_add_sigchld_hook(tend_loop *loop, loop_sigchld_hook hook, void *userdata);
void loop_remove_sigchld_hook(tend_loop *loop, loop_sigchld_hook hook, void *userdata);
/* Keep tend_loop_run() running while some work waits on an event that no active watch,
 * timer or process stands for (a stop ladder past its last step, waiting for a process
 * group to empty through SIGCHLD). */
void loop_ref(tend_loop *loop);
void loop_unref(tend_loop *loop);
/* Run fn(arg) once the current round of dispatch is over: after every callback of the events
 * that one epoll_wait returned, before the loop waits again or tend_loop_run() looks at what
 * is alive. For work that a callback's own reaction may make needless (a group's check of
 * cgroup.events at a handle's end, which the exit callback's removal of the cgroup answers).
 * Returns 0, or -EAGAIN outside a dispatch and -ENOMEM: then the caller does it now. */
int loop_after_dispatch(tend_loop *loop, void (*fn)(void *arg), void *arg);
/* The number of the round of dispatch under way (it grows by one per epoll_wait that is
 * dispatched), or 0 outside a dispatch. */
uint32_t loop_round(const tend_loop *loop);
/* The signal mask the calling thread had before the loop blocked anything. */
const sigset_t *loop_original_mask(const tend_loop *loop);

/* ---- proc.c: for the loop's orphan reaper -------------------------------------------- */

/* The process's pidfd is readable or SIGCHLD said it is a zombie: reap it and run the exit
 * callback. */
void proc_handle_exit(tend_proc *p);

/* ---- group.c: for spawn.c ------------------------------------------------------------ */

/* The cgroup directory fd for CLONE_INTO_CGROUP (opened now, the group's until
 * group_spawn_end()), -EBADF for a process-group group, or -errno. */
int group_cgroup_fd(tend_group *g);
/* The end of every spawn into g, successful or not, after its handle was made (or not). */
void group_spawn_end(tend_group *g);
/* A live handle (tend_proc) of a process in g was made, and it has ended (reaped, lost) or
 * was freed while running. Each handle is counted once: while one lives, the group cannot
 * be empty (group.c keeps no cgroup.events fd open meanwhile). */
void group_proc_added(tend_group *g);
void group_proc_gone(tend_group *g);
/* True when a child must move itself into the group's cgroup (through cgroup.procs)
 * rather than be cloned into it (CLONE_INTO_CGROUP): see group.c. */
bool group_spawn_migrates(const tend_group *g);
/* The process group to join (0: make a new one led by the child), for PGROUP groups. */
pid_t group_pgid(const tend_group *g);
/* Tell the group a process was spawned into it (the first becomes the pgroup leader). */
void group_note_spawned(tend_group *g, pid_t pid);
/* tend_group_signal() to every member but `skip`, who was signalled on its own already. */
int group_signal_except(tend_group *g, int signo, pid_t skip);
/* The loop the group belongs to. */
tend_loop *group_loop(const tend_group *g);
/* Listeners for the populated -> empty transition, besides the public on_empty callback
 * (the stop ladder uses these). A listener may remove itself from inside the call. Each
 * (fn, userdata) pair is registered at most once. */
typedef void (*group_empty_listener)(tend_group *g, void *userdata);
int group_add_empty_listener(tend_group *g, group_empty_listener fn, void *userdata);
void group_remove_empty_listener(tend_group *g, void *userdata);
/* Where the group keeps a running group-only stop ladder (ladder.c owns what it points to);
 * tend_group_free() must call ladder_group_free() first. */
struct proc_ladder;
struct proc_ladder **group_ladder_slot(tend_group *g);

/* How many times all of /proc has been read (process-group membership), for the tests. */
unsigned long group_proc_walks(void);
/* How many times a cgroup group's cgroup.events has been read, for the tests. */
unsigned long group_events_reads(void);
/* Tests: find process-group members by walking /proc, as on a kernel without
 * /proc/PID/task/TID/children. */
extern bool group_force_proc_walk;
extern pid_t group_walk_hides; /* tests: a pid that every walk of /proc misses */

/* ---- ladder.c ----------------------------------------------------------------------- */
void ladder_group_free(tend_group *g);

/* ---- proc.c --------------------------------------------------------------------------- */
tend_loop *proc_loop(const tend_proc *p);
/* The handle's group is being freed before it: forget it (tend_proc_group() says NULL). */
void proc_detach_group(tend_proc *p);
/* The link of the loop's table of registered processes (loop.c owns it). */
tend_proc **proc_hash_next(tend_proc *p);

#endif
