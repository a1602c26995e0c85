/* stamp.c — benchmark 6's service, without the C library (x86-64 Linux only).
 *
 * Benchmark 6 measures the time from a service's exit to the exec of the next one. A glibc
 * program runs its start-up code (dynamic loading, CPU feature detection: ~0.8 ms in a VM
 * where CPUID traps, FACTS.md) before main can take a timestamp, and that would be counted
 * as supervisor latency. This program is its own _start: the first thing it does after the
 * kernel hands it control is read CLOCK_MONOTONIC, so what it reports as its start is the exec
 * plus a few hundred instructions.
 *
 * Same protocol as bench/svc in restart mode: "start NS PID", run BENCH_RUN_MS (1100) ms,
 * "exit NS PID" (the time taken just before exit), each line one write(2) to $BENCH_FIFO. */
#include <stddef.h>
#include <stdint.h>

#define SYS_write 1
#define SYS_open 2
#define SYS_close 3
#define SYS_nanosleep 35
#define SYS_getpid 39
#define SYS_exit_group 231
#define SYS_clock_gettime 228
#define O_WRONLY 01
#define O_CLOEXEC 02000000
#define CLOCK_MONOTONIC 1

struct ts {
        long sec, nsec;
};

static long sys3(long n, long a, long b, long c) {
        long r;
        __asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c)
                         : "rcx", "r11", "memory");
        return r;
}

static long long now_ns(void) {
        struct ts t;
        sys3(SYS_clock_gettime, CLOCK_MONOTONIC, (long)&t, 0);
        return (long long)t.sec * 1000000000LL + t.nsec;
}

static const char *getenv_(char **envp, const char *name) {
        for (; *envp; envp++) {
                const char *e = *envp, *n = name;
                while (*n && *e == *n)
                        e++, n++;
                if (!*n && *e == '=')
                        return e + 1;
        }
        return NULL;
}

static size_t put_num(char *p, long long v) {
        char d[24];
        size_t n = 0;
        do {
                d[n++] = (char)('0' + v % 10);
                v /= 10;
        } while (v);
        for (size_t i = 0; i < n; i++)
                p[i] = d[n - 1 - i];
        return n;
}

static void report(const char *fifo, const char *word, long long ns, long pid) {
        char line[96];
        size_t n = 0;
        while (*word)
                line[n++] = *word++;
        line[n++] = ' ';
        n += put_num(line + n, ns);
        line[n++] = ' ';
        n += put_num(line + n, pid);
        line[n++] = '\n';
        long fd = sys3(SYS_open, (long)fifo, O_WRONLY | O_CLOEXEC, 0);
        if (fd < 0)
                return;
        sys3(SYS_write, fd, (long)line, (long)n);
        sys3(SYS_close, fd, 0, 0);
}

__attribute__((used)) static void stamp_main(long *sp) {
        long long t0 = now_ns();
        long argc = sp[0];
        char **envp = (char **)(sp + argc + 2);
        const char *fifo = getenv_(envp, "BENCH_FIFO");
        const char *ms = getenv_(envp, "BENCH_RUN_MS");
        long run_ms = 0;
        for (const char *p = ms ? ms : "1100"; *p >= '0' && *p <= '9'; p++)
                run_ms = run_ms * 10 + (*p - '0');
        long pid = sys3(SYS_getpid, 0, 0, 0);
        if (fifo)
                report(fifo, "start", t0, pid);
        struct ts d = { run_ms / 1000, (run_ms % 1000) * 1000000L };
        while (sys3(SYS_nanosleep, (long)&d, (long)&d, 0) == -4) /* EINTR: the rest */
                ;
        long long t1 = now_ns();
        if (fifo)
                report(fifo, "exit", t1, pid);
        sys3(SYS_exit_group, 0, 0, 0);
        for (;;)
                ;
}

/* The kernel enters here with the stack pointer at argc. */
__asm__(".text\n"
        ".globl _start\n"
        "_start:\n"
        "  xor %ebp, %ebp\n"
        "  mov %rsp, %rdi\n"
        "  and $-16, %rsp\n"
        "  call stamp_main\n"
        "  hlt\n");
