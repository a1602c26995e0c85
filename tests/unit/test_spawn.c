/* test_spawn.c — tend_spawn(): what the child gets (argv, PATH search, environment, cwd,
 * umask, rlimits, every stdio kind, extra fds at given numbers, exactly those fds, a clean
 * signal state, pdeathsig, session and process group, user) and how a failed start is
 * reported: by tend_spawn() itself, with the errno and the step, never as an exit, and with
 * no child left behind (DESIGN §1 items 9 and 10).
 *
 * The child is the helper program (tests/helper.c), which prints what it sees. */
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pthread.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>

#include "harness.h"
#include "tend.h"
#include "unit_util.h"

struct fx {
        tend_loop *loop;
        char dir[512]; /* a temporary directory, removed by teardown with its files */
        char files[8][640];
        size_t n_files;
};

static int setup(void **state) {
        struct fx *f = calloc(1, sizeof *f);
        if (!f)
                return -1;
        test_alarm(40);
        if (tend_loop_new(&f->loop) < 0)
                return -1;
        *state = f;
        return 0;
}

static int teardown(void **state) {
        struct fx *f = *state;
        for (size_t i = 0; i < f->n_files; i++)
                (void)unlink(f->files[i]);
        if (f->dir[0])
                (void)rmdir(f->dir);
        tend_loop_free(f->loop);
        free(f);
        alarm(0);
        return 0;
}

/* A path in the fixture's temporary directory, removed by teardown. */
static const char *tmp_file(struct fx *f, const char *name) {
        if (!f->dir[0])
                ut_mkdtemp(f->dir, sizeof f->dir, "spawn");
        assert_true(f->n_files < 8);
        char *p = f->files[f->n_files++];
        snprintf(p, sizeof f->files[0], "%s/%.100s", f->dir, name);
        return p;
}

/* ---- exit and arguments ------------------------------------------------------------------ */

static struct tend_exit run_exit(struct fx *f, const char *const *argv) {
        struct tend_spawn_opts o = { .argv = argv };
        tend_proc *p = ut_spawn(f->loop, &o);
        struct tend_exit ex;
        assert_int_equal(tend_proc_wait(p, &ex), 0);
        tend_proc_free(p);
        return ex;
}

/* Exit codes and deaths by signal come back as they were. */
static void exit_codes(void **state) {
        struct fx *f = *state;
        static const char *const codes[] = { "0", "1", "42", "126", "127", "128", "255" };
        for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
                struct tend_exit ex = run_exit(f, UT_ARGV(helper_path(), "exit", codes[i]));
                assert_int_equal(ex.signo, 0);
                assert_int_equal(ex.code, atoi(codes[i]));
                assert_true(WIFEXITED(ex.wait_status));
                assert_int_equal(WEXITSTATUS(ex.wait_status), atoi(codes[i]));
                assert_false(ex.core);
                assert_false(ex.recovered);
        }
        struct tend_exit ex = run_exit(f, UT_ARGV(helper_path(), "signal", "TERM"));
        assert_int_equal(ex.signo, SIGTERM);
        assert_true(WIFSIGNALED(ex.wait_status));
        assert_int_equal(WTERMSIG(ex.wait_status), SIGTERM);
        ex = run_exit(f, UT_ARGV(helper_path(), "signal", "KILL"));
        assert_int_equal(ex.signo, SIGKILL);
        ex = run_exit(f, UT_ARGV(helper_path(), "abort"));
        assert_int_equal(ex.signo, SIGABRT);
        assert_false(ex.core); /* the helper sets RLIMIT_CORE 0 first */
        ut_assert_no_children();
}

/* argv reaches the child word for word, empty words and spaces included. */
static void argv_passed(void **state) {
        struct fx *f = *state;
        char out[256];
        assert_int_equal(ut_helper_output(f->loop, out, sizeof out, "echo", "a b", "", "c"), 0);
        assert_string_equal(out, "a b  c\n");
}

/* A name without a slash is searched in PATH: the caller's, or the one in envp. */
static void path_search(void **state) {
        struct fx *f = *state;
        char dir[PATH_MAX], out[256];
        snprintf(dir, sizeof dir, "%s", helper_path());
        *strrchr(dir, '/') = '\0';
        struct tend_exit ex;

        /* envp with a custom PATH: missing and empty-looking entries before the right one. */
        char path_var[2 * PATH_MAX + 64];
        snprintf(path_var, sizeof path_var, "PATH=/nonexistent-dir:/proc/self/fd/9999:%s", dir);
        const char *envp[] = { path_var, NULL };
        struct tend_spawn_opts o = { .argv = UT_ARGV("helper", "echo", "via", "envp"),
                                     .envp = envp };
        ut_run_output(f->loop, &o, out, sizeof out, &ex);
        assert_int_equal(ex.code, 0);
        assert_string_equal(out, "via envp\n");

        /* The caller's PATH when envp is NULL. */
        char *saved = getenv("PATH") ? strdup(getenv("PATH")) : NULL;
        char newpath[PATH_MAX + 64];
        snprintf(newpath, sizeof newpath, "/nonexistent-dir:%s", dir);
        assert_int_equal(setenv("PATH", newpath, 1), 0);
        struct tend_spawn_opts o2 = { .argv = UT_ARGV("helper", "echo", "via", "environ") };
        ut_run_output(f->loop, &o2, out, sizeof out, &ex);
        if (saved) {
                setenv("PATH", saved, 1);
                free(saved);
        } else {
                unsetenv("PATH");
        }
        assert_int_equal(ex.code, 0);
        assert_string_equal(out, "via environ\n");

        /* .file overrides what runs; argv[0] is then only a name. */
        struct tend_spawn_opts o3 = { .argv = UT_ARGV("no-such-program-anywhere", "echo", "x"),
                                      .file = helper_path() };
        ut_run_output(f->loop, &o3, out, sizeof out, &ex);
        assert_int_equal(ex.code, 0);
        assert_string_equal(out, "x\n");

        /* An entry holding a non-executable file of that name is passed over (execvp rules):
         * the search goes on and finds the real one. */
        const char *bad = tmp_file(f, "helper");
        ut_write_file(bad, "not a program\n", 0644);
        snprintf(path_var, sizeof path_var, "PATH=%s:%s", f->dir, dir);
        ut_run_output(f->loop, &o, out, sizeof out, &ex);
        assert_int_equal(ex.code, 0);
        assert_string_equal(out, "via envp\n");
        /* Only that entry: EACCES, reported by the spawn. */
        snprintf(path_var, sizeof path_var, "PATH=%s", f->dir);
        tend_proc *p = NULL;
        enum tend_spawn_step step = TEND_STEP_NONE;
        assert_int_equal(tend_spawn(f->loop, &o, &p, &step), -EACCES);
        assert_int_equal(step, TEND_STEP_EXEC);
        assert_null(p);
        ut_assert_no_children();
}

/* envp is the child's whole environment; NULL passes ours. */
static void envp_passed(void **state) {
        struct fx *f = *state;
        char out[256];
        struct tend_exit ex;
        const char *envp[] = { "FOO=bar baz", "EMPTY=", NULL };
        struct tend_spawn_opts o = { .argv = UT_ARGV(helper_path(), "env", "FOO"),
                                     .envp = envp };
        ut_run_output(f->loop, &o, out, sizeof out, &ex);
        assert_string_equal(out, "bar baz\n");
        o.argv = UT_ARGV(helper_path(), "env", "EMPTY");
        ut_run_output(f->loop, &o, out, sizeof out, &ex);
        assert_string_equal(out, "\n");
        o.argv = UT_ARGV(helper_path(), "env", "HOME");
        ut_run_output(f->loop, &o, out, sizeof out, &ex);
        assert_string_equal(out, "(unset)\n");

        /* An empty environment. */
        const char *none[] = { NULL };
        o.envp = none;
        o.argv = UT_ARGV(helper_path(), "env", "FOO");
        ut_run_output(f->loop, &o, out, sizeof out, &ex);
        assert_string_equal(out, "(unset)\n");

        assert_int_equal(setenv("TEND_SPAWN_TEST_VAR", "inherited", 1), 0);
        assert_int_equal(ut_helper_output(f->loop, out, sizeof out, "env", "TEND_SPAWN_TEST_VAR"),
                         0);
        unsetenv("TEND_SPAWN_TEST_VAR");
        assert_string_equal(out, "inherited\n");
}

static void cwd_set(void **state) {
        struct fx *f = *state;
        char out[PATH_MAX + 8], want[PATH_MAX + 8], real[PATH_MAX];
        struct tend_exit ex;
        (void)tmp_file(f, "unused");
        assert_non_null(realpath(f->dir, real));
        struct tend_spawn_opts o = { .argv = UT_ARGV(helper_path(), "cwd"), .cwd = f->dir };
        ut_run_output(f->loop, &o, out, sizeof out, &ex);
        snprintf(want, sizeof want, "%s\n", real);
        assert_string_equal(out, want);

        /* Relative to the caller's directory. */
        char here[PATH_MAX];
        assert_non_null(getcwd(here, sizeof here));
        o.cwd = ".";
        ut_run_output(f->loop, &o, out, sizeof out, &ex);
        snprintf(want, sizeof want, "%s\n", here);
        assert_string_equal(out, want);
}

static void umask_set(void **state) {
        struct fx *f = *state;
        char out[64], want[64];
        struct tend_exit ex;
        struct tend_spawn_opts o = { .argv = UT_ARGV(helper_path(), "umask"),
                                     .flags = TEND_SPAWN_SET_UMASK, .umask = 027 };
        ut_run_output(f->loop, &o, out, sizeof out, &ex);
        assert_string_equal(out, "0027\n");
        o.umask = 0;
        ut_run_output(f->loop, &o, out, sizeof out, &ex);
        assert_string_equal(out, "0000\n");
        /* Without the flag: ours, and ours is untouched. */
        mode_t mine = umask(0);
        umask(mine);
        o.flags = 0;
        o.umask = 0777;
        ut_run_output(f->loop, &o, out, sizeof out, &ex);
        snprintf(want, sizeof want, "%04o\n", (unsigned)mine);
        assert_string_equal(out, want);
        mode_t after = umask(0);
        umask(after);
        assert_int_equal(after, mine);
}

static void rlimits_set(void **state) {
        struct fx *f = *state;
        char out[128];
        struct tend_exit ex;
        struct tend_rlimit rl[] = {
                { RLIMIT_NOFILE, { 64, 128 } },
                { RLIMIT_CORE, { 0, 0 } },
        };
        struct tend_spawn_opts o = { .argv = UT_ARGV(helper_path(), "rlimit", "NOFILE"),
                                     .rlimits = rl, .n_rlimits = 2 };
        ut_run_output(f->loop, &o, out, sizeof out, &ex);
        assert_string_equal(out, "64 128\n");
        o.argv = UT_ARGV(helper_path(), "rlimit", "CORE");
        ut_run_output(f->loop, &o, out, sizeof out, &ex);
        assert_string_equal(out, "0 0\n");

        /* Ours are untouched. */
        struct rlimit mine;
        assert_int_equal(getrlimit(RLIMIT_NOFILE, &mine), 0);
        assert_true(mine.rlim_cur != 64);

        /* A soft limit above the hard one: refused in the child, reported with the step. */
        struct tend_rlimit badrl = { RLIMIT_NOFILE, { 200, 100 } };
        o.rlimits = &badrl;
        o.n_rlimits = 1;
        tend_proc *p = NULL;
        enum tend_spawn_step step = TEND_STEP_NONE;
        assert_int_equal(tend_spawn(f->loop, &o, &p, &step), -EINVAL);
        assert_int_equal(step, TEND_STEP_RLIMIT);
        assert_null(p);
        ut_assert_no_children();
}

/* ---- stdio ------------------------------------------------------------------------------- */

/* "fd N TARGET" lines of `helper fds -l` into targets[N] (N < 16). */
static void parse_fd_targets(const char *out, char targets[16][128]) {
        for (int i = 0; i < 16; i++)
                targets[i][0] = '\0';
        for (const char *l = out; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
                int fd;
                char target[128];
                if (sscanf(l, "fd %d %127s", &fd, target) == 2 && fd >= 0 && fd < 16)
                        snprintf(targets[fd], 128, "%s", target);
        }
}

static void pipe_target(int fd, char *buf, size_t size) {
        struct stat st;
        assert_int_equal(fstat(fd, &st), 0);
        snprintf(buf, size, "pipe:[%lu]", (unsigned long)st.st_ino);
}

/* NULL is /dev/null on each stream; CLOSE leaves the fd closed in the child. */
static void stdio_null_and_close(void **state) {
        struct fx *f = *state;
        char out[1024], t[16][128];
        struct tend_exit ex;
        struct tend_spawn_opts o = { .argv = UT_ARGV(helper_path(), "fds", "-l") };
        o.stdio[0].kind = TEND_STDIO_NULL;
        o.stdio[2].kind = TEND_STDIO_NULL;
        ut_run_output(f->loop, &o, out, sizeof out, &ex);
        parse_fd_targets(out, t);
        assert_string_equal(t[0], "/dev/null");
        assert_string_equal(t[2], "/dev/null");
        assert_memory_equal(t[1], "pipe:[", 6);
        assert_non_null(strstr(out, "fds: 0 1 2\n"));

        /* stdin closed: the helper's directory listing then takes fd 0 and leaves it out. */
        o.stdio[0].kind = TEND_STDIO_CLOSE;
        o.stdio[2].kind = TEND_STDIO_CLOSE;
        ut_run_output(f->loop, &o, out, sizeof out, &ex);
        assert_int_equal(ex.code, 0);
        assert_non_null(strstr(out, "fds: 1\n"));

        /* stdin from /dev/null: cat sees EOF at once. */
        char cat_out[16];
        assert_int_equal(ut_helper_output(f->loop, cat_out, sizeof cat_out, "cat"), 0);
        assert_string_equal(cat_out, "");
}

/* PIPE: the parent writes stdin and reads stdout and stderr, separately. */
static void stdio_pipes(void **state) {
        struct fx *f = *state;
        struct tend_spawn_opts o = { .argv = UT_ARGV(helper_path(), "cat") };
        for (int i = 0; i < 3; i++)
                o.stdio[i].kind = TEND_STDIO_PIPE;
        tend_proc *p = ut_spawn(f->loop, &o);
        int in = tend_proc_stdio_fd(p, 0), out = tend_proc_stdio_fd(p, 1),
            err = tend_proc_stdio_fd(p, 2);
        assert_true(in >= 0 && out >= 0 && err >= 0);
        assert_int_equal(tend_proc_stdio_fd(p, 3), -1);
        assert_int_equal(tend_proc_stdio_fd(p, -1), -1);
        /* Every fd the library makes is close-on-exec. */
        assert_true(fcntl(in, F_GETFD) & FD_CLOEXEC);
        assert_true(fcntl(out, F_GETFD) & FD_CLOEXEC);
        assert_int_equal(write(in, "hello\nworld\n", 12), 12);
        int taken = tend_proc_take_stdio_fd(p, 0);
        assert_int_equal(taken, in);
        assert_int_equal(tend_proc_stdio_fd(p, 0), -1);
        close(taken); /* EOF for cat */
        char buf[64];
        ut_read_all(out, buf, sizeof buf);
        assert_string_equal(buf, "hello\nworld\n");
        ut_read_all(err, buf, sizeof buf);
        assert_string_equal(buf, "");
        struct tend_exit ex;
        assert_int_equal(tend_proc_wait(p, &ex), 0);
        assert_int_equal(ex.code, 0);
        tend_proc_free(p); /* closes the stdout and stderr ends it still owns */

        /* Separate streams: stderr text does not show on stdout. */
        struct tend_spawn_opts o2 = { .argv = UT_ARGV(helper_path(), "stderr", "to", "err") };
        o2.stdio[1].kind = TEND_STDIO_PIPE;
        o2.stdio[2].kind = TEND_STDIO_PIPE;
        p = ut_spawn(f->loop, &o2);
        ut_read_all(tend_proc_stdio_fd(p, 1), buf, sizeof buf);
        assert_string_equal(buf, "");
        ut_read_all(tend_proc_stdio_fd(p, 2), buf, sizeof buf);
        assert_string_equal(buf, "to err\n");
        assert_int_equal(tend_proc_wait(p, &ex), 0);
        tend_proc_free(p);
}

/* FILE: stdout to a file (created, truncated), stdin from a file, append with flags. */
static void stdio_files(void **state) {
        struct fx *f = *state;
        const char *path = tmp_file(f, "out.txt");
        ut_write_file(path, "old contents that must go away\n", 0600);
        struct tend_spawn_opts o = { .argv = UT_ARGV(helper_path(), "echo", "to", "file") };
        o.stdio[1] = (struct tend_stdio){ .kind = TEND_STDIO_FILE, .path = path };
        struct tend_exit ex;
        tend_proc *p = ut_spawn(f->loop, &o);
        assert_int_equal(tend_proc_wait(p, &ex), 0);
        assert_int_equal(ex.code, 0);
        assert_int_equal(tend_proc_stdio_fd(p, 1), -1);
        tend_proc_free(p);

        /* Append to it. */
        o.argv = UT_ARGV(helper_path(), "echo", "more");
        o.stdio[1].flags = O_WRONLY | O_APPEND;
        p = ut_spawn(f->loop, &o);
        assert_int_equal(tend_proc_wait(p, &ex), 0);
        tend_proc_free(p);

        /* And read it back through the child's stdin. */
        struct tend_spawn_opts o2 = { .argv = UT_ARGV(helper_path(), "cat") };
        o2.stdio[0] = (struct tend_stdio){ .kind = TEND_STDIO_FILE, .path = path };
        char out[128];
        ut_run_output(f->loop, &o2, out, sizeof out, &ex);
        assert_string_equal(out, "to file\nmore\n");

        /* A new file gets 0666 minus the umask, or the mode asked for. */
        const char *fresh = tmp_file(f, "fresh.txt");
        o.argv = UT_ARGV(helper_path(), "echo", "x");
        o.stdio[1] = (struct tend_stdio){ .kind = TEND_STDIO_FILE, .path = fresh,
                                          .flags = O_WRONLY | O_CREAT | O_EXCL, .mode = 0640 };
        o.flags = TEND_SPAWN_SET_UMASK;
        o.umask = 0;
        p = ut_spawn(f->loop, &o);
        assert_int_equal(tend_proc_wait(p, &ex), 0);
        tend_proc_free(p);
        struct stat st;
        assert_int_equal(stat(fresh, &st), 0);
        assert_int_equal(st.st_mode & 0777, 0640);
}

/* FD: a dup of the caller's fd, which the caller keeps. */
static void stdio_fd(void **state) {
        struct fx *f = *state;
        int p[2];
        assert_int_equal(pipe2(p, O_CLOEXEC), 0);
        struct tend_spawn_opts o = { .argv = UT_ARGV(helper_path(), "echo", "through", "fd") };
        o.stdio[1] = (struct tend_stdio){ .kind = TEND_STDIO_FD, .fd = p[1] };
        o.stdio[2] = (struct tend_stdio){ .kind = TEND_STDIO_FD, .fd = p[1] };
        tend_proc *proc = ut_spawn(f->loop, &o);
        struct tend_exit ex;
        assert_int_equal(tend_proc_wait(proc, &ex), 0);
        tend_proc_free(proc);
        assert_true(fcntl(p[1], F_GETFD) >= 0); /* still ours */
        assert_true(fcntl(p[1], F_GETFD) & FD_CLOEXEC);
        close(p[1]);
        char buf[64];
        ut_read_all(p[0], buf, sizeof buf);
        close(p[0]);
        assert_string_equal(buf, "through fd\n");

        /* A negative fd is refused before anything starts. */
        o.stdio[1].fd = -1;
        tend_proc *none = NULL;
        enum tend_spawn_step step = TEND_STEP_NONE;
        assert_int_equal(tend_spawn(f->loop, &o, &none, &step), -EBADF);
        assert_null(none);
        ut_assert_no_children();
}

/* PTY with SETSID: stdin and stdout are the terminal, it is the controlling one, and the child
 * leads the session and the foreground group; the size asked for is set. */
static void stdio_pty(void **state) {
        struct fx *f = *state;
        struct tend_spawn_opts o = { .argv = UT_ARGV(helper_path(), "tty"),
                                     .flags = TEND_SPAWN_SETSID };
        for (int i = 0; i < 3; i++)
                o.stdio[i].kind = TEND_STDIO_PTY;
        o.pty.rows = 33;
        o.pty.cols = 111;
        tend_proc *p = ut_spawn(f->loop, &o);
        int master = tend_proc_pty_fd(p);
        assert_true(master >= 0);
        assert_true(fcntl(master, F_GETFD) & FD_CLOEXEC);
        struct winsize ws;
        assert_int_equal(ioctl(master, TIOCGWINSZ, &ws), 0);
        assert_int_equal(ws.ws_row, 33);
        assert_int_equal(ws.ws_col, 111);
        char out[256], want[256];
        ut_read_all(master, out, sizeof out);
        pid_t pid = tend_proc_pid(p);
        snprintf(want, sizeof want, "stdin=1 stdout=1 ctty=1 fg=%d pgid=%d sid=%d\r\n", (int)pid,
                 (int)pid, (int)pid);
        assert_string_equal(out, want);
        struct tend_exit ex;
        assert_int_equal(tend_proc_wait(p, &ex), 0);
        assert_int_equal(ex.code, 0);
        int taken = tend_proc_take_pty_fd(p);
        assert_int_equal(taken, master);
        assert_int_equal(tend_proc_pty_fd(p), -1);
        close(taken);
        tend_proc_free(p);

        /* Only stdout on the pty, stdin from /dev/null. */
        o.stdio[0].kind = TEND_STDIO_NULL;
        o.stdio[2].kind = TEND_STDIO_NULL;
        p = ut_spawn(f->loop, &o);
        ut_read_all(tend_proc_pty_fd(p), out, sizeof out);
        snprintf(want, sizeof want, "stdin=0 stdout=1 ctty=1 fg=%d pgid=%d sid=%d\r\n",
                 (int)tend_proc_pid(p), (int)tend_proc_pid(p), (int)tend_proc_pid(p));
        assert_string_equal(out, want);
        assert_int_equal(tend_proc_wait(p, &ex), 0);
        tend_proc_free(p);

        /* A pty without a new session cannot become the controlling terminal: refused. */
        o.flags = 0;
        tend_proc *none = NULL;
        enum tend_spawn_step step = TEND_STEP_NONE;
        assert_int_equal(tend_spawn(f->loop, &o, &none, &step), -EINVAL);
        assert_null(none);
        ut_assert_no_children();
}

/* ---- extra fds and fd hygiene ------------------------------------------------------------ */

/* Move fd to a number >= 100 (close-on-exec) and close the original. */
static int move_high(int fd) {
        int h = fcntl(fd, F_DUPFD_CLOEXEC, 100);
        assert_true(h >= 100);
        close(fd);
        return h;
}

/* Extra fds land at the numbers asked for, including a swap (parent 4 -> child 5 and parent
 * 5 -> child 4, which needs staging) and an identity map (parent 7 -> child 7, which must
 * lose its close-on-exec flag); the parent keeps its fds. */
static void fds_mapped_with_swap(void **state) {
        struct fx *f = *state;
        int a[2], b[2], c[2];
        assert_int_equal(pipe2(a, O_CLOEXEC), 0);
        assert_int_equal(pipe2(b, O_CLOEXEC), 0);
        assert_int_equal(pipe2(c, O_CLOEXEC), 0);
        for (int i = 0; i < 2; i++) {
                a[i] = move_high(a[i]);
                b[i] = move_high(b[i]);
                c[i] = move_high(c[i]);
        }
        /* The loop's own fds sit low: make it again once 4, 5 and 7 are taken. */
        f->loop = tend_loop_free(f->loop);
        for (int fd = 4; fd <= 7; fd++)
                if (fcntl(fd, F_GETFD) >= 0)
                        fail_msg("fd %d is already in use in the test process", fd);
        assert_int_equal(dup3(a[1], 4, O_CLOEXEC), 4);
        assert_int_equal(dup3(b[1], 5, O_CLOEXEC), 5);
        assert_int_equal(dup3(c[1], 7, O_CLOEXEC), 7);
        assert_int_equal(tend_loop_new(&f->loop), 0);
        char ta[64], tb[64], tc[64];
        pipe_target(a[1], ta, sizeof ta);
        pipe_target(b[1], tb, sizeof tb);
        pipe_target(c[1], tc, sizeof tc);

        struct tend_fd_map map[] = { { 4, 5 }, { 5, 4 }, { 7, 7 } };
        struct tend_spawn_opts o = { .argv = UT_ARGV(helper_path(), "fds", "-l"), .fds = map,
                                     .n_fds = 3 };
        char out[2048], t[16][128];
        struct tend_exit ex;
        ut_run_output(f->loop, &o, out, sizeof out, &ex);
        assert_int_equal(ex.code, 0);
        parse_fd_targets(out, t);
        assert_non_null(strstr(out, "fds: 0 1 2 4 5 7\n"));
        assert_string_equal(t[5], ta);
        assert_string_equal(t[4], tb);
        assert_string_equal(t[7], tc);

        /* The parent still has them, unchanged and close-on-exec. */
        char now[64];
        pipe_target(4, now, sizeof now);
        assert_string_equal(now, ta);
        pipe_target(5, now, sizeof now);
        assert_string_equal(now, tb);
        assert_true(fcntl(4, F_GETFD) & FD_CLOEXEC);
        assert_true(fcntl(7, F_GETFD) & FD_CLOEXEC);

        /* Data written by the child on the mapped fds goes to the right pipes. */
        struct tend_fd_map map2[] = { { 4, 1 } };
        struct tend_spawn_opts o2 = { .argv = UT_ARGV(helper_path(), "echo", "via", "4"),
                                      .fds = map2, .n_fds = 1 };
        tend_proc *p = ut_spawn(f->loop, &o2);
        assert_int_equal(tend_proc_wait(p, &ex), 0);
        tend_proc_free(p);
        close(4);
        close(a[1]);
        char buf[64];
        ut_read_all(a[0], buf, sizeof buf);
        assert_string_equal(buf, "via 4\n");

        close(5);
        close(7);
        close(a[0]);
        close(b[0]);
        close(b[1]);
        close(c[0]);
        close(c[1]);

        /* A parent fd that is not open: reported with the fds step. */
        int closed = move_high(open("/dev/null", O_RDONLY | O_CLOEXEC));
        close(closed);
        struct tend_fd_map bad[] = { { closed, 9 } };
        o.fds = bad;
        o.n_fds = 1;
        tend_proc *none = NULL;
        enum tend_spawn_step step = TEND_STEP_NONE;
        assert_int_equal(tend_spawn(f->loop, &o, &none, &step), -EBADF);
        assert_int_equal(step, TEND_STEP_FDS);
        assert_null(none);
        struct tend_fd_map neg[] = { { -1, 9 } };
        o.fds = neg;
        assert_int_equal(tend_spawn(f->loop, &o, &none, &step), -EBADF);
        assert_null(none);
        ut_assert_no_children();
}

/* The child gets exactly 0, 1, 2 and what was mapped, even when the caller has an fd open
 * without O_CLOEXEC; NO_CLOSE_FDS lets such an fd through. */
static void fds_hygiene(void **state) {
        struct fx *f = *state;
        int leak = open("/dev/null", O_RDONLY); /* deliberately without O_CLOEXEC */
        assert_true(leak > 2);
        int leak2 = fcntl(leak, F_DUPFD, 40); /* and one further up */
        assert_true(leak2 >= 40);
        char out[1024], want[64];
        struct tend_exit ex;
        struct tend_spawn_opts o = { .argv = UT_ARGV(helper_path(), "fds") };
        o.stdio[0].kind = TEND_STDIO_NULL;
        ut_run_output(f->loop, &o, out, sizeof out, &ex);
        assert_string_equal(out, "fds: 0 1 2\n");

        int p[2];
        assert_int_equal(pipe2(p, O_CLOEXEC), 0);
        struct tend_fd_map map[] = { { p[1], 9 } };
        o.fds = map;
        o.n_fds = 1;
        ut_run_output(f->loop, &o, out, sizeof out, &ex);
        assert_string_equal(out, "fds: 0 1 2 9\n");

        o.flags = TEND_SPAWN_NO_CLOSE_FDS;
        o.fds = NULL;
        o.n_fds = 0;
        ut_run_output(f->loop, &o, out, sizeof out, &ex);
        snprintf(want, sizeof want, " %d", leak);
        assert_non_null(strstr(out, want));
        snprintf(want, sizeof want, " %d", leak2);
        assert_non_null(strstr(out, want));
        close(leak);
        close(leak2);
        close(p[0]);
        close(p[1]);
}

/* ---- signals ----------------------------------------------------------------------------- */

struct sigstatus {
        unsigned long long blk, ign, cgt;
};

static struct sigstatus run_status(struct fx *f, struct tend_spawn_opts *o) {
        char out[1024];
        struct tend_exit ex;
        o->argv = UT_ARGV(helper_path(), "status");
        ut_run_output(f->loop, o, out, sizeof out, &ex);
        assert_int_equal(ex.code, 0);
        struct sigstatus s = { 0 };
        const char *b = strstr(out, "SigBlk:"), *i = strstr(out, "SigIgn:"),
                   *c = strstr(out, "SigCgt:");
        assert_non_null(b);
        assert_non_null(i);
        assert_non_null(c);
        assert_int_equal(sscanf(b, "SigBlk: %llx", &s.blk), 1);
        assert_int_equal(sscanf(i, "SigIgn: %llx", &s.ign), 1);
        assert_int_equal(sscanf(c, "SigCgt: %llx", &s.cgt), 1);
        /* An ASan-built helper catches these itself. */
        s.cgt &= ~((1ull << (SIGBUS - 1)) | (1ull << (SIGFPE - 1)) | (1ull << (SIGSEGV - 1)));
        return s;
}

#define BIT(sig) (1ull << ((sig) - 1))

static void on_term_handler(int signo) {
}

static void on_loop_sig(tend_signal *s, const struct signalfd_siginfo *i, void *u) {
}

/* The caller blocks SIGUSR1, ignores SIGINT, has a SIGTERM handler, and the loop blocks
 * SIGHUP for its signalfd: the child starts with an empty mask, SIGINT still ignored (as exec
 * always did, nohup relies on it), no handler; RESET_IGNORED resets the ignored ones too;
 * sigmask hands on a given mask. */
static void signal_hygiene(void **state) {
        struct fx *f = *state;
        sigset_t usr1, old_mask;
        sigemptyset(&usr1);
        sigaddset(&usr1, SIGUSR1);
        assert_int_equal(pthread_sigmask(SIG_BLOCK, &usr1, &old_mask), 0);
        struct sigaction ign = { .sa_handler = SIG_IGN }, handler = { .sa_handler = on_term_handler },
                         old_int, old_term;
        sigemptyset(&ign.sa_mask);
        sigemptyset(&handler.sa_mask);
        assert_int_equal(sigaction(SIGINT, &ign, &old_int), 0);
        assert_int_equal(sigaction(SIGTERM, &handler, &old_term), 0);
        tend_signal *hup = NULL;
        assert_int_equal(tend_signal_new(f->loop, SIGHUP, on_loop_sig, NULL, &hup), 0);

        struct tend_spawn_opts o = { 0 };
        o.stdio[0].kind = TEND_STDIO_NULL;
        struct sigstatus s = run_status(f, &o);
        assert_int_equal(s.blk, 0);
        assert_true(s.ign & BIT(SIGINT));
        assert_false(s.ign & BIT(SIGTERM));
        assert_int_equal(s.cgt, 0);

        o.flags = TEND_SPAWN_RESET_IGNORED;
        s = run_status(f, &o);
        assert_int_equal(s.blk, 0);
        assert_int_equal(s.ign, 0);
        assert_int_equal(s.cgt, 0);

        sigset_t handed;
        sigemptyset(&handed);
        sigaddset(&handed, SIGUSR2);
        sigaddset(&handed, SIGWINCH);
        o.flags = 0;
        o.sigmask = &handed;
        s = run_status(f, &o);
        assert_int_equal(s.blk, BIT(SIGUSR2) | BIT(SIGWINCH));
        assert_int_equal(s.cgt, 0);

        /* Ours is as it was: the spawn blocked everything only around the clone. */
        sigset_t now;
        assert_int_equal(pthread_sigmask(SIG_SETMASK, NULL, &now), 0);
        assert_int_equal(sigismember(&now, SIGUSR1), 1);
        assert_int_equal(sigismember(&now, SIGHUP), 1);
        assert_int_equal(sigismember(&now, SIGTERM), 0);
        struct sigaction cur;
        assert_int_equal(sigaction(SIGTERM, NULL, &cur), 0);
        assert_ptr_equal(cur.sa_handler, on_term_handler);

        tend_signal_free(hup);
        sigaction(SIGINT, &old_int, NULL);
        sigaction(SIGTERM, &old_term, NULL);
        pthread_sigmask(SIG_SETMASK, &old_mask, NULL);
}

/* pdeathsig is set in the child; by default there is none. */
static void pdeathsig_set(void **state) {
        struct fx *f = *state;
        char out[64], want[16];
        struct tend_exit ex;
        struct tend_spawn_opts o = { .argv = UT_ARGV(helper_path(), "pdeathsig"),
                                     .pdeathsig = SIGUSR2 };
        ut_run_output(f->loop, &o, out, sizeof out, &ex);
        snprintf(want, sizeof want, "%d\n", SIGUSR2);
        assert_string_equal(out, want);
        o.pdeathsig = 0;
        ut_run_output(f->loop, &o, out, sizeof out, &ex);
        assert_string_equal(out, "0\n");
}

/* ---- session and process group ----------------------------------------------------------- */

static void pgid_of(struct fx *f, unsigned flags, int ids[4]) {
        char out[128];
        struct tend_exit ex;
        struct tend_spawn_opts o = { .argv = UT_ARGV(helper_path(), "pgid"), .flags = flags };
        o.stdio[0].kind = TEND_STDIO_NULL;
        ut_run_output(f->loop, &o, out, sizeof out, &ex);
        assert_int_equal(sscanf(out, "%d %d %d %d", &ids[0], &ids[1], &ids[2], &ids[3]), 4);
}

static void setsid_setpgid(void **state) {
        struct fx *f = *state;
        int ids[4]; /* pid pgid sid ppid */
        pgid_of(f, 0, ids);
        assert_int_equal(ids[1], getpgrp());
        assert_int_equal(ids[2], getsid(0));
        assert_int_equal(ids[3], getpid());

        pgid_of(f, TEND_SPAWN_SETPGID, ids);
        assert_int_equal(ids[1], ids[0]);
        assert_int_equal(ids[2], getsid(0));
        assert_int_equal(ids[3], getpid());

        pgid_of(f, TEND_SPAWN_SETSID, ids);
        assert_int_equal(ids[1], ids[0]);
        assert_int_equal(ids[2], ids[0]);
        assert_int_equal(ids[3], getpid());

        pgid_of(f, TEND_SPAWN_SETSID | TEND_SPAWN_SETPGID, ids);
        assert_int_equal(ids[1], ids[0]);
        assert_int_equal(ids[2], ids[0]);
}

/* ---- users ------------------------------------------------------------------------------- */

/* In a forked child that has given up root (uid/gid 65534), try to spawn as root: the spawn
 * must fail with EPERM at the step that switches. Writes "errno step" for each case to fd. */
static void unprivileged_spawns(int fd) {
        if (setgroups(0, NULL) < 0 || setgid(65534) < 0 || setuid(65534) < 0)
                _exit(90);
        tend_loop *loop = NULL;
        if (tend_loop_new(&loop) < 0)
                _exit(91);
        static const gid_t root_group[] = { 0 };
        struct tend_spawn_opts cases[3] = {
                { .flags = TEND_SPAWN_SET_USER, .uid = 0 },
                { .flags = TEND_SPAWN_SET_GROUP, .gid = 0 },
                { .flags = TEND_SPAWN_SET_GROUPS, .groups = root_group, .n_groups = 1 },
        };
        char text[128];
        size_t len = 0;
        for (int i = 0; i < 3; i++) {
                cases[i].argv = UT_ARGV(helper_path(), "exit", "0");
                tend_proc *p = NULL;
                enum tend_spawn_step step = TEND_STEP_NONE;
                int r = tend_spawn(loop, &cases[i], &p, &step);
                len += (size_t)snprintf(text + len, sizeof text - len, "%d %d %d\n", r, (int)step,
                                        p == NULL);
                if (p) {
                        struct tend_exit ex;
                        tend_proc_wait(p, &ex);
                        tend_proc_free(p);
                }
        }
        tend_loop_free(loop);
        if (write(fd, text, len) != (ssize_t)len)
                _exit(92);
        _exit(0);
}

/* A spawn that switches user: as root it works (`helper ids` shows the new ids); without the
 * privilege the spawn fails with EPERM and the step, never as an exit. */
static void switch_user(void **state) {
        struct fx *f = *state;
        if (geteuid() != 0) {
                struct tend_spawn_opts o = { .argv = UT_ARGV(public_helper_path(), "exit", "0"),
                                             .flags = TEND_SPAWN_SET_USER, .uid = 0 };
                tend_proc *p = NULL;
                enum tend_spawn_step step = TEND_STEP_NONE;
                assert_int_equal(tend_spawn(f->loop, &o, &p, &step), -EPERM);
                assert_int_equal(step, TEND_STEP_UID);
                assert_null(p);
                ut_assert_no_children();
                skip_with_reason("the switch to another user needs root (running as uid %u); "
                                 "only the EPERM case ran",
                                 (unsigned)geteuid());
        }
        /* Root: switch to nobody. */
        char out[256];
        struct tend_exit ex;
        static const gid_t groups[] = { 100, 65534 };
        struct tend_spawn_opts o = { .argv = UT_ARGV(public_helper_path(), "ids"),
                                     .flags = TEND_SPAWN_SET_USER | TEND_SPAWN_SET_GROUP |
                                              TEND_SPAWN_SET_GROUPS,
                                     .uid = 65534, .gid = 65534, .groups = groups,
                                     .n_groups = 2 };
        o.stdio[0].kind = TEND_STDIO_NULL;
        ut_run_output(f->loop, &o, out, sizeof out, &ex);
        assert_int_equal(ex.code, 0);
        assert_string_equal(out, "65534 65534 100 65534\n"); /* the kernel sorts the groups */
        /* Only the user: the groups stay root's. */
        o.flags = TEND_SPAWN_SET_USER;
        ut_run_output(f->loop, &o, out, sizeof out, &ex);
        assert_memory_equal(out, "65534 0", 7);

        /* And the unprivileged side, in a child that dropped root. */
        int p[2];
        assert_int_equal(pipe2(p, O_CLOEXEC), 0);
        pid_t child = fork();
        assert_true(child >= 0);
        if (child == 0) {
                close(p[0]);
                unprivileged_spawns(p[1]);
        }
        close(p[1]);
        char text[256];
        ut_read_all(p[0], text, sizeof text);
        close(p[0]);
        int status;
        assert_int_equal(waitpid(child, &status, 0), child);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
        char want[256];
        snprintf(want, sizeof want, "%d %d 1\n%d %d 1\n%d %d 1\n", -EPERM, TEND_STEP_UID, -EPERM,
                 TEND_STEP_GID, -EPERM, TEND_STEP_GROUPS);
        assert_string_equal(text, want);
        ut_assert_no_children();
}

/* ---- failures ---------------------------------------------------------------------------- */

static void expect_failure(struct fx *f, const struct tend_spawn_opts *o, int err,
                           enum tend_spawn_step want_step) {
        tend_proc *p = (tend_proc *)0x1; /* must stay untouched */
        enum tend_spawn_step step = TEND_STEP_NONE;
        int r = tend_spawn(f->loop, o, &p, &step);
        if (r != err || step != want_step)
                fail_msg("spawn %s: got %d (%s) at %s, expected %d (%s) at %s", o->argv[0], r,
                         tend_strerror(r), tend_spawn_step_name(step), err, tend_strerror(err),
                         tend_spawn_step_name(want_step));
        assert_ptr_equal(p, (tend_proc *)0x1);
        /* Nothing left: no zombie to reap, nothing running, nothing for the loop to do. */
        ut_assert_no_children();
        assert_int_equal(tend_loop_run(f->loop), 0);
        assert_int_equal(tend_loop_run_once(f->loop, 0), 0);
}

/* Every failure to start is returned by tend_spawn() with the errno and the step. */
static void exec_failures(void **state) {
        struct fx *f = *state;
        struct tend_spawn_opts o = { .argv = UT_ARGV("/nonexistent/program") };
        expect_failure(f, &o, -ENOENT, TEND_STEP_EXEC);

        o.argv = UT_ARGV("tend-no-such-command-anywhere");
        expect_failure(f, &o, -ENOENT, TEND_STEP_EXEC);

        const char *plain = tmp_file(f, "not-executable");
        ut_write_file(plain, "#!/bin/sh\nexit 0\n", 0644);
        o.argv = UT_ARGV(plain);
        expect_failure(f, &o, -EACCES, TEND_STEP_EXEC);

        o.argv = UT_ARGV(f->dir); /* a directory */
        expect_failure(f, &o, -EACCES, TEND_STEP_EXEC);

        /* A script whose interpreter is missing. */
        const char *badint = tmp_file(f, "bad-interpreter");
        ut_write_file(badint, "#!/nonexistent/interpreter\n", 0755);
        o.argv = UT_ARGV(badint);
        expect_failure(f, &o, -ENOENT, TEND_STEP_EXEC);

        o.argv = UT_ARGV(helper_path(), "exit", "0");
        o.cwd = "/nonexistent/dir";
        expect_failure(f, &o, -ENOENT, TEND_STEP_CWD);
        o.cwd = plain;
        expect_failure(f, &o, -ENOTDIR, TEND_STEP_CWD);
        o.cwd = NULL;

        o.stdio[1] = (struct tend_stdio){ .kind = TEND_STDIO_FILE, .path = "/nonexistent/dir/f" };
        expect_failure(f, &o, -ENOENT, TEND_STEP_STDIO);
        o.stdio[1] = (struct tend_stdio){ .kind = TEND_STDIO_FILE, .path = f->dir,
                                          .flags = O_WRONLY };
        expect_failure(f, &o, -EISDIR, TEND_STEP_STDIO);
        o.stdio[1] = (struct tend_stdio){ .kind = TEND_STDIO_FILE, .path = NULL };
        expect_failure(f, &o, -EINVAL, TEND_STEP_PREPARE);
        o.stdio[1] = (struct tend_stdio){ 0 };

        /* Bad arguments. */
        tend_proc *p = NULL;
        enum tend_spawn_step step = TEND_STEP_NONE;
        assert_int_equal(tend_spawn(f->loop, NULL, &p, &step), -EINVAL);
        struct tend_spawn_opts empty = { .argv = UT_ARGV(NULL) };
        assert_int_equal(tend_spawn(f->loop, &empty, &p, &step), -EINVAL);
        assert_int_equal(step, TEND_STEP_PREPARE);
        assert_null(p);

        /* The failure never shows up later as an exit: the loop has nothing. */
        assert_int_equal(tend_loop_run_once(f->loop, 0), 0);
        assert_string_equal(tend_spawn_step_name(TEND_STEP_EXEC), "exec");
        assert_string_equal(tend_spawn_step_name(TEND_STEP_CWD), "chdir");
        assert_string_equal(tend_spawn_step_name((enum tend_spawn_step)999), "unknown");
}

/* A file without #! is run by /bin/sh (as execvp does), directly and through PATH. */
static void script_without_shebang(void **state) {
        struct fx *f = *state;
        const char *script = tmp_file(f, "plain-script");
        ut_write_file(script, "echo \"scripted [$1] [$2]\"\nexit 3\n", 0755);
        char out[128];
        struct tend_exit ex;
        struct tend_spawn_opts o = { .argv = UT_ARGV(script, "one", "two words") };
        ut_run_output(f->loop, &o, out, sizeof out, &ex);
        assert_string_equal(out, "scripted [one] [two words]\n");
        assert_int_equal(ex.code, 3);

        char path_var[PATH_MAX + 8];
        snprintf(path_var, sizeof path_var, "PATH=%s", f->dir);
        const char *envp[] = { path_var, NULL };
        struct tend_spawn_opts o2 = { .argv = UT_ARGV("plain-script", "x"), .envp = envp };
        ut_run_output(f->loop, &o2, out, sizeof out, &ex);
        assert_string_equal(out, "scripted [x] []\n");
        assert_int_equal(ex.code, 3);
}

/* pid_env_name: NAME=<the child's own pid> in its environment, replacing an old NAME=. */
static void pid_env_set(void **state) {
        struct fx *f = *state;
        char out[64], want[64];
        struct tend_exit ex;
        const char *envp[] = { "WATCHDOG_PID=1", "FOO=bar", "WATCHDOG_PIDX=2", NULL };
        for (int round = 0; round < 3; round++) {
                const char *argv[] = { helper_path(), "env",
                                       round == 1 ? "WATCHDOG_PIDX" : "WATCHDOG_PID", NULL };
                struct tend_spawn_opts o = { .argv = argv, .envp = round == 2 ? NULL : envp,
                                             .pid_env_name = "WATCHDOG_PID" };
                o.stdio[1].kind = TEND_STDIO_PIPE;
                tend_proc *p = ut_spawn(f->loop, &o);
                pid_t pid = tend_proc_pid(p);
                int fd = tend_proc_take_stdio_fd(p, 1);
                ut_read_all(fd, out, sizeof out);
                close(fd);
                assert_int_equal(tend_proc_wait(p, &ex), 0);
                tend_proc_free(p);
                if (round == 1)
                        snprintf(want, sizeof want, "2\n"); /* a longer name is not NAME */
                else
                        snprintf(want, sizeof want, "%d\n", (int)pid);
                assert_string_equal(out, want);
        }
        /* The other variables are all there, once. */
        struct tend_spawn_opts o = { .argv = UT_ARGV(helper_path(), "env", "FOO"), .envp = envp,
                                     .pid_env_name = "WATCHDOG_PID" };
        ut_run_output(f->loop, &o, out, sizeof out, &ex);
        assert_string_equal(out, "bar\n");
        /* A name with '=' is refused before anything runs. */
        struct tend_spawn_opts bad = { .argv = UT_ARGV(helper_path(), "exit", "0"),
                                       .pid_env_name = "A=B" };
        tend_proc *p = NULL;
        enum tend_spawn_step step;
        assert_int_equal(tend_spawn(f->loop, &bad, &p, &step), -EINVAL);
        assert_int_equal(step, TEND_STEP_PREPARE);
}

/* A parent with a large, touched heap (256 MiB) still spawns, quickly: the child is made
 * with CLONE_VM, so the parent's page tables are not copied. */
static void large_parent(void **state) {
        struct fx *f = *state;
        size_t size = 256u << 20;
        char *mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        assert_true(mem != MAP_FAILED);
        for (size_t off = 0; off < size; off += 4096)
                mem[off] = (char)off;
        uint64_t t0 = tend_now_usec();
        enum { N = 20 };
        for (int i = 0; i < N; i++) {
                struct tend_exit ex = run_exit(f, UT_ARGV(helper_path(), "exit", "9"));
                assert_int_equal(ex.code, 9);
        }
        uint64_t per = (tend_now_usec() - t0) / N;
        /* The pages are still ours and intact (nothing was copied-on-write away). */
        for (size_t off = 0; off < size; off += 4096)
                if (mem[off] != (char)off)
                        fail_msg("memory changed at %zu", off);
        munmap(mem, size);
        printf("spawn+wait with a 256 MiB parent: %llu us each\n", (unsigned long long)per);
        /* fork() would copy 64k page table entries each time; CLONE_VM does not. This bound is
         * loose on purpose (a slow CI machine), it only catches a spawn that copies memory. */
        assert_true(per < 200u * 1000u);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
static const struct CMUnitTest tests[] = {
        T(exit_codes),
        T(argv_passed),
        T(path_search),
        T(envp_passed),
        T(cwd_set),
        T(umask_set),
        T(rlimits_set),
        T(stdio_null_and_close),
        T(stdio_pipes),
        T(stdio_files),
        T(stdio_fd),
        T(stdio_pty),
        T(fds_mapped_with_swap),
        T(fds_hygiene),
        T(signal_hygiene),
        T(pdeathsig_set),
        T(setsid_setpgid),
        T(switch_user),
        T(exec_failures),
        T(script_without_shebang),
        T(large_parent),
        T(pid_env_set),
};

TEND_TEST_MAIN(tests)
