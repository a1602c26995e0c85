/* spawn.c — start a process: everything about the moment between "please run this" and a
 * running, registered child lives in this file.
 *
 * The child is made with CLONE_VM|CLONE_VFORK on a stack of its own, the way glibc's
 * posix_spawn does it: no page tables are copied, so a 1 GiB parent spawns as fast as a small
 * one (FACTS: fork fell from ~900/s to 44/s), and the parent thread sleeps until the child has
 * exec'd or died. Because the child shares our memory it reports a failure by writing
 * {step, errno} into the parent's spawn context before _exit: the parent reads it the moment
 * it resumes, so a failed start is returned by tend_spawn() itself and never looks like an
 * exit status. (A fork-based spawner needs a close-on-exec pipe for the same job.)
 *
 * Rules for the child side (child_main and what it calls): only async-signal-safe calls, no
 * allocation, no stdio, no sanitizer instrumentation (it runs on a stack the sanitizer does
 * not know), and every signal blocked until the dispositions are reset, so no handler of the
 * parent ever runs on the child's stack while it shares the parent's memory. */
#include "internal.h"

#include <fcntl.h>
#include <grp.h>
#include <linux/close_range.h>
#include <linux/sched.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

extern char **environ;

/* proc.c makes the handle once the child runs. */
int proc_new(tend_loop *loop, pid_t pid, int pidfd, tend_group *group, int stdio_fds[3],
             int pty_fd, uint64_t start_usec, tend_proc **ret_proc);

#define CHILD_STACK_SIZE (256u * 1024u)
#define MAX_MAPPED 64
#define CHILD_FN __attribute__((no_sanitize("address", "undefined"), noinline))

struct fd_move {
        int src;   /* fd in the child to put at dst; -1: open path */
        int dst;
        const char *path;
        int flags;
        mode_t mode;
        bool close_only;
};

struct child_ctx {
        const struct tend_spawn_opts *o;
        const char *file;        /* what to exec: a path, or a name to search in PATH */
        char *const *argv;
        char *const *envp;
        const char *path_env;    /* the PATH to search */
        char *pathbuf;           /* room for one "dir/file" */
        char **sh_argv;          /* room for {"/bin/sh", path, argv[1..], NULL} (ENOEXEC) */
        /* pid_env_name: envp is a copy whose slot pid_env_slot the child points at pid_env,
         * "NAME=" with room for the digits, which the child writes. */
        char **pid_envp;
        size_t pid_env_slot;
        char *pid_env;
        size_t pid_env_prefix;
        size_t argc;
        struct fd_move moves[MAX_MAPPED];
        size_t n_moves;
        int high_base;           /* staged fds go at or above this number */
        int cgroup_procs_fd;     /* clone() fallback: the child moves itself into the cgroup */
        bool child_joins_cgroup;
        bool handlers_cleared;   /* CLONE_CLEAR_SIGHAND did the reset of the handlers */
        int fail_step;           /* do_clone: the step of a failure before the clone, or 0 */
        int pty_dst;             /* fd number of the pty slave in the child, or -1 */
        bool do_setpgid;
        pid_t pgid;
        sigset_t final_mask;
        pid_t parent_pid;
        /* Written by the child on failure; read by the parent after the vfork wakes it. */
        volatile int err;
        volatile int step;
};

TEND_PUBLIC const char *tend_spawn_step_name(enum tend_spawn_step step) {
        static const char *const names[] = {
                [TEND_STEP_NONE] = "none",         [TEND_STEP_PREPARE] = "prepare",
                [TEND_STEP_CLONE] = "clone",       [TEND_STEP_CGROUP] = "cgroup",
                [TEND_STEP_SETSID] = "setsid",     [TEND_STEP_SETPGID] = "setpgid",
                [TEND_STEP_STDIO] = "stdio",       [TEND_STEP_FDS] = "fds",
                [TEND_STEP_RLIMIT] = "setrlimit",  [TEND_STEP_GROUPS] = "setgroups",
                [TEND_STEP_GID] = "setgid",        [TEND_STEP_UID] = "setuid",
                [TEND_STEP_CWD] = "chdir",         [TEND_STEP_UMASK] = "umask",
                [TEND_STEP_SIGNALS] = "signals",   [TEND_STEP_PDEATHSIG] = "pdeathsig",
                [TEND_STEP_CTTY] = "ctty",         [TEND_STEP_EXEC] = "exec",
        };
        if ((unsigned)step < ARRAY_SIZE(names) && names[step])
                return names[step];
        return "unknown";
}

/* ---- the child ----------------------------------------------------------------------- */

/* The kernel's struct sigaction (rt_sigaction), which is not glibc's. */
struct kernel_sigaction {
        void (*handler)(int);
        unsigned long flags;
        void (*restorer)(void);
        uint64_t mask;
};

static CHILD_FN _Noreturn void child_fail(struct child_ctx *c, int step, int err) {
        c->step = step;
        c->err = err ? err : EIO;
        _exit(127);
}

static CHILD_FN size_t child_strlen(const char *s) {
        size_t n = 0;
        while (s[n])
                n++;
        return n;
}

/* getpid() in decimal after the "NAME=" already in buf: no snprintf in the child. */
static CHILD_FN void child_format_pid(char *buf, size_t prefix, pid_t pid) {
        char digits[24];
        size_t n = 0;
        unsigned long v = (unsigned long)pid;
        do {
                digits[n++] = (char)('0' + v % 10);
                v /= 10;
        } while (v && n < sizeof digits);
        for (size_t i = 0; i < n; i++)
                buf[prefix + i] = digits[n - 1 - i];
        buf[prefix + n] = 0;
}

static CHILD_FN void child_exec(struct child_ctx *c, const char *path) {
        execve(path, c->argv, c->envp);
        if (errno == ENOEXEC) {
                /* As execvp(3): a file without a #! line is a shell script. */
                c->sh_argv[0] = (char *)"/bin/sh";
                c->sh_argv[1] = (char *)path;
                for (size_t i = 1; i < c->argc; i++)
                        c->sh_argv[i + 1] = c->argv[i];
                c->sh_argv[c->argc + 1] = NULL;
                execve("/bin/sh", c->sh_argv, c->envp);
                errno = ENOEXEC;
        }
}

static CHILD_FN int child_main(void *arg) {
        struct child_ctx *c = arg;
        const struct tend_spawn_opts *o = c->o;

        /* The parent blocked every signal before cloning; we inherited that mask. The raw
         * system call, because glibc's sigaction() refuses its reserved signals (32, 33),
         * which a caller may still have ignored and which must be reset on request too. */
        for (int s = 1; s < _NSIG; s++) {
                if (s == SIGKILL || s == SIGSTOP)
                        continue;
                if (c->handlers_cleared && !(o->flags & TEND_SPAWN_RESET_IGNORED))
                        break; /* the kernel reset the handlers; ignored ones stay */
                struct kernel_sigaction sa;
                if (syscall(SYS_rt_sigaction, s, NULL, &sa, sizeof(uint64_t)) < 0)
                        continue;
                if (sa.handler == SIG_DFL)
                        continue;
                if (sa.handler == SIG_IGN && !(o->flags & TEND_SPAWN_RESET_IGNORED))
                        continue;
                struct kernel_sigaction dfl = { .handler = SIG_DFL };
                if (syscall(SYS_rt_sigaction, s, &dfl, NULL, sizeof(uint64_t)) < 0)
                        child_fail(c, TEND_STEP_SIGNALS, errno);
        }

        if (c->child_joins_cgroup && write(c->cgroup_procs_fd, "0", 1) != 1)
                child_fail(c, TEND_STEP_CGROUP, errno);

        if (o->flags & TEND_SPAWN_SETSID) {
                if (setsid() < 0)
                        child_fail(c, TEND_STEP_SETSID, errno);
        } else if (c->do_setpgid) {
                if (setpgid(0, c->pgid) < 0)
                        child_fail(c, TEND_STEP_SETPGID, errno);
        }

        /* fds: open what must be opened here, stage every source above all targets, mark
         * everything else close-on-exec, then put each staged fd at its number. Staging first
         * means a source that sits on another entry's target is never clobbered. */
        int staged[MAX_MAPPED];
        for (size_t i = 0; i < c->n_moves; i++) {
                struct fd_move *m = &c->moves[i];
                staged[i] = -1;
                if (m->close_only)
                        continue;
                int src = m->src;
                if (src < 0) {
                        src = open(m->path, m->flags | O_CLOEXEC | O_NOCTTY, m->mode);
                        if (src < 0)
                                child_fail(c, m->dst <= 2 ? TEND_STEP_STDIO : TEND_STEP_FDS,
                                           errno);
                }
                staged[i] = fcntl(src, F_DUPFD_CLOEXEC, c->high_base);
                if (staged[i] < 0)
                        child_fail(c, m->dst <= 2 ? TEND_STEP_STDIO : TEND_STEP_FDS, errno);
        }
        if (!(o->flags & TEND_SPAWN_NO_CLOSE_FDS)) {
                if (syscall(SYS_close_range, 3u, ~0u, CLOSE_RANGE_CLOEXEC) < 0) {
                        /* Linux < 5.11: mark them one by one. */
                        struct rlimit rl;
                        int max = 65536;
                        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 65536)
                                max = (int)rl.rlim_cur;
                        for (int fd = 3; fd < max; fd++)
                                (void)fcntl(fd, F_SETFD, FD_CLOEXEC);
                }
        }
        for (size_t i = 0; i < c->n_moves; i++) {
                struct fd_move *m = &c->moves[i];
                if (m->close_only) {
                        (void)close(m->dst);
                        continue;
                }
                /* dup2 leaves the new fd without FD_CLOEXEC: it survives exec. */
                if (dup2(staged[i], m->dst) < 0)
                        child_fail(c, m->dst <= 2 ? TEND_STEP_STDIO : TEND_STEP_FDS, errno);
        }

        if (c->pty_dst >= 0 && ioctl(c->pty_dst, TIOCSCTTY, 0) < 0)
                child_fail(c, TEND_STEP_CTTY, errno);
        if ((o->flags & TEND_SPAWN_FOREGROUND) && c->do_setpgid && isatty(0)) {
                /* SIGTTOU is blocked here, so a background caller may still do this. */
                if (tcsetpgrp(0, getpid()) < 0 && errno != ENOTTY)
                        child_fail(c, TEND_STEP_CTTY, errno);
        }

        for (size_t i = 0; i < o->n_rlimits; i++)
                if (setrlimit((__rlimit_resource_t)o->rlimits[i].resource,
                              &o->rlimits[i].limit) < 0)
                        child_fail(c, TEND_STEP_RLIMIT, errno);
        if ((o->flags & TEND_SPAWN_SET_GROUPS) && setgroups(o->n_groups, o->groups) < 0)
                child_fail(c, TEND_STEP_GROUPS, errno);
        if ((o->flags & TEND_SPAWN_SET_GROUP) && setgid(o->gid) < 0)
                child_fail(c, TEND_STEP_GID, errno);
        if ((o->flags & TEND_SPAWN_SET_USER) && setuid(o->uid) < 0)
                child_fail(c, TEND_STEP_UID, errno);
        if (o->cwd && chdir(o->cwd) < 0)
                child_fail(c, TEND_STEP_CWD, errno);
        if (o->flags & TEND_SPAWN_SET_UMASK)
                umask(o->umask);
        if (o->pdeathsig) {
                if (prctl(PR_SET_PDEATHSIG, o->pdeathsig) < 0)
                        child_fail(c, TEND_STEP_PDEATHSIG, errno);
                /* FACTS: the death signal follows the thread that forked; if that thread is
                 * already gone we were re-parented and will never get it. */
                if (getppid() != c->parent_pid)
                        child_fail(c, TEND_STEP_PDEATHSIG, ESRCH);
        }

        if (sigprocmask(SIG_SETMASK, &c->final_mask, NULL) < 0)
                child_fail(c, TEND_STEP_SIGNALS, errno);

        if (c->pid_env) {
                /* Memory the parent prepared for this (CLONE_VM: it is the parent's too,
                 * which sleeps until we exec and then frees it). */
                child_format_pid(c->pid_env, c->pid_env_prefix, getpid());
                c->pid_envp[c->pid_env_slot] = c->pid_env;
        }

        bool has_slash = false;
        for (const char *p = c->file; *p; p++)
                if (*p == '/')
                        has_slash = true;
        if (has_slash || !*c->file) {
                child_exec(c, c->file);
                child_fail(c, TEND_STEP_EXEC, errno);
        }
        /* PATH search as execvp(3): ENOENT-like errors go on to the next entry, EACCES of an
         * existing file is remembered, anything else stops the search. */
        bool saw_eacces = false;
        size_t flen = child_strlen(c->file);
        const char *p = c->path_env;
        for (;;) {
                const char *end = p;
                while (*end && *end != ':')
                        end++;
                size_t dlen = (size_t)(end - p);
                char *b = c->pathbuf;
                if (dlen == 0) {
                        b[0] = '.';
                        dlen = 1;
                } else {
                        memcpy(b, p, dlen);
                }
                b[dlen] = '/';
                memcpy(b + dlen + 1, c->file, flen + 1);
                child_exec(c, b);
                switch (errno) {
                case EACCES: {
                        /* Only a file that is there but not executable makes "permission
                         * denied" the answer; a PATH directory we may not search (say
                         * /root/bin for an ordinary user) hides nothing from us, as a
                         * shell would also say "not found". */
                        struct stat st;
                        if (stat(b, &st) == 0)
                                saw_eacces = true;
                        break;
                }
                case ENOENT: case ENOTDIR: case ESTALE: case ELOOP: case ENAMETOOLONG:
                case ENODEV: case ETIMEDOUT:
                        break;
                default:
                        child_fail(c, TEND_STEP_EXEC, errno);
                }
                if (!*end)
                        break;
                p = end + 1;
        }
        child_fail(c, TEND_STEP_EXEC, saw_eacces ? EACCES : ENOENT);
}

/* ---- making the child ------------------------------------------------------------------- */

#if defined(__x86_64__)
/* clone3 with a new stack cannot return into C: the child would `ret` through a stack that
 * holds nothing. This trampoline calls fn(arg) on the new stack and exits with its result.
 * long tend_clone3_raw(struct clone_args *args, size_t size, int (*fn)(void *), void *arg) */
long tend_clone3_raw(struct clone_args *args, size_t size, int (*fn)(void *), void *arg);
__asm__(".text\n"
        ".globl tend_clone3_raw\n"
        ".hidden tend_clone3_raw\n"
        ".type tend_clone3_raw,@function\n"
        "tend_clone3_raw:\n"
        "  mov %rdx, %r8\n" /* syscall keeps r8/r9 (it clobbers rcx, r11, rax) */
        "  mov %rcx, %r9\n"
        "  mov $435, %eax\n" /* __NR_clone3 */
        "  syscall\n"
        "  test %rax, %rax\n"
        "  jnz 1f\n"
        "  xor %ebp, %ebp\n" /* child: outermost frame */
        "  mov %r9, %rdi\n"
        "  call *%r8\n"
        "  mov %eax, %edi\n"
        "  mov $60, %eax\n" /* __NR_exit */
        "  syscall\n"
        "  hlt\n"
        "1: ret\n"
        ".size tend_clone3_raw, .-tend_clone3_raw\n");
#define HAVE_CLONE3_TRAMPOLINE 1
#endif

/* 0 unknown, 1 usable, -1 refused (ENOSYS, or EPERM from a seccomp filter: FACTS). */
static int clone3_state;
/* CLONE_CLEAR_SIGHAND (Linux 5.5) with clone3: 0 unknown, 1 accepted, -1 refused (EINVAL
 * from a kernel between 5.3 and 5.5). */
static int clear_sighand_state;

/* The child's stack is kept for the next spawn instead of being mapped and unmapped for each:
 * the munmap of pages the child touched, possibly on another CPU, costs a TLB flush there,
 * and a supervisor spawns again and again. One spare, taken and given back atomically
 * (spawns may run in several threads: a second one maps its own and unmaps it after). Never
 * unmapped: 256 KiB of address space, of which only the pages the child touched are
 * resident. */
static void *spare_stack;

static void *stack_get(void) {
        void *s = __atomic_exchange_n(&spare_stack, NULL, __ATOMIC_ACQ_REL);
        if (s)
                return s;
        s = mmap(NULL, CHILD_STACK_SIZE, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
        return s == MAP_FAILED ? NULL : s;
}

static void stack_put(void *s) {
        void *none = NULL;
        if (s && !__atomic_compare_exchange_n(&spare_stack, &none, s, false, __ATOMIC_ACQ_REL,
                                              __ATOMIC_ACQUIRE))
                munmap(s, CHILD_STACK_SIZE);
}

static pid_t do_clone(struct child_ctx *c, void *stack, int cgroup_fd, int *ret_pidfd) {
        int pidfd = -1;
        if (cgroup_fd >= 0 && c->child_joins_cgroup)
                cgroup_fd = -1; /* the child moves itself in (group_spawn_migrates) */
#ifdef HAVE_CLONE3_TRAMPOLINE
        if (__atomic_load_n(&clone3_state, __ATOMIC_RELAXED) >= 0) {
                struct clone_args args;
                memset(&args, 0, sizeof args);
                args.flags = CLONE_VM | CLONE_VFORK | CLONE_PIDFD;
                args.pidfd = (uint64_t)(uintptr_t)&pidfd;
                args.exit_signal = SIGCHLD;
                args.stack = (uint64_t)(uintptr_t)stack;
                args.stack_size = CHILD_STACK_SIZE;
                if (cgroup_fd >= 0) {
                        args.flags |= CLONE_INTO_CGROUP;
                        args.cgroup = (uint64_t)cgroup_fd;
                }
                /* The kernel resets every handler to SIG_DFL (ignored signals stay ignored,
                 * as exec would keep them), so the child need not ask for each of the 64
                 * dispositions under vfork, with the parent waiting. */
                bool clear = __atomic_load_n(&clear_sighand_state, __ATOMIC_RELAXED) >= 0;
                if (clear)
                        args.flags |= CLONE_CLEAR_SIGHAND;
                c->handlers_cleared = clear;
                long r = tend_clone3_raw(&args, sizeof args, child_main, c);
                if (r == -EINVAL && clear) {
                        __atomic_store_n(&clear_sighand_state, -1, __ATOMIC_RELAXED);
                        args.flags &= ~(uint64_t)CLONE_CLEAR_SIGHAND;
                        c->handlers_cleared = false;
                        r = tend_clone3_raw(&args, sizeof args, child_main, c);
                }
                if (r > 0) {
                        __atomic_store_n(&clone3_state, 1, __ATOMIC_RELAXED);
                        if (clear)
                                __atomic_store_n(&clear_sighand_state, 1, __ATOMIC_RELAXED);
                        *ret_pidfd = pidfd;
                        return (pid_t)r;
                }
                if (r != -ENOSYS && r != -EPERM && r != -E2BIG)
                        return (pid_t)r;
                __atomic_store_n(&clone3_state, -1, __ATOMIC_RELAXED);
        }
#endif
        if (cgroup_fd >= 0) {
                /* Opened only now, when clone3 is refused: the common case never needs it. */
                c->cgroup_procs_fd = openat(cgroup_fd, "cgroup.procs", O_WRONLY | O_CLOEXEC);
                if (c->cgroup_procs_fd < 0) {
                        c->fail_step = TEND_STEP_CGROUP;
                        return -errno;
                }
                c->child_joins_cgroup = true;
        }
        c->handlers_cleared = false;
        pid_t pid = clone(child_main, (char *)stack + CHILD_STACK_SIZE,
                          CLONE_VM | CLONE_VFORK | CLONE_PIDFD | SIGCHLD, c, &pidfd);
        if (pid < 0)
                return -errno;
        *ret_pidfd = pidfd;
        return pid;
}

static const char *env_lookup(char *const *envp, const char *name) {
        size_t n = strlen(name);
        for (; envp && *envp; envp++)
                if (!strncmp(*envp, name, n) && (*envp)[n] == '=')
                        return *envp + n + 1;
        return NULL;
}

static int open_pty(const struct tend_spawn_opts *o, int *ret_master, int *ret_slave) {
        int master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
        if (master < 0)
                return -errno;
        char name[128];
        if (grantpt(master) < 0 || unlockpt(master) < 0 || ptsname_r(master, name, sizeof name)) {
                int r = -errno;
                io_close(master);
                return r;
        }
        int slave = open(name, O_RDWR | O_NOCTTY | O_CLOEXEC);
        if (slave < 0) {
                int r = -errno;
                io_close(master);
                return r;
        }
        if (o->pty.rows || o->pty.cols) {
                struct winsize ws = { .ws_row = o->pty.rows, .ws_col = o->pty.cols };
                (void)ioctl(master, TIOCSWINSZ, &ws);
        }
        *ret_master = master;
        *ret_slave = slave;
        return 0;
}

TEND_PUBLIC int tend_spawn(tend_loop *loop, const struct tend_spawn_opts *o,
                           tend_proc **ret_proc, enum tend_spawn_step *ret_step) {
        enum tend_spawn_step step = TEND_STEP_PREPARE;
        int r = 0;
        if (!loop || !o || !o->argv || !o->argv[0]) {
                r = -EINVAL;
                goto out_step;
        }
        if (o->n_fds > MAX_MAPPED - 3) {
                r = -E2BIG;
                goto out_step;
        }

        struct child_ctx *c = calloc(1, sizeof *c);
        if (!c) {
                r = -ENOMEM;
                goto out_step;
        }
        int parent_end[3] = { -1, -1, -1 }, child_end[3] = { -1, -1, -1 };
        int pty_master = -1, pty_slave = -1;
        void *stack = NULL;

        c->o = o;
        c->file = o->file ? o->file : o->argv[0];
        c->argv = (char *const *)o->argv;
        c->envp = o->envp ? (char *const *)o->envp : environ;
        c->path_env = env_lookup(c->envp, "PATH");
        if (!c->path_env)
                c->path_env = "/usr/local/bin:/usr/bin:/bin";
        c->cgroup_procs_fd = -1;
        c->pty_dst = -1;
        c->parent_pid = getpid();
        while (o->argv[c->argc])
                c->argc++;
        if (o->pid_env_name) {
                /* A copy of the environment without NAME=, plus a slot (and a buffer) the
                 * child fills with NAME=<pid>. */
                size_t nl = strlen(o->pid_env_name);
                if (!nl || strchr(o->pid_env_name, '=')) {
                        r = -EINVAL;
                        goto out;
                }
                size_t n = 0;
                for (char *const *e = c->envp; e && *e; e++)
                        n++;
                c->pid_envp = calloc(n + 2, sizeof *c->pid_envp);
                c->pid_env = malloc(nl + 1 + 24);
                if (!c->pid_envp || !c->pid_env) {
                        r = -ENOMEM;
                        goto out;
                }
                size_t k = 0;
                for (char *const *e = c->envp; e && *e; e++)
                        if (strncmp(*e, o->pid_env_name, nl) || (*e)[nl] != '=')
                                c->pid_envp[k++] = *e;
                c->pid_env_slot = k;
                c->pid_envp[k] = (char *)""; /* replaced by the child before exec */
                c->pid_envp[k + 1] = NULL;
                memcpy(c->pid_env, o->pid_env_name, nl);
                c->pid_env[nl] = '=';
                c->pid_env_prefix = nl + 1;
                c->envp = c->pid_envp;
        }
        c->pathbuf = malloc(strlen(c->path_env) + strlen(c->file) + 3);
        c->sh_argv = calloc(c->argc + 2, sizeof *c->sh_argv);
        if (!c->pathbuf || !c->sh_argv) {
                r = -ENOMEM;
                goto out;
        }

        int max_dst = 2;
        for (int i = 0; i < 3; i++) {
                const struct tend_stdio *s = &o->stdio[i];
                struct fd_move *m = &c->moves[c->n_moves];
                *m = (struct fd_move){ .src = -1, .dst = i };
                switch (s->kind) {
                case TEND_STDIO_INHERIT:
                        continue;
                case TEND_STDIO_NULL:
                        m->path = "/dev/null";
                        m->flags = O_RDWR;
                        break;
                case TEND_STDIO_FILE:
                        if (!s->path) {
                                r = -EINVAL;
                                goto out;
                        }
                        m->path = s->path;
                        m->flags = s->flags ? s->flags
                                            : (i == 0 ? O_RDONLY : O_WRONLY | O_CREAT | O_TRUNC);
                        m->mode = s->mode ? s->mode : 0666;
                        break;
                case TEND_STDIO_PIPE: {
                        int p[2];
                        if (pipe2(p, O_CLOEXEC) < 0) {
                                r = -errno;
                                goto out;
                        }
                        parent_end[i] = i == 0 ? p[1] : p[0];
                        child_end[i] = i == 0 ? p[0] : p[1];
                        m->src = child_end[i];
                        break;
                }
                case TEND_STDIO_PTY:
                        if (pty_master < 0) {
                                r = open_pty(o, &pty_master, &pty_slave);
                                if (r < 0)
                                        goto out;
                        }
                        m->src = pty_slave;
                        if (c->pty_dst < 0)
                                c->pty_dst = i;
                        break;
                case TEND_STDIO_FD:
                        if (s->fd < 0) {
                                r = -EBADF;
                                goto out;
                        }
                        m->src = s->fd;
                        break;
                case TEND_STDIO_CLOSE:
                        m->close_only = true;
                        break;
                default:
                        r = -EINVAL;
                        goto out;
                }
                c->n_moves++;
        }
        for (size_t i = 0; i < o->n_fds; i++) {
                if (o->fds[i].parent_fd < 0 || o->fds[i].child_fd < 0) {
                        r = -EBADF;
                        goto out;
                }
                c->moves[c->n_moves++] =
                        (struct fd_move){ .src = o->fds[i].parent_fd, .dst = o->fds[i].child_fd };
                if (o->fds[i].child_fd > max_dst)
                        max_dst = o->fds[i].child_fd;
        }
        c->high_base = max_dst + 1;

        /* A terminal needs a session of its own to become the controlling one. */
        unsigned flags = o->flags;
        if (pty_master >= 0 && !(flags & TEND_SPAWN_SETSID)) {
                r = -EINVAL; /* say so rather than hand out a pty that cannot be a ctty */
                goto out;
        }
        int cgroup_fd = -1;
        if (o->group && tend_group_kind(o->group) == TEND_GROUP_CGROUP) {
                cgroup_fd = group_cgroup_fd(o->group);
                if (cgroup_fd < 0) {
                        r = cgroup_fd;
                        cgroup_fd = -1;
                        step = TEND_STEP_CGROUP;
                        goto out;
                }
        } else if (o->group && !(flags & TEND_SPAWN_SETSID)) {
                c->do_setpgid = true;
                c->pgid = group_pgid(o->group);
        }
        if ((flags & TEND_SPAWN_SETPGID) && !(flags & TEND_SPAWN_SETSID) && !c->do_setpgid) {
                c->do_setpgid = true;
                c->pgid = 0;
        }
        if (o->sigmask)
                c->final_mask = *o->sigmask;
        else
                sigemptyset(&c->final_mask);

        stack = stack_get();
        if (!stack) {
                r = -errno;
                goto out;
        }
        /* A cgroup that CLONE_INTO_CGROUP no longer works for (group_spawn_migrates: after a
         * cgroup.kill) is joined by the child itself, through cgroup.procs, under clone3 too. */
        if (cgroup_fd >= 0 && group_spawn_migrates(o->group)) {
                c->cgroup_procs_fd = openat(cgroup_fd, "cgroup.procs", O_WRONLY | O_CLOEXEC);
                if (c->cgroup_procs_fd < 0) {
                        r = -errno;
                        step = TEND_STEP_CGROUP;
                        goto out;
                }
                c->child_joins_cgroup = true;
        }

        /* No handler may run in the child while it shares our memory and stack-less state;
         * the child resets dispositions and then sets its own mask. */
        sigset_t all, saved;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &saved);
        uint64_t start = tend_now_usec();
        int pidfd = -1;
        pid_t pid = do_clone(c, stack, cgroup_fd, &pidfd);
        pthread_sigmask(SIG_SETMASK, &saved, NULL);
        if (pid < 0) {
                r = pid;
                step = c->fail_step ? (enum tend_spawn_step)c->fail_step : TEND_STEP_CLONE;
                goto out;
        }
        if (c->err) {
                /* The child reported a failure and _exit'ed: collect it, report the cause. */
                r = -c->err;
                step = (enum tend_spawn_step)c->step;
                siginfo_t si;
                (void)waitid((idtype_t)P_PIDFD, (id_t)pidfd, &si, WEXITED | __WALL);
                io_close(pidfd);
                goto out;
        }

        if (o->group)
                group_note_spawned(o->group, pid);
        for (int i = 0; i < 3; i++)
                child_end[i] = io_close(child_end[i]);
        pty_slave = io_close(pty_slave);
        r = proc_new(loop, pid, pidfd, o->group, parent_end, pty_master, start, ret_proc);
        if (r < 0) {
                /* Could not even make the handle: do not leave the child behind. */
                syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0);
                siginfo_t si;
                (void)waitid((idtype_t)P_PIDFD, (id_t)pidfd, &si, WEXITED | __WALL);
                io_close(pidfd);
                goto out;
        }
        for (int i = 0; i < 3; i++)
                parent_end[i] = -1; /* now the handle's */
        pty_master = -1;
        step = TEND_STEP_NONE;
out:
        if (o->group)
                group_spawn_end(o->group);
        stack_put(stack);
        io_close(c->cgroup_procs_fd);
        for (int i = 0; i < 3; i++) {
                io_close(parent_end[i]);
                io_close(child_end[i]);
        }
        io_close(pty_master);
        io_close(pty_slave);
        free(c->pathbuf);
        free(c->sh_argv);
        free(c->pid_envp);
        free(c->pid_env);
        free(c);
out_step:
        if (r < 0 && ret_step)
                *ret_step = step;
        return r;
}
