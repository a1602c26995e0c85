/* text.c — the small languages users type: durations, signal names, stop ladders. */
#include "internal.h"

#include <ctype.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

TEND_PUBLIC int tend_parse_duration(const char *text, uint64_t *ret_usec) {
        if (!text || !isdigit((unsigned char)text[0]))
                return -TEND_EPARSE;
        /* Integer and fraction are parsed separately so "0.1s" is exactly 100000 us. */
        const char *p = text;
        uint64_t whole = 0;
        while (isdigit((unsigned char)*p)) {
                uint64_t digit = (uint64_t)(*p++ - '0');
                if (whole > (UINT64_MAX - digit) / 10)
                        return -ERANGE;
                whole = whole * 10 + digit;
        }
        uint64_t frac = 0, frac_div = 1;
        if (*p == '.') {
                p++;
                if (!isdigit((unsigned char)*p))
                        return -TEND_EPARSE;
                while (isdigit((unsigned char)*p)) {
                        if (frac_div < 1000000) { /* finer than a microsecond: dropped */
                                frac = frac * 10 + (uint64_t)(*p - '0');
                                frac_div *= 10;
                        }
                        p++;
                }
        }
        static const struct {
                const char *suffix;
                uint64_t usec;
        } units[] = { { "us", 1 }, { "ms", 1000 }, { "s", 1000000 }, { "", 1000000 },
                      { "m", 60000000 }, { "min", 60000000 }, { "h", 3600000000ull } };
        for (size_t i = 0; i < ARRAY_SIZE(units); i++) {
                if (strcmp(p, units[i].suffix))
                        continue;
                uint64_t mul = units[i].usec;
                if (whole > UINT64_MAX / mul)
                        return -ERANGE;
                uint64_t v = whole * mul;
                uint64_t f = frac * mul / frac_div; /* < 1e6 * 3.6e9: no overflow */
                if (v > UINT64_MAX - f)
                        return -ERANGE;
                *ret_usec = v + f;
                return 0;
        }
        return -TEND_EPARSE;
}

static const struct {
        const char *name;
        int signo;
} signal_names[] = {
        { "HUP", SIGHUP },   { "INT", SIGINT },     { "QUIT", SIGQUIT },   { "ILL", SIGILL },
        { "TRAP", SIGTRAP }, { "ABRT", SIGABRT },   { "IOT", SIGIOT },     { "BUS", SIGBUS },
        { "FPE", SIGFPE },   { "KILL", SIGKILL },   { "USR1", SIGUSR1 },   { "SEGV", SIGSEGV },
        { "USR2", SIGUSR2 }, { "PIPE", SIGPIPE },   { "ALRM", SIGALRM },   { "TERM", SIGTERM },
        { "STKFLT", SIGSTKFLT }, { "CHLD", SIGCHLD }, { "CONT", SIGCONT }, { "STOP", SIGSTOP },
        { "TSTP", SIGTSTP }, { "TTIN", SIGTTIN },   { "TTOU", SIGTTOU },   { "URG", SIGURG },
        { "XCPU", SIGXCPU }, { "XFSZ", SIGXFSZ },   { "VTALRM", SIGVTALRM }, { "PROF", SIGPROF },
        { "WINCH", SIGWINCH }, { "IO", SIGIO },     { "POLL", SIGPOLL },   { "PWR", SIGPWR },
        { "SYS", SIGSYS },
};

TEND_PUBLIC int tend_signal_from_name(const char *name) {
        if (!name || !*name)
                return -EINVAL;
        if (isdigit((unsigned char)name[0])) {
                char *end;
                errno = 0;
                long v = strtol(name, &end, 10);
                if (*end || errno || v <= 0 || v >= _NSIG)
                        return -EINVAL;
                return (int)v;
        }
        if (!strncasecmp(name, "SIG", 3))
                name += 3;
        for (size_t i = 0; i < ARRAY_SIZE(signal_names); i++)
                if (!strcasecmp(name, signal_names[i].name))
                        return signal_names[i].signo;
        /* RTMIN+n / RTMAX-n */
        if (!strncasecmp(name, "RTMIN", 5) || !strncasecmp(name, "RTMAX", 5)) {
                bool min = !strncasecmp(name, "RTMIN", 5);
                int base = min ? SIGRTMIN : SIGRTMAX;
                const char *rest = name + 5;
                if (!*rest)
                        return base;
                char *end;
                long off = strtol(rest + 1, &end, 10);
                if ((min ? *rest != '+' : *rest != '-') || *end || off < 0 ||
                    off > SIGRTMAX - SIGRTMIN)
                        return -EINVAL;
                return min ? base + (int)off : base - (int)off;
        }
        return -EINVAL;
}

TEND_PUBLIC const char *tend_signal_name(int signo) {
        for (size_t i = 0; i < ARRAY_SIZE(signal_names); i++)
                if (signal_names[i].signo == signo)
                        return signal_names[i].name;
        static const char *const numbers[] = {
                "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14",
                "15", "16", "17", "18", "19", "20", "21", "22", "23", "24", "25", "26", "27",
                "28", "29", "30", "31", "32", "33", "34", "35", "36", "37", "38", "39", "40",
                "41", "42", "43", "44", "45", "46", "47", "48", "49", "50", "51", "52", "53",
                "54", "55", "56", "57", "58", "59", "60", "61", "62", "63", "64",
        };
        if (signo >= 0 && (size_t)signo < ARRAY_SIZE(numbers))
                return numbers[signo];
        return "?";
}

TEND_PUBLIC void tend_ladder_default(struct tend_ladder *l) {
        memset(l, 0, sizeof *l);
        l->n = 3;
        l->step[0] = (struct tend_ladder_step){ SIGTERM, 5000000 };
        l->step[1] = (struct tend_ladder_step){ SIGQUIT, 5000000 };
        l->step[2] = (struct tend_ladder_step){ SIGKILL, 0 };
}

TEND_PUBLIC int tend_ladder_parse(const char *text, struct tend_ladder *ret) {
        if (!text || !*text)
                return -TEND_EPARSE;
        struct tend_ladder l;
        memset(&l, 0, sizeof l);
        const char *p = text;
        for (;;) {
                if (l.n == TEND_LADDER_MAX)
                        return -TEND_EPARSE;
                const char *end = p + strcspn(p, ",");
                char item[64];
                size_t len = (size_t)(end - p);
                if (len == 0 || len >= sizeof item)
                        return -TEND_EPARSE;
                memcpy(item, p, len);
                item[len] = '\0';
                char *slash = strchr(item, '/');
                if (slash)
                        *slash = '\0';
                int signo = tend_signal_from_name(item);
                if (signo < 0)
                        return -TEND_EPARSE;
                uint64_t wait = 0;
                if (slash && tend_parse_duration(slash + 1, &wait) < 0)
                        return -TEND_EPARSE;
                bool last = *end == '\0';
                /* Every step but the last needs to say how long to wait for it. */
                if (!slash && !last)
                        return -TEND_EPARSE;
                l.step[l.n++] = (struct tend_ladder_step){ signo, wait };
                if (last)
                        break;
                p = end + 1;
        }
        *ret = l;
        return 0;
}

static void format_duration(uint64_t us, char *buf, size_t size) {
        if (us % 1000000 == 0)
                snprintf(buf, size, "%llus", (unsigned long long)(us / 1000000));
        else if (us % 1000 == 0)
                snprintf(buf, size, "%llums", (unsigned long long)(us / 1000));
        else
                snprintf(buf, size, "%lluus", (unsigned long long)us);
}

TEND_PUBLIC void tend_ladder_format(const struct tend_ladder *l, char *buf, size_t size) {
        size_t used = 0;
        if (size == 0)
                return;
        buf[0] = '\0';
        for (size_t i = 0; i < l->n && used < size; i++) {
                char d[32] = "";
                if (i + 1 < l->n || l->step[i].wait_usec)
                        format_duration(l->step[i].wait_usec, d, sizeof d);
                int n = snprintf(buf + used, size - used, "%s%s%s%s", i ? "," : "",
                                 tend_signal_name(l->step[i].signo), *d ? "/" : "", d);
                if (n < 0)
                        break;
                used += (size_t)n;
        }
}
