/* cmd_launch.c — `tend launch -H HOSTS -- CMD`: start a command on many hosts and know for
 * sure which started (doc/launch.md is the design, tend-launch(1) the manual).
 *
 * The hosts' agents are started and talked to by a node (launch_node.c), the same code an
 * interior agent runs in tree mode. This file is the owner at the top: it answers START with
 * GO (or ABORT once cancelled), prints each host's output as `host: line` (or keeps it for
 * --gather), forwards signals, and at the end writes the result table, the JSON object and
 * the exit code. */
#include "launch.h"
#include "launch_hosts.h"
#include "launch_node.h"
#include "config.h"
#include "outq.h"

#include <fcntl.h>
#include <getopt.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#if __has_include("help-launch.h")
#include "help-launch.h"
#else
static const char help_launch[] =
        "usage: tend launch [OPTIONS] -H HOSTS -- COMMAND [ARGS...]\n"
        "(see doc/launch.md; the manual page tend-launch(1) is not built yet)\n";
#endif

#define LINE_MAX_OUT (64u * 1024u)         /* a longer line is printed in pieces */
#define GATHER_MAX (16u * 1024u * 1024u)   /* --gather: kept per stream and host */

enum hstate { HS_WAITING, HS_GO, HS_FINAL };

struct linebuf {
        char *buf; /* LINE_MAX_OUT bytes once used */
        size_t len;
};

struct gather {
        char *buf;
        size_t len, cap;
        bool truncated;
};

struct lhost {
        const char *name;
        uint32_t index;
        enum hstate hs;
        bool started, done;
        const char *state;   /* static text once final */
        char *reason, *message, *diagnostic;
        int exit_code;       /* -1: none */
        int signo;
        double wall;
        uint64_t go_usec;
        struct linebuf line[3];
        struct gather g[3];
};

struct launch {
        tend_loop *loop;
        struct node *node;
        struct lhost *hosts;
        size_t n_hosts;
        struct lhost **by_index;
        struct outq out[3];
        bool out_paused[3];
        bool gather, quiet, verbose, cancelled;
        tend_signal *signals[5];
        unsigned n_signals;
};

static struct lhost *host_of(struct launch *l, uint32_t index) {
        return index < l->n_hosts ? &l->hosts[index] : NULL;
}

/* ---- output ---------------------------------------------------------------------------- */

static void update_pause(struct launch *l) {
        node_pause_read(l->node, l->out_paused[1] || l->out_paused[2]);
}

struct resume_ctx {
        struct launch *l;
        int stream;
};
static struct resume_ctx resume_ctx[3];

static void on_resume(void *userdata) {
        struct resume_ctx *r = userdata;
        r->l->out_paused[r->stream] = false;
        update_pause(r->l);
}

static void out_write(struct launch *l, int stream, const char *data, size_t len) {
        if (outq_write(&l->out[stream], data, len)) {
                l->out_paused[stream] = true;
                update_pause(l);
        }
}

/* One whole line (or a piece of a long one): "host: " + text + "\n". */
static void print_line(struct launch *l, struct lhost *h, int stream, const char *data,
                       size_t len) {
        size_t nl = strlen(h->name);
        bool has_nl = len > 0 && data[len - 1] == '\n';
        char small[1024];
        size_t total = nl + 2 + len + (has_nl ? 0 : 1);
        char *buf = total <= sizeof small ? small : malloc(total);
        if (!buf) {
                out_write(l, stream, h->name, nl);
                out_write(l, stream, ": ", 2);
                out_write(l, stream, data, len);
                if (!has_nl)
                        out_write(l, stream, "\n", 1);
                return;
        }
        memcpy(buf, h->name, nl);
        memcpy(buf + nl, ": ", 2);
        memcpy(buf + nl + 2, data, len);
        if (!has_nl)
                buf[total - 1] = '\n';
        out_write(l, stream, buf, total);
        if (buf != small)
                free(buf);
}

static void line_flush(struct launch *l, struct lhost *h, int stream) {
        struct linebuf *b = &h->line[stream];
        if (b->len)
                print_line(l, h, stream, b->buf, b->len);
        free(b->buf);
        b->buf = NULL;
        b->len = 0;
}

static void gather_add(struct gather *g, const char *data, size_t len) {
        if (g->truncated)
                return;
        if (g->len + len > GATHER_MAX) {
                g->truncated = true;
                len = GATHER_MAX - g->len;
        }
        if (g->len + len > g->cap) {
                size_t cap = g->cap ? g->cap : 4096;
                while (cap < g->len + len)
                        cap *= 2;
                char *b = realloc(g->buf, cap);
                if (!b) {
                        g->truncated = true;
                        return;
                }
                g->buf = b;
                g->cap = cap;
        }
        memcpy(g->buf + g->len, data, len);
        g->len += len;
}

static void host_output(struct launch *l, struct lhost *h, int stream, const char *data,
                        size_t len) {
        if (stream != 1 && stream != 2)
                return;
        if (l->gather) {
                gather_add(&h->g[stream], data, len);
                return;
        }
        struct linebuf *b = &h->line[stream];
        while (len > 0) {
                const char *nl = memchr(data, '\n', len);
                size_t take = nl ? (size_t)(nl - data) + 1 : len;
                if (b->len == 0 && nl && take <= LINE_MAX_OUT) {
                        print_line(l, h, stream, data, take);
                } else {
                        if (!b->buf && !(b->buf = malloc(LINE_MAX_OUT))) {
                                print_line(l, h, stream, data, take); /* no memory: as it is */
                        } else {
                                size_t room = LINE_MAX_OUT - b->len;
                                if (take > room)
                                        take = room;
                                memcpy(b->buf + b->len, data, take);
                                b->len += take;
                                if (b->buf[b->len - 1] == '\n' || b->len == LINE_MAX_OUT)
                                        line_flush(l, h, stream);
                        }
                }
                data += take;
                len -= take;
        }
}

/* ---- host results ------------------------------------------------------------------------ */

static char *json_str_dup(json_t *o, const char *key) {
        json_t *v = json_object_get(o, key);
        return json_is_string(v) ? strdup(json_string_value(v)) : NULL;
}

static void host_final(struct launch *l, struct lhost *h, const char *state) {
        h->hs = HS_FINAL;
        h->state = state;
        for (int s = 1; s <= 2; s++)
                line_flush(l, h, s);
        if (l->verbose)
                msg_error("launch: host '%s': %s%s%s", h->name, state, h->reason ? ", " : "",
                          h->reason ? h->reason : "");
}

static void on_node_frame(struct node *n, const struct lp_frame *f, void *userdata) {
        struct launch *l = userdata;
        struct lhost *h = host_of(l, f->host);
        if (!h)
                return;
        if (f->type == LP_DONE) {
                h->done = true;
                if (h->hs != HS_FINAL) {
                        /* DONE without a result: the agent broke the protocol. */
                        h->reason = strdup("protocol");
                        h->message = strdup("the host ended without a result");
                        host_final(l, h, "failed");
                }
                return;
        }
        if (h->hs == HS_FINAL) {
                /* Cancelled while its ABORT could not reach it yet (deeper in the tree): it
                 * asks now, and must not start. Anything else after the end is the echo
                 * of an ABORT we sent. */
                if (f->type == LP_START)
                        (void)node_send(l->node, f->host, LP_ABORT, NULL, 0);
                return;
        }
        json_t *o = NULL;
        if (f->type == LP_REFUSED || f->type == LP_EXIT || f->type == LP_FAILED ||
            f->type == LP_LOST || f->type == LP_STARTED) {
                o = json_loadb((const char *)f->payload, f->len, 0, NULL);
                if (!json_is_object(o)) {
                        json_decref(o);
                        o = json_object();
                }
        }
        switch (f->type) {
        case LP_CONNECTED:
                break;
        case LP_START:
                if (l->cancelled) {
                        (void)node_send(l->node, f->host, LP_ABORT, NULL, 0);
                        h->reason = strdup("cancelled");
                        host_final(l, h, "cancelled");
                } else if (node_send(l->node, f->host, LP_GO, NULL, 0) == 0) {
                        h->hs = HS_GO;
                        h->go_usec = tend_now_usec();
                }
                break;
        case LP_STARTED:
                h->started = true;
                if (l->verbose)
                        msg_error("launch: host '%s': started (pid %lld)", h->name,
                                  (long long)json_integer_value(json_object_get(o, "pid")));
                break;
        case LP_OUT:
                host_output(l, h, f->stream, (const char *)f->payload, f->len);
                break;
        case LP_REFUSED: {
                json_t *code = json_object_get(o, "exit_code");
                json_t *sig = json_object_get(o, "signal");
                char msg[128];
                if (json_is_integer(code))
                        snprintf(msg, sizeof msg, "precheck exited with code %lld",
                                 (long long)json_integer_value(code));
                else if (json_is_string(sig))
                        snprintf(msg, sizeof msg, "precheck killed by SIG%s", json_string_value(sig));
                else
                        snprintf(msg, sizeof msg, "precheck failed");
                h->reason = strdup("precheck");
                h->message = strdup(msg);
                h->diagnostic = json_str_dup(o, "output");
                host_final(l, h, "refused");
                break;
        }
        case LP_EXIT: {
                json_t *code = json_object_get(o, "exit_code");
                json_t *sig = json_object_get(o, "signal_number");
                h->exit_code = json_is_integer(code) ? (int)json_integer_value(code) : -1;
                h->signo = json_is_integer(sig) ? (int)json_integer_value(sig) : 0;
                h->wall = json_number_value(json_object_get(o, "wall_seconds"));
                h->started = true;
                const char *state = json_is_true(json_object_get(o, "timed_out")) ? "timed-out"
                                    : h->signo                                      ? "killed"
                                    : h->exit_code >= 0                             ? "exited"
                                                                                    : "lost";
                if (json_is_true(json_object_get(o, "status_lost"))) {
                        h->reason = strdup("status-lost");
                        state = "lost";
                }
                host_final(l, h, state);
                break;
        }
        case LP_FAILED:
        case LP_LOST: {
                h->reason = json_str_dup(o, "reason");
                h->message = json_str_dup(o, "message");
                h->diagnostic = json_str_dup(o, "diagnostic");
                if (h->go_usec)
                        h->wall = (double)(tend_now_usec() - h->go_usec) / 1e6;
                const char *state = f->type == LP_LOST ? "lost" : "failed";
                if (h->reason && !strcmp(h->reason, "cancelled"))
                        state = "cancelled";
                host_final(l, h, state);
                break;
        }
        default:
                break;
        }
        json_decref(o);
}

static void on_node_idle(struct node *n, void *userdata) {
        struct launch *l = userdata;
        tend_loop_stop(l->loop);
}

static const struct node_ops node_ops = { .frame = on_node_frame, .idle = on_node_idle };

/* ---- signals ------------------------------------------------------------------------------ */

static void on_signal(tend_signal *s, const struct signalfd_siginfo *si, void *userdata) {
        struct launch *l = userdata;
        int signo = (int)si->ssi_signo;
        if (l->verbose)
                msg_error("launch: got SIG%s: forwarding it%s", tend_signal_name(signo),
                          signo == SIGUSR1 || signo == SIGUSR2 ? "" : ", cancelling hosts not started");
        node_signal_all(l->node, signo);
        if (signo == SIGUSR1 || signo == SIGUSR2)
                return;
        l->cancelled = true;
        /* Hosts that called back but were not told GO: ABORT now. */
        for (size_t i = 0; i < l->n_hosts; i++) {
                struct lhost *h = &l->hosts[i];
                if (h->hs == HS_WAITING && node_send(l->node, h->index, LP_ABORT, NULL, 0) == 0) {
                        h->reason = strdup("cancelled");
                        host_final(l, h, "cancelled");
                }
        }
        node_cancel(l->node);
}

/* ---- the end: gather, table, JSON -------------------------------------------------------- */

static bool gather_same(const struct lhost *a, const struct lhost *b) {
        for (int s = 1; s <= 2; s++)
                if (a->g[s].len != b->g[s].len || a->g[s].truncated != b->g[s].truncated ||
                    (a->g[s].len && memcmp(a->g[s].buf, b->g[s].buf, a->g[s].len)))
                        return false;
        return true;
}

static void print_gathered(struct launch *l) {
        size_t n = l->n_hosts;
        size_t *group = calloc(n, sizeof *group); /* group leader index + 1 */
        const char **names = calloc(n, sizeof *names);
        if (!group || !names) {
                msg_error("launch: out of memory for --gather");
                free(group);
                free(names);
                return;
        }
        for (size_t i = 0; i < n; i++) {
                struct lhost *h = &l->hosts[i];
                if (group[i] || (!h->g[1].len && !h->g[2].len))
                        continue;
                group[i] = i + 1;
                size_t k = 0;
                names[k++] = h->name;
                bool truncated = h->g[1].truncated || h->g[2].truncated;
                for (size_t j = i + 1; j < n; j++)
                        if (!group[j] && gather_same(h, &l->hosts[j])) {
                                group[j] = i + 1;
                                names[k++] = l->hosts[j].name;
                        }
                char *folded = NULL;
                if (launch_hosts_compress(names, k, &folded) < 0)
                        folded = NULL;
                char head[512];
                snprintf(head, sizeof head, "==== %s (%zu host%s)%s ====\n",
                         folded ? folded : h->name, k, k == 1 ? "" : "s",
                         truncated ? " (truncated)" : "");
                free(folded);
                for (int s = 1; s <= 2; s++) {
                        if (!h->g[s].len)
                                continue;
                        out_write(l, s, head, strlen(head));
                        out_write(l, s, h->g[s].buf, h->g[s].len);
                        if (h->g[s].buf[h->g[s].len - 1] != '\n')
                                out_write(l, s, "\n", 1);
                }
        }
        free(group);
        free(names);
}

static void result_text(const struct lhost *h, char *buf, size_t size) {
        if (!strcmp(h->state, "exited"))
                snprintf(buf, size, "%d", h->exit_code);
        else if (!strcmp(h->state, "killed"))
                snprintf(buf, size, "SIG%s", tend_signal_name(h->signo));
        else if (!strcmp(h->state, "timed-out") && h->signo)
                snprintf(buf, size, "SIG%s", tend_signal_name(h->signo));
        else if (!strcmp(h->state, "timed-out") && h->exit_code >= 0)
                snprintf(buf, size, "%d", h->exit_code);
        else
                snprintf(buf, size, "-");
}

static void print_table(struct launch *l) {
        size_t w = 4;
        for (size_t i = 0; i < l->n_hosts; i++)
                if (strlen(l->hosts[i].name) > w)
                        w = strlen(l->hosts[i].name);
        if (w > 40)
                w = 40;
        char line[2048];
        snprintf(line, sizeof line, "%-*s  %-9s  %-7s  %s\n", (int)w, "HOST", "STATE", "EXIT",
                 "INFO");
        (void)io_write_all(STDERR_FILENO, line, strlen(line));
        for (size_t i = 0; i < l->n_hosts; i++) {
                struct lhost *h = &l->hosts[i];
                char res[32], info[1024] = "";
                result_text(h, res, sizeof res);
                if (h->reason || h->message)
                        snprintf(info, sizeof info, "%s%s%s", h->reason ? h->reason : "",
                                 h->reason && h->message ? ": " : "",
                                 h->message ? h->message : "");
                else if (h->started)
                        snprintf(info, sizeof info, "%.3fs", h->wall);
                /* One line per host: a message never breaks the table. */
                for (char *p = info; *p; p++)
                        if (*p == '\n' || *p == '\r')
                                *p = ' ';
                snprintf(line, sizeof line, "%-*s  %-9s  %-7s  %s\n", (int)w, h->name, h->state,
                         res, info);
                (void)io_write_all(STDERR_FILENO, line, strlen(line));
        }
}

static int write_json(struct launch *l, const char *path) {
        json_t *o = json_object();
        json_t *arr = json_array();
        for (size_t i = 0; i < l->n_hosts; i++) {
                struct lhost *h = &l->hosts[i];
                json_t *e = json_object();
                json_object_set_new(e, "host", json_string(h->name));
                json_object_set_new(e, "index", json_integer(h->index));
                json_object_set_new(e, "started", json_boolean(h->started));
                json_object_set_new(e, "state", json_string(h->state));
                json_object_set_new(e, "exit_code", h->exit_code >= 0 && !h->signo
                                                            ? json_integer(h->exit_code)
                                                            : json_null());
                json_object_set_new(e, "signal", h->signo ? json_string(tend_signal_name(h->signo))
                                                          : json_null());
                json_object_set_new(e, "reason", h->reason ? json_string(h->reason) : json_null());
                json_object_set_new(e, "message", h->message ? json_string(h->message)
                                                             : json_null());
                char *d = h->diagnostic ? launch_utf8_clean(h->diagnostic, strlen(h->diagnostic))
                                        : NULL;
                json_object_set_new(e, "diagnostic", d ? json_string(d) : json_null());
                free(d);
                json_object_set_new(e, "wall_seconds", h->started ? json_real(h->wall)
                                                                  : json_null());
                json_array_append_new(arr, e);
        }
        json_object_set_new(o, "hosts", arr);
        json_object_set_new(o, "refused_callbacks", json_integer(node_refused(l->node)));
        char *text = launch_json_text(o);
        if (!text)
                return -ENOMEM;
        int e = prog_write_line_to(path, text);
        free(text);
        return e;
}

static int exit_code_of(struct launch *l) {
        bool all_started = true, all_zero = true;
        for (size_t i = 0; i < l->n_hosts; i++) {
                struct lhost *h = &l->hosts[i];
                if (!strcmp(h->state, "exited")) {
                        if (h->exit_code != 0)
                                all_zero = false;
                } else if (!strcmp(h->state, "killed") || !strcmp(h->state, "timed-out")) {
                        all_zero = false;
                } else {
                        all_started = false;
                }
        }
        return !all_started ? 2 : !all_zero ? 1 : 0;
}

/* ---- the command line ---------------------------------------------------------------------- */

enum {
        OPT_HOSTFILE = 1000, OPT_AGENT, OPT_REMOTE_TEND, OPT_TREE, OPT_CONNECT_TIMEOUT,
        OPT_START_TIMEOUT, OPT_TIMEOUT, OPT_STOP, OPT_HEARTBEAT, OPT_PRECHECK, OPT_GATHER,
        OPT_JSON, OPT_LISTEN, OPT_CALLBACK, OPT_HELP,
};

static const struct option options[] = {
        { "hosts", required_argument, NULL, 'H' },
        { "hostfile", required_argument, NULL, OPT_HOSTFILE },
        { "user", required_argument, NULL, 'l' },
        { "agent", required_argument, NULL, OPT_AGENT },
        { "remote-tend", required_argument, NULL, OPT_REMOTE_TEND },
        { "fanout", required_argument, NULL, 'f' },
        { "tree", required_argument, NULL, OPT_TREE },
        { "connect-timeout", required_argument, NULL, OPT_CONNECT_TIMEOUT },
        { "start-timeout", required_argument, NULL, OPT_START_TIMEOUT },
        { "timeout", required_argument, NULL, OPT_TIMEOUT },
        { "stop", required_argument, NULL, OPT_STOP },
        { "heartbeat", required_argument, NULL, OPT_HEARTBEAT },
        { "precheck", required_argument, NULL, OPT_PRECHECK },
        { "gather", no_argument, NULL, OPT_GATHER },
        { "json", required_argument, NULL, OPT_JSON },
        { "listen", required_argument, NULL, OPT_LISTEN },
        { "callback", required_argument, NULL, OPT_CALLBACK },
        { "quiet", no_argument, NULL, 'q' },
        { "verbose", no_argument, NULL, 'v' },
        { "help", no_argument, NULL, OPT_HELP },
        { NULL, 0, NULL, 0 },
};

static bool parse_duration_opt(const char *text, const char *opt, bool zero_ok, uint64_t *ret) {
        int e = tend_parse_duration(text, ret);
        if (e < 0 || (!zero_ok && *ret == 0)) {
                msg_error("launch: invalid duration '%s' for %s (try 500ms, 10s, 2m)", text, opt);
                return false;
        }
        return true;
}

static char **split_commas(const char *text) {
        size_t n = 1;
        for (const char *p = text; *p; p++)
                n += *p == ',';
        char **v = calloc(n + 1, sizeof *v);
        if (!v)
                return NULL;
        size_t k = 0;
        for (const char *p = text;;) {
                size_t len = strcspn(p, ",");
                if (len && !(v[k++] = strndup(p, len))) {
                        config_strv_free(v);
                        return NULL;
                }
                if (!p[len])
                        break;
                p += len + 1;
        }
        return v;
}

/* Tree mode: host k's children are W(k+1) .. W(k+1)+W-1 (heap layout). */
static json_t *tree_children(struct launch *l, const uint8_t secret[LP_KEY], size_t k,
                             size_t width) {
        json_t *arr = json_array();
        for (size_t c = width * (k + 1); c < width * (k + 1) + width && c < l->n_hosts; c++) {
                uint8_t tok[LP_KEY];
                char b64[64];
                lp_token(secret, (uint32_t)c, l->hosts[c].name, tok);
                lp_key_to_base64(tok, b64);
                json_t *e = json_object();
                json_object_set_new(e, "host", json_string(l->hosts[c].name));
                json_object_set_new(e, "index", json_integer((json_int_t)c));
                json_object_set_new(e, "token", json_string(b64));
                json_object_set_new(e, "children", tree_children(l, secret, c, width));
                json_array_append_new(arr, e);
                sodium_memzero(tok, sizeof tok);
        }
        return arr;
}

int cmd_launch(int argc, char **argv) {
        struct launch launch;
        struct launch *l = &launch;
        memset(l, 0, sizeof *l);
        struct launch_hosts hl;
        launch_hosts_init(&hl);
        const char *agent_text = NULL, *remote_tend = NULL, *user = NULL, *precheck = NULL,
                   *json_path = NULL, *listen_addr = NULL, *callback_text = NULL;
        char *stop_text = NULL;
        unsigned long fanout = 32, tree = 0;
        uint64_t connect_timeout = 10000000, start_timeout = 30000000, run_timeout = 0,
                 heartbeat = 5000000;
        struct tend_ladder ladder;
        tend_ladder_default(&ladder);
        int code = EXIT_TEND_FAILURE;
        char **agent = NULL, **callbacks = NULL;
        json_t *job = NULL, *tree_cfg = NULL;
        struct node_child *children = NULL;
        char self[4096];
        uint8_t secret[LP_KEY];
        bool have_hosts = false;
        size_t n_children = 0;

        int opt;
        optind = 1;
        opterr = 0;
        while ((opt = getopt_long(argc, argv, "+H:l:f:qvh", options, NULL)) != -1) {
                char *err = NULL, *end;
                int e;
                switch (opt) {
                case 'H':
                case OPT_HOSTFILE:
                        have_hosts = true;
                        e = opt == 'H' ? launch_hosts_add_list(&hl, optarg, &err)
                                       : launch_hosts_add_file(&hl, optarg, &err);
                        if (e < 0) {
                                msg_error("launch: %s", err ? err : tend_strerror(e));
                                free(err);
                                goto out;
                        }
                        break;
                case 'l': user = optarg; break;
                case OPT_AGENT: agent_text = optarg; break;
                case OPT_REMOTE_TEND: remote_tend = optarg; break;
                case 'f':
                case OPT_TREE:
                        errno = 0;
                        unsigned long v = strtoul(optarg, &end, 10);
                        if (!*optarg || *end || errno || v == 0 || v > 65536 ||
                            (opt == OPT_TREE && v < 1)) {
                                msg_error("launch: invalid number '%s' for %s", optarg,
                                          opt == 'f' ? "--fanout" : "--tree");
                                goto out;
                        }
                        if (opt == 'f')
                                fanout = v;
                        else
                                tree = v;
                        break;
                case OPT_CONNECT_TIMEOUT:
                        if (!parse_duration_opt(optarg, "--connect-timeout", false, &connect_timeout))
                                goto out;
                        break;
                case OPT_START_TIMEOUT:
                        if (!parse_duration_opt(optarg, "--start-timeout", false, &start_timeout))
                                goto out;
                        break;
                case OPT_TIMEOUT:
                        if (!parse_duration_opt(optarg, "--timeout", false, &run_timeout))
                                goto out;
                        break;
                case OPT_HEARTBEAT:
                        if (!parse_duration_opt(optarg, "--heartbeat", false, &heartbeat))
                                goto out;
                        break;
                case OPT_STOP:
                        if (tend_ladder_parse(optarg, &ladder) < 0) {
                                msg_error("launch: invalid ladder '%s' for --stop (try TERM/5s,QUIT/5s,KILL)",
                                          optarg);
                                goto out;
                        }
                        break;
                case OPT_PRECHECK: precheck = optarg; break;
                case OPT_GATHER: l->gather = true; break;
                case OPT_JSON: json_path = optarg; break;
                case OPT_LISTEN: listen_addr = optarg; break;
                case OPT_CALLBACK: callback_text = optarg; break;
                case 'q': l->quiet = true; break;
                case 'v': l->verbose = true; break;
                case 'h':
                case OPT_HELP:
                        fputs(help_launch, stdout);
                        code = 0;
                        goto out;
                default:
                        if (optopt && optopt < 256)
                                msg_error("launch: unknown option '-%c' or missing value (try 'tend launch --help')",
                                          optopt);
                        else
                                msg_error("launch: unknown or incomplete option '%s' (try 'tend launch --help')",
                                          argv[optind - 1]);
                        goto out;
                }
        }
        if (optind >= argc) {
                msg_error("launch: no command given (usage: tend launch [OPTIONS] -H HOSTS -- COMMAND [ARGS...])");
                goto out;
        }
        if (!have_hosts || hl.n == 0) {
                msg_error("launch: no hosts given (-H LIST or --hostfile FILE)");
                goto out;
        }
        if (tree) {
                /* Levels of the heap-ordered tree: each level is W times the one above. Bound
                 * it: every level is a relay, the job line nests the subtree (and is built and
                 * parsed recursively), and a chain of thousands is no tree. */
                size_t depth = 0, covered = 0, level = 1;
                while (covered < hl.n) {
                        level = level > SIZE_MAX / tree ? SIZE_MAX : level * tree;
                        covered = covered > SIZE_MAX - level ? SIZE_MAX : covered + level;
                        depth++;
                }
                if (depth > LAUNCH_TREE_DEPTH_MAX) {
                        msg_error("launch: --tree %lu over %zu hosts makes %zu levels (at most %d): use a wider tree",
                                  tree, hl.n, depth, LAUNCH_TREE_DEPTH_MAX);
                        goto out;
                }
        }
        if (connect_timeout / 1000 > 86400000ull * 365 || start_timeout / 1000 > 86400000ull * 365 ||
            run_timeout / 1000 > 86400000ull * 365 || heartbeat / 1000 > 86400000ull) {
                msg_error("launch: a deadline is too long");
                goto out;
        }
        if (sodium_init() < 0) {
                msg_error("launch: cannot initialise libsodium");
                goto out;
        }
        if (!remote_tend) {
                ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
                if (n <= 0) {
                        msg_error("launch: cannot find our own program (use --remote-tend): %s",
                                  strerror(errno));
                        goto out;
                }
                self[n] = '\0';
                remote_tend = self;
        }
        size_t nw = 0;
        const char *why = NULL;
        if (agent_text) {
                if (config_split(agent_text, &agent, &nw, &why) < 0) {
                        msg_error("launch: invalid --agent '%s': %s", agent_text, why);
                        goto out;
                }
                if (nw == 0) {
                        msg_error("launch: empty --agent template");
                        goto out;
                }
        } else {
                char text[256];
                /* BatchMode: no password prompt can hang a host; ConnectTimeout: ssh gives up
                 * no later than our own connect deadline. */
                snprintf(text, sizeof text,
                         "ssh -T -x -o BatchMode=yes -o ConnectTimeout=%llu %s%%h",
                         (unsigned long long)((connect_timeout + 999999) / 1000000),
                         user ? "-l %u " : "");
                if (config_split(text, &agent, &nw, &why) < 0)
                        goto out;
        }
        if (callback_text && !(callbacks = split_commas(callback_text))) {
                msg_error("launch: out of memory");
                goto out;
        }

        l->n_hosts = hl.n;
        l->hosts = calloc(hl.n, sizeof *l->hosts);
        if (!l->hosts) {
                msg_error("launch: out of memory");
                goto out;
        }
        for (size_t i = 0; i < hl.n; i++) {
                l->hosts[i].name = hl.names[i];
                l->hosts[i].index = (uint32_t)i;
                l->hosts[i].exit_code = -1;
                l->hosts[i].state = "failed";
        }

        /* The job line's common part. */
        char ladder_text[256];
        tend_ladder_format(&ladder, ladder_text, sizeof ladder_text);
        job = json_object();
        json_object_set_new(job, "v", json_integer(1));
        json_t *cmd = json_array();
        for (int i = optind; i < argc; i++)
                json_array_append_new(cmd, json_string(argv[i]));
        if (json_array_size(cmd) != (size_t)(argc - optind)) {
                json_decref(cmd);
                msg_error("launch: the command must be valid UTF-8 text");
                goto out;
        }
        json_object_set_new(job, "command", cmd);
        json_object_set_new(job, "precheck", precheck ? json_string(precheck) : json_null());
        json_object_set_new(job, "start_timeout_ms", json_integer((json_int_t)(start_timeout / 1000)));
        json_object_set_new(job, "timeout_ms", json_integer((json_int_t)(run_timeout / 1000)));
        json_object_set_new(job, "stop", json_string(ladder_text));
        json_object_set_new(job, "heartbeat_ms", json_integer((json_int_t)(heartbeat / 1000)));

        randombytes_buf(secret, sizeof secret);
        n_children = tree ? (tree < hl.n ? tree : hl.n) : hl.n;
        children = calloc(n_children, sizeof *children);
        if (!children) {
                msg_error("launch: out of memory");
                goto out;
        }
        if (tree) {
                tree_cfg = json_object();
                json_t *ag = json_array();
                for (size_t i = 0; agent[i]; i++)
                        json_array_append_new(ag, json_string(agent[i]));
                json_object_set_new(tree_cfg, "agent", ag);
                json_object_set_new(tree_cfg, "remote_tend", json_string(remote_tend));
                json_object_set_new(tree_cfg, "fanout", json_integer((json_int_t)fanout));
                json_object_set_new(tree_cfg, "connect_timeout_ms",
                                    json_integer((json_int_t)(connect_timeout / 1000)));
                json_object_set_new(tree_cfg, "user", user ? json_string(user) : json_null());
        }
        for (size_t i = 0; i < n_children; i++) {
                children[i].name = hl.names[i];
                children[i].index = (uint32_t)i;
                lp_token(secret, (uint32_t)i, hl.names[i], children[i].token);
                if (tree)
                        children[i].subtree = tree_children(l, secret, i, tree);
        }

        if (prog_owner_loop(&l->loop, NULL, NULL) < 0)
                goto out;
        for (int s = 1; s <= 2; s++) {
                resume_ctx[s] = (struct resume_ctx){ .l = l, .stream = s };
                outq_init(&l->out[s], l->loop, s, on_resume, &resume_ctx[s]);
        }
        struct node_config cfg = {
                .agent = agent,
                .remote_tend = remote_tend,
                .user = user,
                .fanout = (unsigned)fanout,
                .connect_timeout = connect_timeout,
                .start_timeout = start_timeout,
                .heartbeat = heartbeat,
                .job = job,
                .tree = tree_cfg,
                .listen = listen_addr,
                .callbacks = callbacks,
                .who = "launch",
                .verbose = l->verbose,
        };
        int e = node_new(l->loop, &cfg, children, n_children, &node_ops, l, &l->node);
        if (e < 0) {
                msg_error("launch: cannot set up: %s", tend_strerror(e));
                goto out_loop;
        }
        static const int sigs[] = { SIGINT, SIGTERM, SIGHUP, SIGUSR1, SIGUSR2 };
        for (size_t i = 0; i < 5; i++) {
                e = tend_signal_new(l->loop, sigs[i], on_signal, l, &l->signals[i]);
                if (e < 0) {
                        msg_error("launch: cannot watch SIG%s: %s", tend_signal_name(sigs[i]),
                                  tend_strerror(e));
                        goto out_loop;
                }
                l->n_signals++;
        }
        if (node_start(l->node) < 0)
                goto out_loop;
        e = tend_loop_run(l->loop);
        if (e < 0) {
                msg_error("launch: event loop failed: %s", tend_strerror(e));
                goto out_loop;
        }
        for (size_t i = 0; i < l->n_hosts; i++)
                if (l->hosts[i].hs != HS_FINAL) {
                        /* Cannot happen: the node reports every host. Say so rather than
                         * invent a result. */
                        l->hosts[i].reason = strdup("protocol");
                        l->hosts[i].message = strdup("no result came back");
                        host_final(l, &l->hosts[i], "failed");
                }
        /* Every host's diagnostic (its agent's own words), not only a failed one's: now
         * that every agent has ended it is complete. Hosts deeper in a tree have theirs
         * only in a FAILED or LOST frame. */
        for (size_t i = 0; i < l->n_hosts; i++)
                if (!l->hosts[i].diagnostic)
                        l->hosts[i].diagnostic = node_diagnostic(l->node, l->hosts[i].index);
        if (l->gather)
                print_gathered(l);
        for (int s = 1; s <= 2; s++)
                outq_finish(&l->out[s]);
        if (!l->quiet)
                print_table(l);
        if (json_path) {
                e = write_json(l, json_path);
                if (e < 0)
                        msg_error("launch: cannot write '%s': %s", json_path, tend_strerror(e));
        }
        code = exit_code_of(l);
out_loop:
        l->node = node_free(l->node);
        for (unsigned i = 0; i < l->n_signals; i++)
                tend_signal_free(l->signals[i]);
        for (int s = 1; s <= 2; s++)
                outq_free(&l->out[s]);
        tend_loop_free(l->loop);
out:
        if (l->hosts)
                for (size_t i = 0; i < l->n_hosts; i++) {
                        struct lhost *h = &l->hosts[i];
                        free(h->reason);
                        free(h->message);
                        free(h->diagnostic);
                        for (int s = 0; s < 3; s++) {
                                free(h->line[s].buf);
                                free(h->g[s].buf);
                        }
                }
        free(l->hosts);
        if (children)
                for (size_t i = 0; i < n_children; i++)
                        json_decref(children[i].subtree);
        free(children);
        sodium_memzero(secret, sizeof secret);
        json_decref(job);
        json_decref(tree_cfg);
        config_strv_free(agent);
        config_strv_free(callbacks);
        free(stop_text);
        launch_hosts_free(&hl);
        return code;
}
