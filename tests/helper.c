/* helper.c — the misbehaving child the tests run: one program, one mode per misbehaviour.
 *
 * Usage: helper MODE [ARGS...]   ("helper help" lists the modes)
 *
 * Standalone on purpose (libc + pthread, no libtend): it is what tend launches, so it must not
 * share tend's bugs.
 *
 * Synchronisation is by events, never by sleeping. A mode that must tell the test it reached a
 * point "reports ready": it writes the line "ready <pid>\n" to the fd named by the environment
 * variable HELPER_READY_FD and closes that fd (an fd of 0, 1 or 2 is written to but not closed,
 * so HELPER_READY_FD=1 reports on stdout). Without HELPER_READY_FD nothing is reported. A
 * process that will never report closes its copy of the fd, so a test reading the pipe sees
 * EOF if the reporter dies first. The <pid> is the pid of the process that reached the point
 * (a grandchild in hold-pipe, escape and daemon); some modes add words after it.
 *
 * Modes that would dump core (signal, abort) set their RLIMIT_CORE soft limit to 0 first, so
 * that no core file lands in the test's working directory, unless HELPER_CORE is set.
 *
 * Exit codes of the helper itself: 2 for a usage error, 1 for a failed check or system call
 * (with a message "helper: ..." on stderr); modes document their own codes otherwise.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define UNUSED __attribute__((unused))

/* ---- failing loudly ---------------------------------------------------------------------- */

static void die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void die(const char *fmt, ...) {
        char line[1024] = "helper: ";
        size_t len = strlen(line);
        va_list ap;
        int n;

        va_start(ap, fmt);
        n = vsnprintf(line + len, sizeof line - len - 1, fmt, ap);
        va_end(ap);
        if (n > 0)
                len += (size_t)n < sizeof line - len - 1 ? (size_t)n : sizeof line - len - 2;
        line[len++] = '\n';
        /* One write, so the line is not interleaved with other processes' output. */
        if (write(STDERR_FILENO, line, len) < 0) {
                /* nowhere left to complain */
        }
        _exit(1);
}

static void die_errno(const char *what) __attribute__((noreturn));
static void die_errno(const char *what) {
        die("%s: %s", what, strerror(errno));
}

static void usage_error(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));

/* ---- I/O that owns EINTR, EAGAIN and short writes ---------------------------------------- */

/* Returns 0, or -errno on a real error (EPIPE included, when SIGPIPE is ignored); errno is
 * left set as well, so callers may use either. */
static int write_all(int fd, const void *buf, size_t len) {
        const char *p = buf;

        while (len > 0) {
                ssize_t n = write(fd, p, len);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN) {
                                /* Someone gave us a non-blocking pipe: wait until it drains. */
                                struct pollfd pfd = { .fd = fd, .events = POLLOUT };
                                if (poll(&pfd, 1, -1) < 0 && errno != EINTR)
                                        return -errno;
                                continue;
                        }
                        return -errno;
                }
                p += n;
                len -= (size_t)n;
        }
        return 0;
}

static ssize_t read_some(int fd, void *buf, size_t len) {
        for (;;) {
                ssize_t n = read(fd, buf, len);
                if (n >= 0)
                        return n;
                if (errno == EINTR)
                        continue;
                if (errno == EAGAIN) {
                        struct pollfd pfd = { .fd = fd, .events = POLLIN };
                        if (poll(&pfd, 1, -1) < 0 && errno != EINTR)
                                return -errno;
                        continue;
                }
                return -errno;
        }
}

static void out_fd(int fd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void out_fd(int fd, const char *fmt, ...) {
        char *text = NULL;
        va_list ap;
        int n;

        va_start(ap, fmt);
        n = vasprintf(&text, fmt, ap);
        va_end(ap);
        if (n < 0)
                die("out of memory");
        if (write_all(fd, text, (size_t)n) < 0)
                die("write to fd %d: %s", fd, strerror(errno));
        free(text);
}

#define out(...) out_fd(STDOUT_FILENO, __VA_ARGS__)

static void pause_forever(void) __attribute__((noreturn));
static void pause_forever(void) {
        for (;;)
                pause();
}

/* ---- numbers and signal names ------------------------------------------------------------ */

static long long parse_num(const char *text, long long min, long long max, const char *what) {
        char *end;
        long long v;

        errno = 0;
        v = strtoll(text, &end, 10);
        if (errno || end == text || *end || v < min || v > max)
                usage_error("bad %s '%s' (want %lld..%lld)", what, text, min, max);
        return v;
}

static const struct {
        const char *name;
        int signo;
} signal_names[] = {
        { "HUP", SIGHUP },     { "INT", SIGINT },       { "QUIT", SIGQUIT },   { "ILL", SIGILL },
        { "TRAP", SIGTRAP },   { "ABRT", SIGABRT },     { "BUS", SIGBUS },     { "FPE", SIGFPE },
        { "KILL", SIGKILL },   { "USR1", SIGUSR1 },     { "SEGV", SIGSEGV },   { "USR2", SIGUSR2 },
        { "PIPE", SIGPIPE },   { "ALRM", SIGALRM },     { "TERM", SIGTERM },   { "STKFLT", SIGSTKFLT },
        { "CHLD", SIGCHLD },   { "CONT", SIGCONT },     { "STOP", SIGSTOP },   { "TSTP", SIGTSTP },
        { "TTIN", SIGTTIN },   { "TTOU", SIGTTOU },     { "URG", SIGURG },     { "XCPU", SIGXCPU },
        { "XFSZ", SIGXFSZ },   { "VTALRM", SIGVTALRM }, { "PROF", SIGPROF },   { "WINCH", SIGWINCH },
        { "IO", SIGIO },       { "PWR", SIGPWR },       { "SYS", SIGSYS },
};

/* "TERM", "SIGTERM", "term", "15", "RTMIN+2". */
static int parse_signal(const char *text) {
        const char *name = text;

        if (isdigit((unsigned char)text[0]))
                return (int)parse_num(text, 1, SIGRTMAX, "signal");
        if (strncasecmp(name, "SIG", 3) == 0)
                name += 3;
        for (size_t i = 0; i < ARRAY_SIZE(signal_names); i++)
                if (strcasecmp(name, signal_names[i].name) == 0)
                        return signal_names[i].signo;
        if (strncasecmp(name, "RTMIN", 5) == 0) {
                int off = name[5] == '+' ? (int)parse_num(name + 6, 0, SIGRTMAX - SIGRTMIN, "signal")
                                         : name[5] ? -1 : 0;
                if (off >= 0)
                        return SIGRTMIN + off;
        }
        usage_error("unknown signal '%s'", text);
}

static const char *signal_name(int signo, char buf[static 16]) {
        for (size_t i = 0; i < ARRAY_SIZE(signal_names); i++)
                if (signal_names[i].signo == signo)
                        return signal_names[i].name;
        if (signo >= SIGRTMIN && signo <= SIGRTMAX)
                snprintf(buf, 16, "RTMIN+%d", signo - SIGRTMIN);
        else
                snprintf(buf, 16, "%d", signo);
        return buf;
}

static void set_default_and_unblock(int signo) {
        struct sigaction sa = { .sa_handler = SIG_DFL };
        sigset_t set;

        sigemptyset(&sa.sa_mask);
        (void)sigaction(signo, &sa, NULL); /* EINVAL for KILL and STOP, which are always DFL */
        sigemptyset(&set);
        sigaddset(&set, signo);
        if (sigprocmask(SIG_UNBLOCK, &set, NULL) < 0)
                die_errno("sigprocmask");
}

static void no_core_unless_asked(void) {
        struct rlimit rl;

        if (getenv("HELPER_CORE"))
                return;
        if (getrlimit(RLIMIT_CORE, &rl) == 0) {
                rl.rlim_cur = 0;
                (void)setrlimit(RLIMIT_CORE, &rl);
        }
}

/* ---- ready reports ----------------------------------------------------------------------- */

static int ready_fd_cached = -2; /* -2: not looked at yet, -1: none */

static int ready_fd(void) {
        if (ready_fd_cached == -2) {
                const char *v = getenv("HELPER_READY_FD");
                char *end;
                long fd;

                ready_fd_cached = -1;
                if (v && *v) {
                        errno = 0;
                        fd = strtol(v, &end, 10);
                        if (errno || *end || fd < 0 || fd > INT_MAX)
                                die("bad HELPER_READY_FD '%s'", v);
                        if (fcntl((int)fd, F_GETFD) < 0)
                                die("HELPER_READY_FD=%ld is not open", fd);
                        ready_fd_cached = (int)fd;
                }
        }
        return ready_fd_cached;
}

/* Report "ready <pid>[ extra]\n" once, then close the fd (unless it is stdio). */
static void report_ready_extra(const char *extra) {
        int fd = ready_fd();

        if (fd < 0)
                return;
        out_fd(fd, "ready %d%s%s\n", (int)getpid(), extra ? " " : "", extra ? extra : "");
        if (fd > STDERR_FILENO)
                close(fd);
        ready_fd_cached = -1;
}

static void report_ready(void) {
        report_ready_extra(NULL);
}

/* This process will never report: close our copy so the reader can see EOF. */
static void ready_forget(void) {
        int fd = ready_fd();

        if (fd > STDERR_FILENO)
                close(fd);
        ready_fd_cached = -1;
}

/* Keep the ready fd out of the way of stdio that is about to be redirected. */
static void ready_move_above_stdio(void) {
        int fd = ready_fd();

        if (fd >= 0 && fd <= STDERR_FILENO) {
                int copy = fcntl(fd, F_DUPFD_CLOEXEC, 3);
                if (copy < 0)
                        die_errno("dup ready fd");
                ready_fd_cached = copy;
        }
}

static void redirect_stdio_to_null(void) {
        int null = open("/dev/null", O_RDWR | O_CLOEXEC);

        if (null < 0)
                die_errno("open /dev/null");
        for (int fd = 0; fd <= 2; fd++)
                if (dup2(null, fd) < 0)
                        die_errno("dup2");
        if (null > 2)
                close(null);
}

/* ---- small process helpers --------------------------------------------------------------- */

static pid_t xfork(void) {
        pid_t pid;

        /* Flush stdio first so buffered text is not written twice. */
        fflush(NULL);
        pid = fork();
        if (pid < 0)
                die_errno("fork");
        return pid;
}

static void xpipe(int p[2]) {
        if (pipe2(p, O_CLOEXEC) < 0)
                die_errno("pipe");
}

/* Read until EOF: returns when every holder of the write end has closed it or died. */
static void wait_eof(int fd) {
        char buf[256];
        ssize_t n;

        while ((n = read_some(fd, buf, sizeof buf)) > 0) {
        }
        if (n < 0)
                die("read: %s", strerror((int)-n));
}

static int wait_child(pid_t pid) {
        int status;

        while (waitpid(pid, &status, 0) < 0)
                if (errno != EINTR)
                        die_errno("waitpid");
        return status;
}

/* ---- the deterministic flood pattern ----------------------------------------------------- */

/* Each stream is an endless run of 12-byte lines "O 000000001\n", "O 000000002\n", … ('E' for
 * stderr), the counter wrapping after 999999999. A lost, duplicated or reordered byte shows up
 * as a mismatch at a known offset. */
#define PAT_LINE 12

struct pattern {
        char line[PAT_LINE]; /* the current line */
        size_t off;          /* bytes of it already produced */
        uint64_t produced;
};

static void pattern_init(struct pattern *p, char tag) {
        memcpy(p->line, "X 000000001\n", PAT_LINE);
        p->line[0] = tag;
        p->off = 0;
        p->produced = 0;
}

static void pattern_next_line(struct pattern *p) {
        for (int i = PAT_LINE - 2; i >= 2; i--) {
                if (p->line[i] != '9') {
                        p->line[i]++;
                        return;
                }
                p->line[i] = '0';
        }
}

static void pattern_fill(struct pattern *p, char *buf, size_t len) {
        p->produced += len;
        while (len > 0) {
                size_t n = PAT_LINE - p->off;
                if (n > len)
                        n = len;
                memcpy(buf, p->line + p->off, n);
                buf += n;
                len -= n;
                p->off += n;
                if (p->off == PAT_LINE) {
                        p->off = 0;
                        pattern_next_line(p);
                }
        }
}

static char stream_tag(const char *name) {
        if (!strcmp(name, "stdout") || !strcmp(name, "1") || !strcmp(name, "O"))
                return 'O';
        if (!strcmp(name, "stderr") || !strcmp(name, "2") || !strcmp(name, "E"))
                return 'E';
        usage_error("stream must be stdout or stderr, not '%s'", name);
}

#define CHUNK_MAX 65536

/* Chunk sizes 1..65536, spread over every order of magnitude so small writes are common. */
static size_t chunk_size(uint32_t *state) {
        uint32_t r;

        *state = *state * 1103515245u + 12345u;
        r = *state >> 8;
        return 1 + (r >> 5) % (1u << (r % 17));
}

/* ---- the modes --------------------------------------------------------------------------- */

static int mode_exit(char **argv UNUSED) {
        exit((int)parse_num(argv[0], 0, 255, "exit code"));
}

static int mode_signal(char **argv UNUSED) {
        int signo = parse_signal(argv[0]);
        char buf[16];

        no_core_unless_asked();
        set_default_and_unblock(signo);
        raise(signo);
        /* Still here: a signal whose default is to be ignored, or a stop that was continued. */
        fprintf(stderr, "helper: still alive after SIG%s\n", signal_name(signo, buf));
        return 99;
}

static int mode_abort(char **argv UNUSED) {
        no_core_unless_asked();
        set_default_and_unblock(SIGABRT);
        abort();
}

static int print_words(FILE *f, char **argv) {
        for (int i = 0; argv[i]; i++)
                fprintf(f, "%s%s", i ? " " : "", argv[i]);
        fputc('\n', f);
        return 0;
}

static int mode_echo(char **argv UNUSED) {
        return print_words(stdout, argv);
}

static int mode_stderr(char **argv UNUSED) {
        return print_words(stderr, argv);
}

static int mode_cat(char **argv UNUSED) {
        static char buf[CHUNK_MAX];
        ssize_t n;

        while ((n = read_some(STDIN_FILENO, buf, sizeof buf)) > 0)
                if (write_all(STDOUT_FILENO, buf, (size_t)n) < 0)
                        die_errno("write stdout");
        if (n < 0)
                die("read stdin: %s", strerror((int)-n));
        return 0;
}

/* Block until every writer of stdin has gone, then exit CODE: many of these sharing one pipe
 * all end at the same instant when the test closes the write end. */
static int mode_wait_eof(char **argv UNUSED) {
        int code = (int)parse_num(argv[0], 0, 255, "exit code");

        wait_eof(STDIN_FILENO);
        return code;
}

/* `sh -c 'sleep 100 & echo hi'`: the child keeps stdout and stderr open forever. */
static int mode_hold_pipe(char **argv UNUSED) {
        int sync[2];

        xpipe(sync);
        if (xfork() == 0) {
                close(sync[0]);
                report_ready();
                close(sync[1]); /* tells the parent the report is written */
                pause_forever();
        }
        close(sync[1]);
        ready_forget();
        wait_eof(sync[0]);
        out("hi\n");
        return 0;
}

/* A daemon the old way: double fork, setsid, stdio to /dev/null. */
static int mode_escape(char **argv UNUSED) {
        int sync[2];
        pid_t child;

        xpipe(sync);
        child = xfork();
        if (child == 0) {
                close(sync[0]);
                if (xfork() == 0) {
                        if (setsid() < 0)
                                die_errno("setsid");
                        ready_move_above_stdio();
                        redirect_stdio_to_null();
                        report_ready();
                        close(sync[1]);
                        pause_forever();
                }
                _exit(0);
        }
        close(sync[1]);
        ready_forget();
        (void)wait_child(child);
        wait_eof(sync[0]);
        return 0;
}

/* A forking daemon with a pidfile: the start command exits once the daemon has written it. */
static int mode_daemon(char **argv UNUSED) {
        const char *pidfile = argv[0];
        int sync[2];
        pid_t child;

        xpipe(sync);
        child = xfork();
        if (child == 0) {
                close(sync[0]);
                if (setsid() < 0)
                        die_errno("setsid");
                if (xfork() == 0) {
                        char tmp[PATH_MAX];
                        int fd;

                        ready_move_above_stdio();
                        redirect_stdio_to_null();
                        snprintf(tmp, sizeof tmp, "%s.tmp%d", pidfile, (int)getpid());
                        fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
                        if (fd < 0)
                                die_errno("open pidfile");
                        out_fd(fd, "%d\n", (int)getpid());
                        close(fd);
                        if (rename(tmp, pidfile) < 0)
                                die_errno("rename pidfile");
                        report_ready();
                        close(sync[1]);
                        pause_forever();
                }
                _exit(0);
        }
        close(sync[1]);
        ready_forget();
        (void)wait_child(child);
        wait_eof(sync[0]);
        return 0;
}

static int mode_ignore_term(char **argv UNUSED) {
        signal(SIGTERM, SIG_IGN);
        /* QUIT must end us (the ladder's next step): a shell without job control starts its
         * background jobs with QUIT (and INT) ignored, and exec keeps that. */
        signal(SIGQUIT, SIG_DFL);
        report_ready();
        pause_forever();
}

static int mode_block_term_quit(char **argv UNUSED) {
        sigset_t set;

        sigemptyset(&set);
        sigaddset(&set, SIGTERM);
        sigaddset(&set, SIGQUIT);
        if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
                die_errno("sigprocmask");
        report_ready();
        pause_forever();
}

static volatile sig_atomic_t trap_code;

static void on_term_exit(int signo UNUSED) {
        _exit(trap_code);
}

static int mode_trap_term(char **argv UNUSED) {
        struct sigaction sa = { .sa_handler = on_term_exit };
        sigset_t set;

        trap_code = (int)parse_num(argv[0], 0, 255, "exit code");
        sigemptyset(&sa.sa_mask);
        if (sigaction(SIGTERM, &sa, NULL) < 0)
                die_errno("sigaction");
        /* A blocked TERM would never reach the handler; an inherited mask must not hide it. */
        sigemptyset(&set);
        sigaddset(&set, SIGTERM);
        if (sigprocmask(SIG_UNBLOCK, &set, NULL) < 0)
                die_errno("sigprocmask");
        report_ready();
        pause_forever();
}

/* Upstart's `expect stop`: stop yourself when ready, carry on when continued. */
static int mode_stop_self(char **argv UNUSED) {
        set_default_and_unblock(SIGSTOP);
        report_ready();
        raise(SIGSTOP);
        return 7;
}

static int mode_sleep_forever(char **argv UNUSED) {
        report_ready();
        pause_forever();
}

/* Close stdout and stderr but keep running: the pipes reach EOF long before the exit. */
static int mode_close_stdio(char **argv UNUSED) {
        ready_move_above_stdio();
        close(STDOUT_FILENO);
        close(STDERR_FILENO);
        report_ready();
        pause_forever();
}

static int mode_flood(char **argv UNUSED) {
        long long total = parse_num(argv[0], 0, LLONG_MAX, "byte count");
        static char buf[CHUNK_MAX];
        struct pattern pat[2];
        long long left[2] = { total, total };
        const int fds[2] = { STDOUT_FILENO, STDERR_FILENO };
        uint32_t lcg = 20240601u;

        pattern_init(&pat[0], 'O');
        pattern_init(&pat[1], 'E');
        while (left[0] > 0 || left[1] > 0) {
                for (int s = 0; s < 2; s++) {
                        size_t n = chunk_size(&lcg);
                        if (left[s] <= 0)
                                continue;
                        if ((long long)n > left[s])
                                n = (size_t)left[s];
                        pattern_fill(&pat[s], buf, n);
                        if (write_all(fds[s], buf, n) < 0)
                                die("write %s: %s", s ? "stderr" : "stdout", strerror(errno));
                        left[s] -= (long long)n;
                }
        }
        return 0;
}

/* Numbered lines on both streams, interleaved write by write, then a last line without a
 * newline on each: what `tend launch` must bring home whole, in order, each on its stream.
 * Several lines go into one write now and then (a batch of 1..7), so a reader sees lines cut
 * across reads too. */
static int mode_numbered(char **argv) {
        long long n = parse_num(argv[0], 0, LLONG_MAX, "line count");
        const int fds[2] = { STDOUT_FILENO, STDERR_FILENO };
        static const char *const tags[2] = { "out", "err" };
        long long next[2] = { 0, 0 };
        uint32_t lcg = 20251123u;
        char buf[512];

        while (next[0] < n || next[1] < n) {
                for (int s = 0; s < 2; s++) {
                        size_t len = 0;
                        lcg = lcg * 1103515245u + 12345u;
                        int batch = 1 + (int)((lcg >> 16) % 7);
                        for (int b = 0; b < batch && next[s] < n; b++)
                                len += (size_t)snprintf(buf + len, sizeof buf - len, "%s %lld\n",
                                                        tags[s], next[s]++);
                        if (len > 0 && write_all(fds[s], buf, len) < 0)
                                die("write %s: %s", tags[s], strerror(errno));
                }
        }
        if (write_all(STDOUT_FILENO, "out end", 7) < 0 || write_all(STDERR_FILENO, "err end", 7) < 0)
                die("write: %s", strerror(errno));
        return 0;
}

static int mode_flood_check(char **argv UNUSED) {
        char tag = stream_tag(argv[0]);
        long long want = parse_num(argv[1], 0, LLONG_MAX, "byte count");
        static char got[1 << 20], expect[1 << 20];
        struct pattern pat;
        long long seen = 0;
        ssize_t n;

        pattern_init(&pat, tag);
        while ((n = read_some(STDIN_FILENO, got, sizeof got)) > 0) {
                size_t cmp = (size_t)n;
                if (seen + n > want)
                        cmp = (size_t)(want - seen);
                pattern_fill(&pat, expect, cmp);
                if (memcmp(got, expect, cmp) != 0) {
                        size_t i = 0;
                        while (got[i] == expect[i])
                                i++;
                        fprintf(stderr,
                                "helper: flood-check %s: mismatch at byte %lld (line %lld): "
                                "got 0x%02x, expected 0x%02x\n",
                                argv[0], seen + (long long)i, (seen + (long long)i) / PAT_LINE + 1,
                                (unsigned char)got[i], (unsigned char)expect[i]);
                        return 1;
                }
                seen += n;
                if (seen > want) {
                        fprintf(stderr, "helper: flood-check %s: more than the %lld bytes expected\n",
                                argv[0], want);
                        return 1;
                }
        }
        if (n < 0)
                die("read stdin: %s", strerror((int)-n));
        if (seen != want) {
                fprintf(stderr, "helper: flood-check %s: got %lld of %lld bytes\n", argv[0], seen,
                        want);
                return 1;
        }
        return 0;
}

/* Output written just before death must still arrive: no exit handlers, no stdio flush. */
static int mode_last_words(char **argv UNUSED) {
        long long total = parse_num(argv[0], 0, LLONG_MAX, "byte count");
        static char buf[CHUNK_MAX];
        struct pattern pat;

        pattern_init(&pat, 'O');
        while (total > 0) {
                size_t n = total > CHUNK_MAX ? CHUNK_MAX : (size_t)total;
                pattern_fill(&pat, buf, n);
                if (write_all(STDOUT_FILENO, buf, n) < 0)
                        die_errno("write stdout");
                total -= (long long)n;
        }
        _exit(3);
}

static int cmp_int(const void *a, const void *b) {
        int x = *(const int *)a, y = *(const int *)b;
        return (x > y) - (x < y);
}

/* "fds: 0 1 2" — the open fds, without the one used to list them. */
static void print_fds(bool targets) {
        int fds[4096];
        size_t n = 0;
        struct dirent *de;
        DIR *d = opendir("/proc/self/fd");

        if (!d)
                die_errno("opendir /proc/self/fd");
        while ((de = readdir(d))) {
                int fd;
                if (de->d_name[0] == '.')
                        continue;
                fd = atoi(de->d_name);
                if (fd != dirfd(d) && n < ARRAY_SIZE(fds))
                        fds[n++] = fd;
        }
        closedir(d);
        qsort(fds, n, sizeof fds[0], cmp_int);
        out("fds:");
        for (size_t i = 0; i < n; i++)
                out(" %d", fds[i]);
        out("\n");
        for (size_t i = 0; targets && i < n; i++) {
                char link[64], target[PATH_MAX];
                ssize_t len;
                snprintf(link, sizeof link, "/proc/self/fd/%d", fds[i]);
                len = readlink(link, target, sizeof target - 1);
                target[len < 0 ? 0 : len] = '\0';
                out("fd %d %s\n", fds[i], target);
        }
}

static int mode_status(char **argv UNUSED) {
        char line[512];
        FILE *f = fopen("/proc/self/status", "re");

        if (!f)
                die_errno("open /proc/self/status");
        while (fgets(line, sizeof line, f))
                if (!strncmp(line, "SigBlk:", 7) || !strncmp(line, "SigIgn:", 7) ||
                    !strncmp(line, "SigCgt:", 7))
                        out("%s", line);
        fclose(f);
        print_fds(false);
        return 0;
}

static int mode_fds(char **argv UNUSED) {
        if (argv[0] && strcmp(argv[0], "-l"))
                usage_error("fds takes only -l");
        print_fds(argv[0] != NULL);
        return 0;
}

static int mode_env(char **argv UNUSED) {
        const char *v = getenv(argv[0]);

        out("%s\n", v ? v : "(unset)");
        return 0;
}

static int mode_cwd(char **argv UNUSED) {
        char buf[PATH_MAX];

        if (!getcwd(buf, sizeof buf))
                die_errno("getcwd");
        out("%s\n", buf);
        return 0;
}

static int mode_umask(char **argv UNUSED) {
        mode_t m = umask(0);

        umask(m);
        out("%04o\n", (unsigned)m);
        return 0;
}

static int mode_ids(char **argv UNUSED) {
        gid_t groups[NGROUPS_MAX];
        int n = getgroups(ARRAY_SIZE(groups), groups);

        if (n < 0)
                die_errno("getgroups");
        out("%u %u", (unsigned)getuid(), (unsigned)getgid());
        for (int i = 0; i < n; i++)
                out(" %u", (unsigned)groups[i]);
        out("\n");
        return 0;
}

static const struct {
        const char *name;
        int resource;
} rlimit_names[] = {
        { "AS", RLIMIT_AS },           { "CORE", RLIMIT_CORE },
        { "CPU", RLIMIT_CPU },         { "DATA", RLIMIT_DATA },
        { "FSIZE", RLIMIT_FSIZE },     { "LOCKS", RLIMIT_LOCKS },
        { "MEMLOCK", RLIMIT_MEMLOCK }, { "MSGQUEUE", RLIMIT_MSGQUEUE },
        { "NICE", RLIMIT_NICE },       { "NOFILE", RLIMIT_NOFILE },
        { "NPROC", RLIMIT_NPROC },     { "RSS", RLIMIT_RSS },
        { "RTPRIO", RLIMIT_RTPRIO },   { "RTTIME", RLIMIT_RTTIME },
        { "SIGPENDING", RLIMIT_SIGPENDING }, { "STACK", RLIMIT_STACK },
};

static void print_rlim(rlim_t v) {
        if (v == RLIM_INFINITY)
                out("unlimited");
        else
                out("%llu", (unsigned long long)v);
}

static int mode_rlimit(char **argv UNUSED) {
        const char *name = argv[0];
        struct rlimit rl;

        if (strncasecmp(name, "RLIMIT_", 7) == 0)
                name += 7;
        for (size_t i = 0; i < ARRAY_SIZE(rlimit_names); i++) {
                if (strcasecmp(name, rlimit_names[i].name))
                        continue;
                if (getrlimit(rlimit_names[i].resource, &rl) < 0)
                        die_errno("getrlimit");
                print_rlim(rl.rlim_cur);
                out(" ");
                print_rlim(rl.rlim_max);
                out("\n");
                return 0;
        }
        usage_error("unknown rlimit '%s'", argv[0]);
}

/* An exit storm: N children released at the same instant, each checked on the way back. */
static int mode_children(char **argv UNUSED) {
        int n = (int)parse_num(argv[0], 0, 100000, "child count");
        int code = (int)parse_num(argv[1], 0, 255, "exit code");
        pid_t *pids = calloc((size_t)n + 1, sizeof *pids);
        int go[2], bad = 0;

        if (!pids)
                die("out of memory");
        xpipe(go);
        ready_forget();
        for (int i = 0; i < n; i++) {
                pids[i] = xfork();
                if (pids[i] == 0) {
                        char c;
                        close(go[1]);
                        (void)read_some(go[0], &c, 1); /* EOF: everyone goes at once */
                        _exit((code + i) % 256);
                }
        }
        close(go[1]);
        for (int i = 0; i < n; i++) {
                int st = wait_child(pids[i]);
                if (!WIFEXITED(st) || WEXITSTATUS(st) != (code + i) % 256) {
                        fprintf(stderr, "helper: child %d (pid %d): status 0x%x, expected exit %d\n",
                                i, (int)pids[i], st, (code + i) % 256);
                        bad = 1;
                }
        }
        free(pids);
        return bad;
}

/* N processes that die as orphans, all at once: the helper's child forks them and exits, so
 * they are re-parented to the nearest subreaper (or init), which must reap them. The helper
 * prints "orphans: PID..." and exits 0 once every one of them has exited. */
static int mode_orphans(char **argv UNUSED) {
        int n = (int)parse_num(argv[0], 0, 100000, "orphan count");
        int code = argv[1] ? (int)parse_num(argv[1], 0, 255, "exit code") : 0;
        int go[2], done[2], pidpipe[2];
        pid_t middle;

        xpipe(go);
        xpipe(done);
        xpipe(pidpipe);
        ready_forget();
        middle = xfork();
        if (middle == 0) {
                close(go[1]);
                close(done[0]);
                close(pidpipe[0]);
                for (int i = 0; i < n; i++) {
                        pid_t pid = xfork();
                        if (pid == 0) {
                                char c;
                                close(pidpipe[1]);
                                /* done[1] stays open until exit: that is how the helper
                                 * learns that every orphan is gone. */
                                (void)read_some(go[0], &c, 1);
                                _exit((code + i) % 256);
                        }
                        if (write_all(pidpipe[1], &pid, sizeof pid) < 0)
                                die_errno("write pid");
                }
                _exit(0);
        }
        close(go[0]);
        close(done[1]);
        close(pidpipe[1]);
        out("orphans:");
        for (;;) {
                pid_t pid;
                ssize_t r = read_some(pidpipe[0], &pid, sizeof pid);
                if (r == 0)
                        break;
                if (r != (ssize_t)sizeof pid)
                        die("short read of orphan pids");
                out(" %d", (int)pid);
        }
        out("\n");
        (void)wait_child(middle); /* from here on they are orphans */
        close(go[1]);             /* release them all at once */
        wait_eof(done[0]);
        return 0;
}

/* A chain of DEPTH descendants, each waiting forever. The deepest reports
 * "ready <its pid> chain <helper pid> <child pid> ... <its pid>". */
static int mode_fork_tree(char **argv UNUSED) {
        int depth = (int)parse_num(argv[0], 0, 1000, "depth");
        pid_t chain[1001];
        char *extra;
        size_t size;
        FILE *f;

        chain[0] = getpid();
        for (int level = 1; level <= depth; level++) {
                pid_t pid = xfork();
                if (pid > 0) {
                        ready_forget();
                        pause_forever();
                }
                chain[level] = getpid();
        }
        f = open_memstream(&extra, &size);
        if (!f)
                die_errno("open_memstream");
        fprintf(f, "chain");
        for (int level = 0; level <= depth; level++)
                fprintf(f, " %d", (int)chain[level]);
        fclose(f);
        report_ready_extra(extra);
        free(extra);
        pause_forever();
}

static int tty_fg(void) {
        for (int fd = 0; fd <= 1; fd++)
                if (isatty(fd))
                        return (int)tcgetpgrp(fd);
        return -1;
}

static int mode_tty(char **argv UNUSED) {
        int ctty = open("/dev/tty", O_RDONLY | O_NOCTTY | O_CLOEXEC);

        if (ctty >= 0)
                close(ctty);
        out("stdin=%d stdout=%d ctty=%d fg=%d pgid=%d sid=%d\n", isatty(STDIN_FILENO),
            isatty(STDOUT_FILENO), ctty >= 0, tty_fg(), (int)getpgrp(), (int)getsid(0));
        return 0;
}

static int mode_pgid(char **argv UNUSED) {
        out("%d %d %d %d\n", (int)getpid(), (int)getpgrp(), (int)getsid(0), (int)getppid());
        return 0;
}

static int mode_pdeathsig(char **argv UNUSED) {
        int sig = 0;

        if (prctl(PR_GET_PDEATHSIG, &sig) < 0)
                die_errno("prctl");
        out("%d\n", sig);
        return 0;
}

static int mode_write_file(char **argv UNUSED) {
        int fd = open(argv[0], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);

        if (fd < 0)
                die("open '%s': %s", argv[0], strerror(errno));
        out_fd(fd, "%s\n", argv[1]);
        if (close(fd) < 0)
                die_errno("close");
        return 0;
}

/* Signals forwarded to us: print "got NAME from PID" for each; exit 0 once every listed signal
 * has arrived at least once. */
static int mode_catch(char **argv UNUSED) {
        sigset_t set, waiting;
        int left = 0;
        char buf[16];

        sigemptyset(&set);
        for (int i = 0; argv[i]; i++)
                sigaddset(&set, parse_signal(argv[i]));
        waiting = set;
        /* Count rather than sigisemptyset(): glibc 2.36's says "empty" for a set that holds
         * only real-time signals. */
        for (int signo = 1; signo < NSIG; signo++)
                left += sigismember(&set, signo) == 1;
        if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
                die_errno("sigprocmask");
        report_ready();
        while (left > 0) {
                siginfo_t si;
                int signo = sigwaitinfo(&set, &si);
                if (signo < 0) {
                        if (errno == EINTR)
                                continue;
                        die_errno("sigwaitinfo");
                }
                out("got %s from %d\n", signal_name(signo, buf), (int)si.si_pid);
                if (sigismember(&waiting, signo) == 1) {
                        sigdelset(&waiting, signo);
                        left--;
                }
        }
        return 0;
}

static int notify_send(const char *text) {
        const char *path = getenv("NOTIFY_SOCKET");
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        socklen_t len;
        int fd;

        if (!path || (path[0] != '/' && path[0] != '@') || strlen(path) >= sizeof sa.sun_path)
                die("NOTIFY_SOCKET unset or unusable");
        memcpy(sa.sun_path, path, strlen(path));
        if (path[0] == '@')
                sa.sun_path[0] = '\0'; /* abstract address */
        len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(path));
        fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                die_errno("socket");
        if (sendto(fd, text, strlen(text), MSG_NOSIGNAL, (struct sockaddr *)&sa, len) < 0)
                die_errno("sendto NOTIFY_SOCKET");
        close(fd);
        return 0;
}

/* sd_notify: the arguments, one per line, as one datagram (default READY=1); then wait. */
static int mode_notify(char **argv UNUSED) {
        char *text;
        size_t size;
        FILE *f = open_memstream(&text, &size);

        if (!f)
                die_errno("open_memstream");
        if (!argv[0])
                fputs("READY=1\n", f);
        for (int i = 0; argv[i]; i++)
                fprintf(f, "%s\n", argv[i]);
        fclose(f);
        notify_send(text);
        free(text);
        report_ready();
        pause_forever();
}

/* sd_notify: the arguments, one per line, as one datagram; then exit 0 (a shell service's
 * trap can speak for it, as systemd-notify does). */
static int mode_notify_send(char **argv) {
        char *text;
        size_t size;
        FILE *f = open_memstream(&text, &size);

        if (!f)
                die_errno("open_memstream");
        for (int i = 0; argv[i]; i++)
                fprintf(f, "%s\n", argv[i]);
        fclose(f);
        notify_send(text);
        free(text);
        return 0;
}

/* s6: write "READY=1\n" to the notification fd and close it; then wait. */
static int mode_notify_fd(char **argv UNUSED) {
        int fd = (int)parse_num(argv[0], 0, INT_MAX, "fd");

        if (write_all(fd, "READY=1\n", 8) < 0)
                die("write to notification fd %d: %s", fd, strerror(errno));
        close(fd);
        report_ready();
        pause_forever();
}

static void *thread_pause(void *arg UNUSED) {
        pause_forever();
}

static int mode_threads(char **argv UNUSED) {
        int n = (int)parse_num(argv[0], 0, 10000, "thread count");

        for (int i = 0; i < n; i++) {
                pthread_t t;
                int r = pthread_create(&t, NULL, thread_pause, NULL);
                if (r)
                        die("pthread_create: %s", strerror(r));
        }
        report_ready();
        pause_forever();
}

static pthread_t main_thread;

static void *thread_after_leader(void *arg UNUSED) {
        int r = pthread_join(main_thread, NULL);

        if (r)
                die("pthread_join: %s", strerror(r));
        report_ready();
        pause_forever();
}

/* The thread-group leader exits and another thread carries on: /proc shows the leader as a
 * zombie while the process is alive. Reports ready once the leader is gone. */
static int mode_leader_exit(char **argv UNUSED) {
        pthread_t t;
        int r;

        main_thread = pthread_self();
        r = pthread_create(&t, NULL, thread_after_leader, NULL);
        if (r)
                die("pthread_create: %s", strerror(r));
        pthread_exit(NULL);
}

/* Touch MIB MiB of memory (for max-RSS reports), then exit 0. */
static int mode_alloc(char **argv UNUSED) {
        size_t bytes = (size_t)parse_num(argv[0], 0, 1 << 20, "MiB") << 20;
        long page = sysconf(_SC_PAGESIZE);
        volatile char *p;

        if (bytes == 0)
                return 0;
        p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
                die_errno("mmap");
        for (size_t off = 0; off < bytes; off += (size_t)page)
                p[off] = 1;
        return 0;
}

/* Use MS milliseconds of CPU time (for CPU-time reports), then exit 0. */
static int mode_burn(char **argv UNUSED) {
        long long ms = parse_num(argv[0], 0, 3600 * 1000LL, "milliseconds");
        struct timespec ts;
        volatile uint64_t spin = 0;

        for (;;) {
                if (clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts) < 0)
                        die_errno("clock_gettime");
                if (ts.tv_sec * 1000LL + ts.tv_nsec / 1000000 >= ms)
                        return 0;
                for (int i = 0; i < 100000; i++)
                        spin++;
        }
}

static int mode_help(char **argv UNUSED);

/* ---- the table --------------------------------------------------------------------------- */

struct mode {
        const char *name;
        int (*fn)(char **argv);
        int min_args, max_args; /* max -1: any number */
        const char *usage;
};

static const struct mode modes[] = {
        { "exit", mode_exit, 1, 1, "CODE  exit with CODE" },
        { "signal", mode_signal, 1, 1, "SIG  die by SIG (name or number), default action, unblocked" },
        { "abort", mode_abort, 0, 0, "  abort()" },
        { "echo", mode_echo, 0, -1, "TEXT...  print the words to stdout" },
        { "stderr", mode_stderr, 0, -1, "TEXT...  print the words to stderr" },
        { "cat", mode_cat, 0, 0, "  copy stdin to stdout until EOF" },
        { "wait-eof", mode_wait_eof, 1, 1, "CODE  read stdin until EOF, then exit with CODE" },
        { "hold-pipe", mode_hold_pipe, 0, 0,
          "  a child keeps stdout/stderr open forever (reports ready), parent prints hi, exits 0" },
        { "escape", mode_escape, 0, 0,
          "  double fork + setsid, stdio to /dev/null; the grandchild reports ready and waits "
          "forever; exits 0 after the report" },
        { "daemon", mode_daemon, 1, 1,
          "PIDFILE  forking daemon: the grandchild writes PIDFILE, reports ready, waits forever; "
          "exits 0 after that" },
        { "ignore-term", mode_ignore_term, 0, 0, "  ignore SIGTERM (SIGQUIT left at its default), report ready, wait forever" },
        { "block-term-quit", mode_block_term_quit, 0, 0,
          "  block SIGTERM and SIGQUIT, report ready, wait forever" },
        { "trap-term", mode_trap_term, 1, 1, "CODE  report ready; exit CODE on SIGTERM" },
        { "stop-self", mode_stop_self, 0, 0, "  report ready, SIGSTOP self, exit 7 when continued" },
        { "sleep-forever", mode_sleep_forever, 0, 0, "  report ready, wait forever" },
        { "close-stdio", mode_close_stdio, 0, 0,
          "  close stdout and stderr, report ready, wait forever" },
        { "flood", mode_flood, 1, 1,
          "BYTES  write BYTES of pattern to stdout and to stderr, interleaved, chunks 1..65536" },
        { "numbered", mode_numbered, 1, 1,
          "N  lines 'out I' on stdout and 'err I' on stderr (I = 0..N-1), interleaved, then 'out end' and 'err end' without newline" },
        { "flood-check", mode_flood_check, 2, 2,
          "stdout|stderr BYTES  exit 0 iff stdin is exactly that stream's flood pattern" },
        { "last-words", mode_last_words, 1, 1,
          "BYTES  write BYTES of the stdout flood pattern, then _exit(3) at once" },
        { "status", mode_status, 0, 0,
          "  print SigBlk/SigIgn/SigCgt and 'fds: 0 1 2' (an ASan build catches BUS, FPE "
          "and SEGV itself)" },
        { "fds", mode_fds, 0, 1, "[-l]  print 'fds: 0 1 2' (-l: and 'fd N TARGET' lines)" },
        { "env", mode_env, 1, 1, "NAME  print $NAME or (unset)" },
        { "cwd", mode_cwd, 0, 0, "  print the working directory" },
        { "umask", mode_umask, 0, 0, "  print the umask in octal (0022)" },
        { "ids", mode_ids, 0, 0, "  print 'uid gid groups...'" },
        { "rlimit", mode_rlimit, 1, 1, "NOFILE|CORE|...  print 'soft hard' (or 'unlimited')" },
        { "children", mode_children, 2, 2,
          "N CODE  fork N children released together, child i exits (CODE+i)%256; checks and "
          "reaps each, exits 0 if all matched" },
        { "orphans", mode_orphans, 1, 2,
          "N [CODE]  N processes die at once as orphans (exit (CODE+i)%256); prints "
          "'orphans: PID...', exits 0 after they all exited" },
        { "fork-tree", mode_fork_tree, 1, 1,
          "DEPTH  chain of DEPTH descendants, all waiting; the deepest reports "
          "'ready PID chain PID0 ... PID'" },
        { "tty", mode_tty, 0, 0, "  print 'stdin=0|1 stdout=0|1 ctty=0|1 fg=PGID pgid=N sid=N'" },
        { "pgid", mode_pgid, 0, 0, "  print 'pid pgid sid ppid'" },
        { "pdeathsig", mode_pdeathsig, 0, 0, "  print the parent-death signal (0: none)" },
        { "write-file", mode_write_file, 2, 2, "PATH TEXT  write TEXT and a newline to PATH" },
        { "catch", mode_catch, 1, -1,
          "SIG...  report ready, print 'got SIG from PID' per signal, exit 0 once all arrived" },
        { "notify", mode_notify, 0, -1,
          "[KEY=VALUE...]  one sd_notify datagram to $NOTIFY_SOCKET (default READY=1), report "
          "ready, wait forever" },
        { "notify-send", mode_notify_send, 1, -1,
          "KEY=VALUE...  one sd_notify datagram to $NOTIFY_SOCKET, then exit 0" },
        { "notify-fd", mode_notify_fd, 1, 1,
          "FD  write READY=1 to FD (s6), close it, report ready, wait forever" },
        { "threads", mode_threads, 1, 1, "N  start N waiting threads, report ready, wait forever" },
        { "leader-exit", mode_leader_exit, 0, 0,
          "  main thread exits, another reports ready once it is gone and waits forever" },
        { "alloc", mode_alloc, 1, 1, "MIB  touch MIB MiB of memory, exit 0" },
        { "burn", mode_burn, 1, 1, "MS  use MS milliseconds of CPU, exit 0" },
        { "help", mode_help, 0, 0, "  list the modes" },
};

static const struct mode *current_mode;

/* A usage text is "ARGS  what it does": print "name ARGS" and the description below it. */
static void print_usage(FILE *f, const struct mode *m, bool describe) {
        const char *sep = strstr(m->usage, "  ");
        int args_len = sep ? (int)(sep - m->usage) : (int)strlen(m->usage);

        fprintf(f, "helper %s%s%.*s\n", m->name, args_len ? " " : "", args_len, m->usage);
        if (describe && sep)
                fprintf(f, "        %s\n", sep + 2);
}

static int mode_help(char **argv UNUSED) {
        printf("usage: helper MODE [ARGS...]\n\n");
        for (size_t i = 0; i < ARRAY_SIZE(modes); i++)
                print_usage(stdout, &modes[i], true);
        printf("\nHELPER_READY_FD=N: the fd that gets the 'ready <pid>' line (1: stdout)\n");
        return 0;
}

static void usage_error(const char *fmt, ...) {
        char line[1024];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(line, sizeof line, fmt, ap);
        va_end(ap);
        fprintf(stderr, "helper: %s\n", line);
        if (current_mode) {
                fputs("usage: ", stderr);
                print_usage(stderr, current_mode, false);
        } else {
                fputs("'helper help' lists the modes\n", stderr);
        }
        exit(2);
}

int main(int argc, char **argv) {
        int nargs;

        if (argc < 2)
                usage_error("no mode given");
        for (size_t i = 0; i < ARRAY_SIZE(modes); i++)
                if (!strcmp(argv[1], modes[i].name))
                        current_mode = &modes[i];
        if (!current_mode)
                usage_error("unknown mode '%s'", argv[1]);
        nargs = argc - 2;
        if (nargs < current_mode->min_args ||
            (current_mode->max_args >= 0 && nargs > current_mode->max_args))
                usage_error("wrong number of arguments");
        return current_mode->fn(argv + 2);
}
