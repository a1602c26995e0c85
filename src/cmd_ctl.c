/* cmd_ctl.c — `tend ctl VERB [ARGS]`: one request to a running `tend supervise` over its
 * control socket (control.c), its replies as a table or, with --json, as they came.
 *
 * Exit codes: 0 the request succeeded, 1 the supervisor refused it or it failed (unknown
 * service, timeout, permission), 125 a usage or connection error (tend-ctl(1)). */
#include "supervise.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "help-ctl.h"

/* The supervisor's limit for one reply (control.c CTL_REPLY_MAX), and room for its
 * newline. */
#define REPLY_LINE_MAX (64u * 1024u * 1024u + 2u)

enum { OPT_CONTROL = 1000, OPT_JSON, OPT_TIMEOUT, OPT_ALL };

static const struct option options[] = {
        { "control", required_argument, NULL, OPT_CONTROL },
        { "json", no_argument, NULL, OPT_JSON },
        { "timeout", required_argument, NULL, OPT_TIMEOUT },
        { "lines", required_argument, NULL, 'n' },
        { "follow", no_argument, NULL, 'f' },
        { "all", no_argument, NULL, OPT_ALL },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
};

struct reader {
        int fd;
        char *buf;
        size_t len, cap;
};

/* The next reply line (NUL-terminated in r->buf, which it owns until the next call).
 * Returns its length, 0 at the end, -1 on error (with a message). */
static ssize_t read_reply(struct reader *r, size_t *consumed) {
        if (*consumed) {
                memmove(r->buf, r->buf + *consumed, r->len - *consumed);
                r->len -= *consumed;
                *consumed = 0;
        }
        for (;;) {
                char *nl = r->len ? memchr(r->buf, '\n', r->len) : NULL;
                if (nl) {
                        *nl = 0;
                        *consumed = (size_t)(nl - r->buf) + 1;
                        return nl - r->buf;
                }
                if (r->len + 1 >= r->cap) {
                        if (r->cap >= REPLY_LINE_MAX) {
                                msg_error("reply too long from the supervisor");
                                return -1;
                        }
                        size_t cap = r->cap ? r->cap * 2 : 65536;
                        if (cap > REPLY_LINE_MAX)
                                cap = REPLY_LINE_MAX;
                        char *nb = realloc(r->buf, cap);
                        if (!nb) {
                                msg_error("out of memory");
                                return -1;
                        }
                        r->buf = nb;
                        r->cap = cap;
                }
                ssize_t n = io_read(r->fd, r->buf + r->len, r->cap - r->len - 1);
                if (n < 0) {
                        msg_error("cannot read from the supervisor: %s", strerror((int)-n));
                        return -1;
                }
                if (n == 0) {
                        if (r->len)
                                msg_error("the supervisor closed the connection in the middle of a reply");
                        return r->len ? -1 : 0;
                }
                r->len += (size_t)n;
        }
}

/* ---- human output ------------------------------------------------------------------------------ */

static void format_duration(double sec, char *buf, size_t size) {
        if (sec < 0 || isnan(sec)) {
                snprintf(buf, size, "-");
                return;
        }
        unsigned long s = (unsigned long)sec;
        if (s < 60)
                snprintf(buf, size, "%.1fs", sec);
        else if (s < 3600)
                snprintf(buf, size, "%lum%02lus", s / 60, s % 60);
        else if (s < 86400)
                snprintf(buf, size, "%luh%02lum", s / 3600, s / 60 % 60);
        else
                snprintf(buf, size, "%lud%02luh", s / 86400, s / 3600 % 24);
}

static void describe_exit(json_t *e, char *buf, size_t size) {
        if (!json_is_object(e)) {
                snprintf(buf, size, "-");
                return;
        }
        if (json_is_true(json_object_get(e, "lost")))
                snprintf(buf, size, "lost");
        else if (json_is_string(json_object_get(e, "signal")))
                snprintf(buf, size, "SIG%s", json_string_value(json_object_get(e, "signal")));
        else
                snprintf(buf, size, "code %lld",
                         (long long)json_integer_value(json_object_get(e, "code")));
}

static void print_status_table(json_t *services) {
        printf("%-20s %-9s %-8s %-9s %-8s %-10s %s\n", "NAME", "STATE", "PID", "UPTIME",
               "RESTARTS", "LAST EXIT", "INFO");
        size_t i;
        json_t *s;
        json_array_foreach(services, i, s) {
                const char *name = json_string_value(json_object_get(s, "name"));
                const char *state = json_string_value(json_object_get(s, "state"));
                const char *phase = json_string_value(json_object_get(s, "phase"));
                char pid[24] = "-", up[24] = "-", ex[40];
                json_t *p = json_object_get(s, "main_pid");
                if (json_is_integer(p))
                        snprintf(pid, sizeof pid, "%lld", (long long)json_integer_value(p));
                json_t *u = json_object_get(s, "uptime_seconds");
                if (json_is_number(u))
                        format_duration(json_number_value(u), up, sizeof up);
                describe_exit(json_object_get(s, "last_exit"), ex, sizeof ex);
                /* What the operator wants to read next: the service's own words while it
                 * runs, why it failed or is waiting otherwise. */
                const char *text = json_string_value(json_object_get(s, "status_text"));
                const char *reason = json_string_value(json_object_get(s, "reason"));
                char info[300] = "";
                if (state && strcmp(state, "running") && reason)
                        snprintf(info, sizeof info, "%s", reason);
                else if (text)
                        snprintf(info, sizeof info, "%s", text);
                else if (phase)
                        snprintf(info, sizeof info, "%s", phase);
                json_t *next = json_object_get(s, "next_try_in_seconds");
                if (json_is_number(next)) {
                        char d[24];
                        format_duration(json_number_value(next), d, sizeof d);
                        size_t l = strlen(info);
                        snprintf(info + l, sizeof info - l, "%snext try in %s", l ? "; " : "", d);
                }
                printf("%-20s %-9s %-8s %-9s %-8lld %-10s %s\n", name ? name : "?",
                       state ? state : "?", pid, up,
                       (long long)json_integer_value(json_object_get(s, "restarts")), ex, info);
        }
}

/* ---- the command ------------------------------------------------------------------------------ */

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        msg_verror(fmt, ap);
        va_end(ap);
        return EXIT_TEND_FAILURE;
}

static json_t *names_array(char **v, int n) {
        json_t *a = json_array();
        for (int i = 0; i < n; i++)
                json_array_append_new(a, json_string(v[i]));
        return a;
}

/* Build the request of argv (after the options). Returns NULL after a usage message. */
static json_t *build_request(const char *verb, char **args, int n, bool have_timeout,
                             uint64_t timeout, long lines, bool follow, bool all) {
        json_t *req = json_object();
        json_object_set_new(req, "verb", json_string(verb));
        if (!strcmp(verb, "status")) {
                json_object_set_new(req, "names", names_array(args, n));
        } else if (!strcmp(verb, "start") || !strcmp(verb, "stop") || !strcmp(verb, "restart")) {
                if (n < 1)
                        goto usage;
                json_object_set_new(req, "names", names_array(args, n));
        } else if (!strcmp(verb, "signal")) {
                if (n != 2)
                        goto usage;
                json_object_set_new(req, "name", json_string(args[0]));
                json_object_set_new(req, "signal", json_string(args[1]));
                if (all)
                        json_object_set_new(req, "all", json_true());
        } else if (!strcmp(verb, "wait")) {
                if (n != 2)
                        goto usage;
                json_object_set_new(req, "name", json_string(args[0]));
                json_object_set_new(req, "state", json_string(args[1]));
                if (have_timeout)
                        json_object_set_new(req, "timeout", json_real((double)timeout / 1e6));
        } else if (!strcmp(verb, "logs")) {
                if (n != 1)
                        goto usage;
                json_object_set_new(req, "name", json_string(args[0]));
                json_object_set_new(req, "lines", json_integer(lines));
                if (follow)
                        json_object_set_new(req, "follow", json_true());
        } else if (!strcmp(verb, "reload") || !strcmp(verb, "shutdown")) {
                if (n != 0)
                        goto usage;
        } else {
                json_decref(req);
                usage_error("unknown verb '%s' (try 'tend ctl --help')", verb);
                return NULL;
        }
        return req;
usage:
        json_decref(req);
        usage_error("wrong arguments for '%s' (try 'tend ctl --help')", verb);
        return NULL;
}

static int connect_to(const char *path) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        if (strlen(path) >= sizeof sa.sun_path) {
                msg_error("control socket path '%s' is too long", path);
                return -1;
        }
        strcpy(sa.sun_path, path);
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) {
                msg_error("cannot make a socket: %s", strerror(errno));
                return -1;
        }
        if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
                int e = errno;
                msg_error("cannot connect to the supervisor at '%s': %s%s", path, strerror(e),
                          e == ENOENT || e == ECONNREFUSED
                                  ? " (is `tend supervise` running? --control PATH names its socket)"
                                  : "");
                io_close(fd);
                return -1;
        }
        return fd;
}

int cmd_ctl(int argc, char **argv) {
        const char *control = NULL;
        bool json_out = false, have_timeout = false, follow = false, all = false;
        uint64_t timeout = 0;
        long lines = 10;
        int opt;
        optind = 1;
        opterr = 0;
        while ((opt = getopt_long(argc, argv, "hn:f", options, NULL)) != -1) {
                switch (opt) {
                case OPT_CONTROL: control = optarg; break;
                case OPT_JSON: json_out = true; break;
                case OPT_TIMEOUT:
                        if (tend_parse_duration(optarg, &timeout) < 0)
                                return usage_error("invalid duration '%s' for --timeout (try 30s)",
                                                   optarg);
                        have_timeout = true;
                        break;
                case 'n': {
                        char *end;
                        errno = 0;
                        lines = strtol(optarg, &end, 10);
                        if (errno || *end || end == optarg || lines < 0)
                                return usage_error("invalid number of lines '%s'", optarg);
                        break;
                }
                case 'f': follow = true; break;
                case OPT_ALL: all = true; break;
                case 'h':
                        fputs(help_ctl, stdout);
                        return 0;
                default:
                        if (optopt)
                                return usage_error("unknown option '-%c' for ctl (try 'tend ctl --help')",
                                                   optopt);
                        return usage_error("unknown or incomplete option '%s' for ctl (try 'tend ctl --help')",
                                           argv[optind - 1]);
                }
        }
        if (optind >= argc)
                return usage_error("which request? (usage: tend ctl [OPTIONS] VERB [ARGS])");
        const char *verb = argv[optind];
        json_t *req = build_request(verb, argv + optind + 1, argc - optind - 1, have_timeout,
                                    timeout, lines, follow, all);
        if (!req)
                return EXIT_TEND_FAILURE;
        char *text = json_dumps(req, JSON_COMPACT);
        json_decref(req);
        char *dflt = NULL;
        if (!control)
                control = getenv("TEND_CONTROL");
        if (!control || !*control)
                control = dflt = control_default_path(false);
        if (!text || !control) {
                free(text);
                free(dflt);
                msg_error("out of memory");
                return EXIT_TEND_FAILURE;
        }
        int fd = connect_to(control);
        free(dflt);
        if (fd < 0) {
                free(text);
                return EXIT_TEND_FAILURE;
        }
        signal(SIGPIPE, SIG_IGN);
        size_t tl = strlen(text);
        text[tl] = '\n'; /* json_dumps' NUL becomes the line's end */
        /* A refused peer may see its connection closed before it writes: read the reply
         * that says why even when the write fails. */
        (void)io_write_all(fd, text, tl + 1);
        free(text);

        struct reader r = { .fd = fd };
        size_t consumed = 0;
        int code = EXIT_TEND_FAILURE;
        bool following = false, done = false;
        for (;;) {
                ssize_t n = read_reply(&r, &consumed);
                if (n < 0)
                        break;
                if (n == 0) {
                        if (following)
                                code = 0;
                        else if (!done)
                                msg_error("the supervisor closed the connection without a reply");
                        break;
                }
                json_error_t err;
                json_t *o = json_loadb(r.buf, (size_t)n, 0, &err);
                if (!json_is_object(o)) {
                        json_decref(o);
                        msg_error("malformed reply from the supervisor: %s", err.text);
                        break;
                }
                if (json_out) {
                        fwrite(r.buf, 1, (size_t)n, stdout);
                        fputc('\n', stdout);
                }
                json_t *log = json_object_get(o, "log");
                if (json_is_string(log)) {
                        if (!json_out)
                                printf("%s\n", json_string_value(log));
                        if (following)
                                fflush(stdout);
                        json_decref(o);
                        continue;
                }
                json_t *ok = json_object_get(o, "ok");
                if (!json_is_boolean(ok)) {
                        json_decref(o);
                        continue; /* something newer than us: not for us */
                }
                if (!json_is_true(ok)) {
                        const char *e = json_string_value(json_object_get(o, "error"));
                        msg_error("%s", e ? e : "the request failed");
                        code = 1;
                        json_decref(o);
                        break;
                }
                code = 0;
                done = true;
                if (!json_out) {
                        json_t *svcs = json_object_get(o, "services");
                        if (!strcmp(verb, "status") && json_is_array(svcs))
                                print_status_table(svcs);
                        else if (!strcmp(verb, "wait"))
                                printf("%s is %s\n", argv[optind + 1], argv[optind + 2]);
                        else if (!strcmp(verb, "reload"))
                                printf("%s\n", json_string_value(json_object_get(o, "message")));
                        else if (json_is_string(json_object_get(o, "end")))
                                printf("-- %s\n", json_string_value(json_object_get(o, "end")));
                }
                if (json_is_true(json_object_get(o, "following"))) {
                        following = true;
                        fflush(stdout);
                        json_decref(o);
                        continue;
                }
                json_decref(o);
                if (!following)
                        break;
        }
        free(r.buf);
        io_close(fd);
        if (fflush(stdout) != 0 && code == 0)
                code = EXIT_TEND_FAILURE;
        return code;
}
