/* config.c — reading tend.conf(5): `[service NAME]` sections of `key = value` lines.
 *
 * The INI layer is libinih (Debian's libinih-dev): sections, keys, comment lines, a UTF-8
 * BOM. Two of its options are turned off on purpose:
 *  - inline comments: values are commands, where ';' and '#' mean something (`sh -c 'a; b'`);
 *    comments are whole lines starting with '#' or ';';
 *  - Python-style continuation (an indented line continues the value): it would make every
 *    indented key a continuation of the one before. Instead a line ending in a backslash
 *    continues on the next line, as in a shell; our reader joins such lines before inih sees
 *    them and keeps the map from joined lines back to physical line numbers for messages.
 * Values are then split into words by config_split() (shell-like quoting, no expansion).
 *
 * Parsing is in two passes: first every file is read into a list of (key, value, file,
 * line) per service, then each service's keys are interpreted. So the order of keys inside a
 * section does not matter (shell = yes may follow command), and every problem is reported
 * with the file and line of the key it concerns. */
#include "config.h"
#include "account.h"

#include <ctype.h>
#include <errno.h>
#include <glob.h>
#include <ini.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <sys/stat.h>

#define CONFIG_LINE_MAX (64 * 1024)
#define CONFIG_INCLUDE_DEPTH 8
#define CONFIG_STRV_MAX 4096

/* ---- words -------------------------------------------------------------------------- */

void config_strv_free(char **v) {
        if (!v)
                return;
        for (char **p = v; *p; p++)
                free(*p);
        free(v);
}

static int strv_push(char ***v, size_t *n, char *s) {
        if (*n + 2 > CONFIG_STRV_MAX)
                return -E2BIG;
        char **nv = realloc(*v, (*n + 2) * sizeof *nv);
        if (!nv)
                return -ENOMEM;
        nv[(*n)++] = s;
        nv[*n] = NULL;
        *v = nv;
        return 0;
}

int config_split(const char *text, char ***ret_words, size_t *ret_n, const char **ret_error) {
        char **words = NULL;
        size_t n = 0;
        size_t len = strlen(text);
        char *word = malloc(len + 1);
        if (!word)
                return -ENOMEM;
        const char *p = text;
        int r = 0;
        *ret_error = NULL;
        for (;;) {
                while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
                        p++;
                if (!*p)
                        break;
                size_t w = 0;
                while (*p && *p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
                        if (*p == '\'') {
                                const char *end = strchr(p + 1, '\'');
                                if (!end) {
                                        *ret_error = "unterminated single quote";
                                        r = -EINVAL;
                                        goto out;
                                }
                                memcpy(word + w, p + 1, (size_t)(end - p - 1));
                                w += (size_t)(end - p - 1);
                                p = end + 1;
                        } else if (*p == '"') {
                                p++;
                                while (*p && *p != '"') {
                                        if (*p == '\\' && p[1] && strchr("\"\\$`\n", p[1])) {
                                                if (p[1] != '\n')
                                                        word[w++] = p[1];
                                                p += 2;
                                        } else {
                                                word[w++] = *p++;
                                        }
                                }
                                if (*p != '"') {
                                        *ret_error = "unterminated double quote";
                                        r = -EINVAL;
                                        goto out;
                                }
                                p++;
                        } else if (*p == '\\') {
                                if (!p[1]) {
                                        *ret_error = "backslash at the end of the value";
                                        r = -EINVAL;
                                        goto out;
                                }
                                word[w++] = p[1];
                                p += 2;
                        } else {
                                word[w++] = *p++;
                        }
                }
                word[w] = '\0';
                char *copy = strdup(word);
                if (!copy) {
                        r = -ENOMEM;
                        goto out;
                }
                r = strv_push(&words, &n, copy);
                if (r < 0) {
                        free(copy);
                        if (r == -E2BIG)
                                *ret_error = "too many words";
                        goto out;
                }
        }
        if (!words) {
                words = calloc(1, sizeof *words);
                if (!words) {
                        r = -ENOMEM;
                        goto out;
                }
        }
out:
        free(word);
        if (r < 0) {
                config_strv_free(words);
                return r;
        }
        *ret_words = words;
        if (ret_n)
                *ret_n = n;
        return 0;
}

/* ---- pass 1: reading files ------------------------------------------------------------ */

struct raw_kv {
        char *key, *value;
        const char *file; /* owned by the parse's file list */
        int line;
};

struct raw_service {
        char *name;
        const char *file;
        int line;
        struct raw_kv *kv;
        size_t n_kv, cap_kv;
};

struct parse {
        struct raw_service *svc;
        size_t n_svc, cap_svc;
        char **files; /* every file name read, for raw_kv.file */
        size_t n_files;
        int errors;
        int depth;
        /* The files being read now, outermost first: an include of one of them is a loop
         * (which would otherwise be read again at every level down to the depth limit, each
         * time once per include line: exponential). */
        struct { dev_t dev; ino_t ino; } open[CONFIG_INCLUDE_DEPTH + 1];
};

/* One file being read: our reader joins backslash-continued lines into one logical line and
 * remembers where each logical line started. */
struct reader {
        FILE *f;
        const char *file;
        struct parse *ps;
        char *logical;      /* the current logical line, '\n'-terminated */
        size_t len, pos;
        int physical;       /* physical lines read so far */
        int *starts;        /* physical start line of logical line i (0-based) */
        size_t n_logical, cap_starts;
        bool in_service;    /* in a good [service NAME] section, at index cur_index */
        size_t cur_index;
};

static void perror_at(struct parse *ps, const char *file, int line, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));
static void perror_at(struct parse *ps, const char *file, int line, const char *fmt, ...) {
        char text[1024];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(text, sizeof text, fmt, ap);
        va_end(ap);
        if (line > 0)
                msg_error("%s:%d: %s", file, line, text);
        else
                msg_error("%s: %s", file, text);
        ps->errors++;
}

static void section_header(struct reader *r, int line);

/* Read the next logical line into r->logical. Returns false at the end of the file. */
static bool reader_next_logical(struct reader *r) {
        char *phys = NULL;
        size_t cap = 0;
        r->len = r->pos = 0;
        int start = r->physical + 1;
        bool any = false;
        for (;;) {
                ssize_t n = getline(&phys, &cap, r->f);
                if (n < 0)
                        break;
                any = true;
                r->physical++;
                if (n > 0 && phys[n - 1] == '\n')
                        phys[--n] = '\0';
                if (n > 0 && phys[n - 1] == '\r')
                        phys[--n] = '\0';
                bool more = n > 0 && phys[n - 1] == '\\';
                if (more)
                        phys[--n] = '\0';
                if (r->len + (size_t)n + 2 > CONFIG_LINE_MAX) {
                        perror_at(r->ps, r->file, start, "line too long (more than %d bytes)",
                                  CONFIG_LINE_MAX);
                        more = false;
                        n = 0;
                }
                char *nl = realloc(r->logical, r->len + (size_t)n + 2);
                if (!nl)
                        break;
                r->logical = nl;
                memcpy(r->logical + r->len, phys, (size_t)n);
                r->len += (size_t)n;
                if (!more)
                        break;
        }
        free(phys);
        if (!any)
                return false;
        if (!r->logical) {
                r->logical = malloc(2);
                if (!r->logical)
                        return false;
        }
        r->logical[r->len++] = '\n';
        r->logical[r->len] = '\0';
        if (r->n_logical == r->cap_starts) {
                size_t ncap = r->cap_starts ? r->cap_starts * 2 : 64;
                int *ns = realloc(r->starts, ncap * sizeof *ns);
                if (!ns)
                        return false;
                r->starts = ns;
                r->cap_starts = ncap;
        }
        r->starts[r->n_logical++] = start;
        section_header(r, start);
        return true;
}

/* inih's fgets-like reader. */
static char *reader_fn(char *str, int num, void *stream) {
        struct reader *r = stream;
        if (r->pos >= r->len && !reader_next_logical(r))
                return NULL;
        size_t take = r->len - r->pos;
        if (take > (size_t)num - 1)
                take = (size_t)num - 1;
        memcpy(str, r->logical + r->pos, take);
        str[take] = '\0';
        r->pos += take;
        return str;
}

/* The physical line where logical line `logical` (1-based) started. */
static int reader_line(const struct reader *r, int logical) {
        if (logical >= 1 && (size_t)logical <= r->n_logical)
                return r->starts[logical - 1];
        return r->physical;
}

static int current_line(const struct reader *r) {
        return r->n_logical ? r->starts[r->n_logical - 1] : 0;
}

static bool valid_name(const char *s) {
        size_t n = strlen(s);
        if (n == 0 || n > CONFIG_NAME_MAX)
                return false;
        for (const char *p = s; *p; p++)
                if (!isalnum((unsigned char)*p) && !strchr("_.@-", *p))
                        return false;
        return s[0] != '.' && s[0] != '-';
}

static struct raw_service *raw_find(struct parse *ps, const char *name) {
        for (size_t i = 0; i < ps->n_svc; i++)
                if (!strcmp(ps->svc[i].name, name))
                        return &ps->svc[i];
        return NULL;
}

static int parse_file(struct parse *ps, const char *path);

static void do_include(struct reader *r, const char *value, int line) {
        struct parse *ps = r->ps;
        char **words;
        const char *err;
        size_t n;
        if (config_split(value, &words, &n, &err) < 0) {
                perror_at(ps, r->file, line, "include: %s", err ? err : "out of memory");
                return;
        }
        if (n != 1) {
                perror_at(ps, r->file, line, "include wants one pattern (quote a pattern with blanks)");
                config_strv_free(words);
                return;
        }
        char pattern[PATH_MAX];
        const char *slash = strrchr(r->file, '/');
        if (words[0][0] == '/' || !slash)
                snprintf(pattern, sizeof pattern, "%s", words[0]);
        else
                snprintf(pattern, sizeof pattern, "%.*s/%s", (int)(slash - r->file), r->file,
                         words[0]);
        config_strv_free(words);
        glob_t g;
        int gr = glob(pattern, GLOB_ERR, NULL, &g);
        if (gr == GLOB_NOMATCH) {
                /* An empty conf.d is fine; a plain file name that is missing is not. */
                if (!strpbrk(pattern, "*?["))
                        perror_at(ps, r->file, line, "include: '%s' does not exist", pattern);
                return;
        }
        if (gr != 0) {
                perror_at(ps, r->file, line, "include: cannot read '%s'", pattern);
                globfree(&g);
                return;
        }
        if (ps->depth >= CONFIG_INCLUDE_DEPTH) {
                perror_at(ps, r->file, line, "include: nested more than %d deep (a loop?)",
                          CONFIG_INCLUDE_DEPTH);
                globfree(&g);
                return;
        }
        /* glob() sorts its matches unless told not to. */
        for (size_t i = 0; i < g.gl_pathc; i++) {
                ps->depth++;
                int e = parse_file(ps, g.gl_pathv[i]);
                ps->depth--;
                if (e < 0 && e != -EINVAL)
                        perror_at(ps, r->file, line, "include: cannot read '%s': %s",
                                  g.gl_pathv[i], strerror(-e));
        }
        globfree(&g);
}

/* A "[...]" line: a new section starts here. Sections are made as their header is read (inih
 * calls us only for keys, and would merge two sections of the same name). A header without
 * its ']' is left to inih, which reports the syntax error. */
static void section_header(struct reader *r, int line) {
        struct parse *ps = r->ps;
        const char *p = r->logical;
        while (*p == ' ' || *p == '\t')
                p++;
        if (*p != '[')
                return;
        const char *close = strchr(p, ']');
        if (!close)
                return;
        r->in_service = false;
        char section[CONFIG_NAME_MAX + 64];
        const char *b = p + 1, *e = close;
        while (b < e && (*b == ' ' || *b == '\t'))
                b++;
        while (e > b && (e[-1] == ' ' || e[-1] == '\t'))
                e--;
        snprintf(section, sizeof section, "%.*s", (int)(e - b), b);
        if (strncmp(section, "service ", 8) != 0 && strncmp(section, "service\t", 8) != 0) {
                perror_at(ps, r->file, line, "unknown section '[%s]' (sections are [service NAME])",
                          section);
                return;
        }
        const char *svc_name = section + 8;
        while (*svc_name == ' ' || *svc_name == '\t')
                svc_name++;
        if (!valid_name(svc_name)) {
                perror_at(ps, r->file, line,
                          "invalid service name '%s' (letters, digits, _ . @ -; at most %d)",
                          svc_name, CONFIG_NAME_MAX);
                return;
        }
        struct raw_service *old = raw_find(ps, svc_name);
        if (old) {
                perror_at(ps, r->file, line, "service '%s' defined twice (first at %s:%d)",
                          svc_name, old->file, old->line);
                return;
        }
        if (ps->n_svc == ps->cap_svc) {
                size_t ncap = ps->cap_svc ? ps->cap_svc * 2 : 16;
                struct raw_service *nv = realloc(ps->svc, ncap * sizeof *nv);
                if (!nv) {
                        ps->errors++;
                        return;
                }
                ps->svc = nv;
                ps->cap_svc = ncap;
        }
        struct raw_service *s = &ps->svc[ps->n_svc];
        memset(s, 0, sizeof *s);
        s->name = strdup(svc_name);
        if (!s->name) {
                ps->errors++;
                return;
        }
        s->file = r->file;
        s->line = line;
        /* By index: the array may move when more sections come. */
        r->cur_index = ps->n_svc++;
        r->in_service = true;
}

static int handler(void *user, const char *section, const char *name, const char *value) {
        struct reader *r = user;
        struct parse *ps = r->ps;
        int line = current_line(r);
        if (!*section) {
                if (!strcmp(name, "include"))
                        do_include(r, value, line);
                else
                        perror_at(ps, r->file, line,
                                  "'%s' outside a section (only include = may be here)", name);
                return 1;
        }
        if (!r->in_service)
                return 1; /* a bad section header, reported when it was read */
        struct raw_service *s = &ps->svc[r->cur_index];
        if (s->n_kv == s->cap_kv) {
                /* From 4: most sections have a few keys, and with room for 16 the parse of
                 * 10,000 services peaked 3.8 MB higher than it needed — freed afterwards,
                 * but left in the heap as holes nothing else filled (Pss of a supervisor). */
                size_t ncap = s->cap_kv ? s->cap_kv * 2 : 4;
                struct raw_kv *nk = realloc(s->kv, ncap * sizeof *nk);
                if (!nk)
                        return 0;
                s->kv = nk;
                s->cap_kv = ncap;
        }
        struct raw_kv *kv = &s->kv[s->n_kv];
        kv->key = strdup(name);
        kv->value = strdup(value);
        kv->file = r->file;
        kv->line = line;
        if (!kv->key || !kv->value) {
                free(kv->key);
                free(kv->value);
                return 0;
        }
        s->n_kv++;
        return 1;
}

static int parse_file(struct parse *ps, const char *path) {
        char **nf = realloc(ps->files, (ps->n_files + 1) * sizeof *nf);
        if (!nf)
                return -ENOMEM;
        ps->files = nf;
        char *file = strdup(path);
        if (!file)
                return -ENOMEM;
        ps->files[ps->n_files++] = file;
        FILE *f = fopen(path, "re");
        if (!f)
                return -errno;
        struct stat st;
        if (fstat(fileno(f), &st) == 0 && ps->depth <= CONFIG_INCLUDE_DEPTH) {
                for (int i = 0; i < ps->depth; i++)
                        if (ps->open[i].dev == st.st_dev && ps->open[i].ino == st.st_ino) {
                                perror_at(ps, file, 0, "include loop: this file is being read already");
                                fclose(f);
                                return -EINVAL;
                        }
                ps->open[ps->depth].dev = st.st_dev;
                ps->open[ps->depth].ino = st.st_ino;
        }
        struct reader r = { .f = f, .file = file, .ps = ps };
        int e = ini_parse_stream(reader_fn, &r, handler, &r);
        if (e > 0) {
                perror_at(ps, file, reader_line(&r, e),
                          "syntax error (expected 'key = value', '[service NAME]' or a comment)");
        } else if (e < 0) {
                perror_at(ps, file, 0, "out of memory");
        }
        if (ferror(f))
                perror_at(ps, file, 0, "read error");
        fclose(f);
        free(r.logical);
        free(r.starts);
        return e == 0 ? 0 : -EINVAL;
}

static void raw_free(struct parse *ps) {
        for (size_t i = 0; i < ps->n_svc; i++) {
                for (size_t k = 0; k < ps->svc[i].n_kv; k++) {
                        free(ps->svc[i].kv[k].key);
                        free(ps->svc[i].kv[k].value);
                }
                free(ps->svc[i].kv);
                free(ps->svc[i].name);
        }
        free(ps->svc);
        for (size_t i = 0; i < ps->n_files; i++)
                free(ps->files[i]);
        free(ps->files);
}

/* ---- pass 2: interpreting keys ------------------------------------------------------ */

struct ctx {
        struct parse *ps;
        struct svc_config *s;
        const struct raw_kv *kv;
        const char *base_dir; /* directory of the service's file, for relative paths */
};

static void kv_error(struct ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void kv_error(struct ctx *c, const char *fmt, ...) {
        char text[900];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(text, sizeof text, fmt, ap);
        va_end(ap);
        perror_at(c->ps, c->kv->file, c->kv->line, "%s: %s", c->kv->key, text);
}

/* Exactly one word. Returns a malloc'd string or NULL (error reported). */
static char *one_word(struct ctx *c) {
        char **w;
        size_t n;
        const char *err;
        if (config_split(c->kv->value, &w, &n, &err) < 0) {
                kv_error(c, "%s", err ? err : "out of memory");
                return NULL;
        }
        if (n != 1) {
                kv_error(c, n ? "wants one value (quote it if it has blanks)" : "wants a value");
                config_strv_free(w);
                return NULL;
        }
        char *s = w[0];
        free(w);
        return s;
}

static char *resolve_path(struct ctx *c, char *p) {
        if (!p || p[0] == '/' || !c->base_dir)
                return p;
        char *full;
        if (asprintf(&full, "%s/%s", c->base_dir, p) < 0)
                full = NULL;
        free(p);
        return full;
}

static bool parse_bool(struct ctx *c, bool *ret) {
        char *w = one_word(c);
        if (!w)
                return false;
        bool ok = true;
        if (!strcmp(w, "yes") || !strcmp(w, "true") || !strcmp(w, "on") || !strcmp(w, "1"))
                *ret = true;
        else if (!strcmp(w, "no") || !strcmp(w, "false") || !strcmp(w, "off") || !strcmp(w, "0"))
                *ret = false;
        else {
                kv_error(c, "'%s' is not yes or no", w);
                ok = false;
        }
        free(w);
        return ok;
}

static bool parse_dur(struct ctx *c, uint64_t *ret) {
        char *w = one_word(c);
        if (!w)
                return false;
        int e = tend_parse_duration(w, ret);
        if (e < 0)
                kv_error(c, "invalid duration '%s' (try 100ms, 10s, 2m)", w);
        free(w);
        return e == 0;
}

static bool parse_uint(const char *s, unsigned long long max, unsigned long long *ret) {
        if (!isdigit((unsigned char)*s))
                return false;
        char *end;
        errno = 0;
        unsigned long long v = strtoull(s, &end, 10);
        if (errno || *end || v > max)
                return false;
        *ret = v;
        return true;
}

/* "512", "64K", "10M", "1G" (binary units). */
static bool parse_size(const char *s, uint64_t *ret) {
        char *end;
        if (!isdigit((unsigned char)*s))
                return false;
        errno = 0;
        unsigned long long v = strtoull(s, &end, 10);
        if (errno)
                return false;
        unsigned shift = 0;
        if (*end) {
                switch (toupper((unsigned char)*end)) {
                case 'K': shift = 10; break;
                case 'M': shift = 20; break;
                case 'G': shift = 30; break;
                default: return false;
                }
                end++;
                if (*end == 'i' || *end == 'I')
                        end++;
                if (*end == 'B' || *end == 'b')
                        end++;
                if (*end)
                        return false;
        }
        if (v > (UINT64_MAX >> shift))
                return false;
        *ret = (uint64_t)v << shift;
        return true;
}

static bool parse_command(struct ctx *c, struct svc_command *cmd, bool shell) {
        if (!*c->kv->value) {
                kv_error(c, "wants a command");
                return false;
        }
        cmd->text = strdup(c->kv->value);
        if (!cmd->text)
                return false;
        if (shell) {
                cmd->argv = calloc(4, sizeof *cmd->argv);
                if (!cmd->argv)
                        return false;
                cmd->argv[0] = strdup("/bin/sh");
                cmd->argv[1] = strdup("-c");
                cmd->argv[2] = strdup(c->kv->value);
                return cmd->argv[0] && cmd->argv[1] && cmd->argv[2];
        }
        const char *err;
        size_t n;
        if (config_split(c->kv->value, &cmd->argv, &n, &err) < 0) {
                kv_error(c, "%s", err ? err : "out of memory");
                return false;
        }
        if (n == 0) {
                kv_error(c, "wants a command");
                return false;
        }
        return true;
}

static const struct {
        const char *name;
        int resource;
} rlimit_names[] = {
        { "as", RLIMIT_AS }, { "core", RLIMIT_CORE }, { "cpu", RLIMIT_CPU },
        { "data", RLIMIT_DATA }, { "fsize", RLIMIT_FSIZE }, { "locks", RLIMIT_LOCKS },
        { "memlock", RLIMIT_MEMLOCK }, { "msgqueue", RLIMIT_MSGQUEUE },
        { "nice", RLIMIT_NICE }, { "nofile", RLIMIT_NOFILE }, { "nproc", RLIMIT_NPROC },
        { "rss", RLIMIT_RSS }, { "rtprio", RLIMIT_RTPRIO }, { "rttime", RLIMIT_RTTIME },
        { "sigpending", RLIMIT_SIGPENDING }, { "stack", RLIMIT_STACK },
};

static bool parse_rlim_value(const char *s, rlim_t *ret) {
        if (!strcmp(s, "infinity") || !strcmp(s, "unlimited")) {
                *ret = RLIM_INFINITY;
                return true;
        }
        uint64_t v;
        if (!parse_size(s, &v))
                return false;
        *ret = (rlim_t)v;
        return true;
}

static void key_limit(struct ctx *c, const char *which) {
        int resource = -1;
        for (size_t i = 0; i < ARRAY_SIZE(rlimit_names); i++)
                if (!strcmp(rlimit_names[i].name, which))
                        resource = rlimit_names[i].resource;
        if (resource < 0) {
                kv_error(c, "unknown limit (limit-nofile, limit-core, limit-nproc, ...)");
                return;
        }
        char *w = one_word(c);
        if (!w)
                return;
        struct rlimit lim;
        char *colon = strchr(w, ':');
        if (colon)
                *colon = '\0';
        if (!parse_rlim_value(w, &lim.rlim_cur) ||
            !parse_rlim_value(colon ? colon + 1 : w, &lim.rlim_max) ||
            (lim.rlim_max != RLIM_INFINITY &&
             (lim.rlim_cur == RLIM_INFINITY || lim.rlim_cur > lim.rlim_max))) {
                kv_error(c, "want N, SOFT:HARD or infinity (soft at most hard)");
                free(w);
                return;
        }
        free(w);
        struct svc_config *s = c->s;
        for (size_t i = 0; i < s->x->n_rlimits; i++)
                if (s->x->rlimits[i].resource == resource) {
                        s->x->rlimits[i].limit = lim;
                        return;
                }
        if (s->x->n_rlimits >= CONFIG_RLIMITS_MAX)
                return;
        struct tend_rlimit *v = realloc(s->x->rlimits, (s->x->n_rlimits + 1) * sizeof *v);
        if (!v) {
                kv_error(c, "out of memory");
                return;
        }
        s->x->rlimits = v;
        s->x->rlimits[s->x->n_rlimits++] = (struct tend_rlimit){ resource, lim };
}

static void set_bit(uint8_t *bits, unsigned i) {
        bits[i / 8] |= (uint8_t)(1u << (i % 8));
}

static bool get_bit(const uint8_t *bits, unsigned i) {
        return bits[i / 8] & (1u << (i % 8));
}

static void key_success_exit(struct ctx *c) {
        char **w;
        size_t n;
        const char *err;
        if (config_split(c->kv->value, &w, &n, &err) < 0) {
                kv_error(c, "%s", err ? err : "out of memory");
                return;
        }
        for (size_t i = 0; i < n; i++) {
                unsigned long long v;
                if (parse_uint(w[i], 255, &v)) {
                        set_bit(c->s->x->success_codes, (unsigned)v);
                        continue;
                }
                int sig = tend_signal_from_name(w[i]);
                if (sig > 0 && sig < 128 && !isdigit((unsigned char)w[i][0]))
                        set_bit(c->s->x->success_signals, (unsigned)sig);
                else
                        kv_error(c, "'%s' is neither an exit code (0-255) nor a signal name",
                                 w[i]);
        }
        config_strv_free(w);
}

static void key_restart(struct ctx *c) {
        char *w = one_word(c);
        if (!w)
                return;
        if (!strcmp(w, "always"))
                c->s->x->policy.restart = SVC_RESTART_ALWAYS;
        else if (!strcmp(w, "on-failure"))
                c->s->x->policy.restart = SVC_RESTART_ON_FAILURE;
        else if (!strcmp(w, "never") || !strcmp(w, "no"))
                c->s->x->policy.restart = SVC_RESTART_NEVER;
        else
                kv_error(c, "'%s' is not always, on-failure or never", w);
        free(w);
}

static void key_jitter(struct ctx *c) {
        char *w = one_word(c);
        if (!w)
                return;
        char *end;
        errno = 0;
        double v = strtod(w, &end);
        bool pct = *end == '%';
        if (pct)
                end++;
        if (errno || *end || end == w || v < 0 || (pct && v > 100) || (!pct && v != 0))
                kv_error(c, "'%s' is not a percentage from 0%% to 100%%", w);
        else
                c->s->x->policy.jitter_ppm = (uint32_t)(v * 10000.0 + 0.5);
        free(w);
}

static void key_start_limit(struct ctx *c) {
        char *w = one_word(c);
        if (!w)
                return;
        if (!strcmp(w, "0") || !strcmp(w, "none")) {
                c->s->x->policy.start_limit_count = 0;
                free(w);
                return;
        }
        char *slash = strchr(w, '/');
        unsigned long long count;
        uint64_t interval;
        if (slash)
                *slash = '\0';
        if (!slash || !parse_uint(w, 1000000, &count) || count == 0 ||
            tend_parse_duration(slash + 1, &interval) < 0 || interval == 0)
                kv_error(c, "want COUNT/INTERVAL, e.g. 10/60s (or none)");
        else {
                c->s->x->policy.start_limit_count = (unsigned)count;
                c->s->x->policy.start_limit_interval = interval;
        }
        free(w);
}

static void key_type(struct ctx *c) {
        char *w = one_word(c);
        if (!w)
                return;
        if (!strcmp(w, "simple"))
                c->s->type = SVC_TYPE_SIMPLE;
        else if (!strcmp(w, "forking"))
                c->s->type = SVC_TYPE_FORKING;
        else
                kv_error(c, "'%s' is not simple or forking", w);
        free(w);
}

/* host:port, [v6]:port, localhost:port. Only addresses: a name lookup could block the loop. */
static bool parse_tcp(const char *text, struct sockaddr_storage *ss, socklen_t *len) {
        char host[128];
        const char *port;
        if (text[0] == '[') {
                const char *end = strchr(text, ']');
                if (!end || end[1] != ':' || (size_t)(end - text - 1) >= sizeof host)
                        return false;
                memcpy(host, text + 1, (size_t)(end - text - 1));
                host[end - text - 1] = '\0';
                port = end + 2;
        } else {
                const char *colon = strrchr(text, ':');
                if (!colon || (size_t)(colon - text) >= sizeof host)
                        return false;
                memcpy(host, text, (size_t)(colon - text));
                host[colon - text] = '\0';
                port = colon + 1;
        }
        unsigned long long p;
        if (!parse_uint(port, 65535, &p) || p == 0)
                return false;
        memset(ss, 0, sizeof *ss);
        struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
        if (!strcmp(host, "localhost") || !*host)
                snprintf(host, sizeof host, "127.0.0.1");
        if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
                in4->sin_family = AF_INET;
                in4->sin_port = htons((uint16_t)p);
                *len = sizeof *in4;
                return true;
        }
        if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
                in6->sin6_family = AF_INET6;
                in6->sin6_port = htons((uint16_t)p);
                *len = sizeof *in6;
                return true;
        }
        return false;
}

static void key_ready(struct ctx *c) {
        struct svc_config *s = c->s;
        const char *v = c->kv->value;
        if (!strncmp(v, "exec:", 5)) {
                struct raw_kv shifted = *c->kv;
                shifted.value = (char *)v + 5;
                const struct raw_kv *saved = c->kv;
                c->kv = &shifted;
                if (parse_command(c, &s->x->ready_exec, s->shell))
                        s->ready = SVC_READY_EXEC;
                c->kv = saved;
                return;
        }
        char *w = one_word(c);
        if (!w)
                return;
        unsigned long long fd;
        if (!strcmp(w, "none"))
                s->ready = SVC_READY_NONE;
        else if (!strcmp(w, "notify"))
                s->ready = SVC_READY_NOTIFY;
        else if (!strcmp(w, "stop"))
                s->ready = SVC_READY_STOP;
        else if (!strncmp(w, "fd:", 3)) {
                if (!parse_uint(w + 3, 1023, &fd) || fd < 3)
                        kv_error(c, "fd:N wants N from 3 to 1023");
                else {
                        s->ready = SVC_READY_FD;
                        s->x->ready_fd = (int)fd;
                }
        } else if (!strncmp(w, "tcp:", 4)) {
                if (!s->x->tcp_addr && !(s->x->tcp_addr = calloc(1, sizeof *s->x->tcp_addr)))
                        kv_error(c, "out of memory");
                else if (!parse_tcp(w + 4, s->x->tcp_addr, &s->x->tcp_addr_len))
                        kv_error(c, "tcp:HOST:PORT wants a numeric address or localhost and a "
                                    "port (tcp:127.0.0.1:8080, tcp:[::1]:80)");
                else {
                        s->ready = SVC_READY_TCP;
                        s->x->tcp_text = strdup(w + 4);
                }
        } else
                kv_error(c, "'%s' is not none, notify, fd:N, stop, tcp:HOST:PORT or exec:COMMAND",
                         w);
        free(w);
}

static void key_stop(struct ctx *c) {
        char *w = one_word(c);
        if (!w)
                return;
        struct tend_ladder l;
        struct tend_ladder *copy = NULL;
        if (tend_ladder_parse(w, &l) < 0)
                kv_error(c, "invalid ladder '%s' (try TERM/10s,KILL)", w);
        else if (!(copy = malloc(sizeof *copy)))
                kv_error(c, "out of memory");
        else {
                *copy = l;
                if (c->s->ladder != &config_default_ladder)
                        free((void *)c->s->ladder);
                c->s->ladder = copy;
        }
        free(w);
}

static void key_names(struct ctx *c, char ***v, size_t *n) {
        char **w;
        size_t k;
        const char *err;
        if (config_split(c->kv->value, &w, &k, &err) < 0) {
                kv_error(c, "%s", err ? err : "out of memory");
                return;
        }
        for (size_t i = 0; i < k; i++) {
                if (!valid_name(w[i])) {
                        kv_error(c, "'%s' is not a service name", w[i]);
                        free(w[i]);
                        continue;
                }
                if (strv_push(v, n, w[i]) < 0)
                        free(w[i]);
        }
        free(w);
}

static void key_environment(struct ctx *c) {
        char **w;
        size_t k;
        const char *err;
        if (config_split(c->kv->value, &w, &k, &err) < 0) {
                kv_error(c, "%s", err ? err : "out of memory");
                return;
        }
        for (size_t i = 0; i < k; i++) {
                char *eq = strchr(w[i], '=');
                if (!eq || eq == w[i]) {
                        kv_error(c, "'%s' is not NAME=VALUE", w[i]);
                        free(w[i]);
                        continue;
                }
                if (strv_push(&c->s->x->env, &c->s->x->n_env, w[i]) < 0)
                        free(w[i]);
        }
        free(w);
}

static void key_umask(struct ctx *c) {
        char *w = one_word(c);
        if (!w)
                return;
        char *end;
        errno = 0;
        long v = strtol(w, &end, 8);
        if (errno || *end || end == w || v < 0 || v > 0777)
                kv_error(c, "'%s' is not an octal mode (e.g. 022)", w);
        else {
                c->s->x->has_umask = true;
                c->s->x->umask = (mode_t)v;
        }
        free(w);
}

static void key_log(struct ctx *c) {
        char *w = one_word(c);
        if (!w)
                return;
        struct svc_config *s = c->s;
        if (!strcmp(w, "inherit")) {
                s->log = SVC_LOG_INHERIT;
        } else if (!strcmp(w, "none")) {
                s->log = SVC_LOG_NONE;
        } else if (!strncmp(w, "file:", 5)) {
                char *path = w + 5;
                char *opts = strchr(path, ',');
                if (opts)
                        *opts++ = '\0';
                if (!*path) {
                        kv_error(c, "file: wants a path");
                        free(w);
                        return;
                }
                s->log = SVC_LOG_FILE;
                s->x->log_path = resolve_path(c, strdup(path));
                for (char *o = opts; o && *o;) {
                        char *next = strchr(o, ',');
                        if (next)
                                *next++ = '\0';
                        unsigned long long k;
                        if (!strncmp(o, "size=", 5) && parse_size(o + 5, &s->x->log_size))
                                ;
                        else if (!strncmp(o, "keep=", 5) && parse_uint(o + 5, 1000, &k))
                                s->x->log_keep = (unsigned)k;
                        else
                                kv_error(c, "unknown file option '%s' (size=N[K|M|G], keep=K)", o);
                        o = next;
                }
        } else {
                kv_error(c, "'%s' is not inherit, none or file:PATH[,size=N][,keep=K]", w);
        }
        free(w);
}

static void key_user(struct ctx *c) {
        free(c->s->x->user);
        c->s->x->user = one_word(c);
}

static void key_group(struct ctx *c) {
        free(c->s->x->group);
        c->s->x->group = one_word(c);
}

static const char *const hook_keys[SVC_HOOK_COUNT] = {
        "pre-start", "post-start", "pre-stop", "post-stop",
};

/* Keys that may be given more than once (their values add up). */
static bool key_repeatable(const char *key) {
        return !strcmp(key, "environment") || !strcmp(key, "after") ||
               !strcmp(key, "requires") || !strcmp(key, "success-exit");
}

static const char *const known_keys[] = {
        "command", "shell", "directory", "environment", "user", "group", "umask",
        "restart", "success-exit", "restart-delay", "restart-delay-max", "restart-jitter",
        "restart-reset-after", "start-limit", "type", "pidfile", "ready", "ready-timeout",
        "stop", "stop-command", "pre-start", "post-start", "pre-stop", "post-stop",
        "pre-start-timeout", "post-start-timeout", "pre-stop-timeout", "post-stop-timeout",
        "after", "requires", "watchdog", "log",
};

static void interpret_key(struct ctx *c) {
        struct svc_config *s = c->s;
        const char *k = c->kv->key;
        if (!strcmp(k, "command"))
                parse_command(c, &s->command, s->shell);
        else if (!strcmp(k, "shell"))
                ; /* read first, see interpret_service */
        else if (!strcmp(k, "directory"))
                s->x->directory = resolve_path(c, one_word(c));
        else if (!strcmp(k, "environment"))
                key_environment(c);
        else if (!strcmp(k, "user"))
                key_user(c);
        else if (!strcmp(k, "group"))
                key_group(c);
        else if (!strcmp(k, "umask"))
                key_umask(c);
        else if (!strncmp(k, "limit-", 6))
                key_limit(c, k + 6);
        else if (!strcmp(k, "restart"))
                key_restart(c);
        else if (!strcmp(k, "success-exit"))
                key_success_exit(c);
        else if (!strcmp(k, "restart-delay"))
                parse_dur(c, &s->x->policy.restart_delay);
        else if (!strcmp(k, "restart-delay-max"))
                parse_dur(c, &s->x->policy.restart_delay_max);
        else if (!strcmp(k, "restart-jitter"))
                key_jitter(c);
        else if (!strcmp(k, "restart-reset-after"))
                parse_dur(c, &s->x->policy.reset_after);
        else if (!strcmp(k, "start-limit"))
                key_start_limit(c);
        else if (!strcmp(k, "type"))
                key_type(c);
        else if (!strcmp(k, "pidfile"))
                s->x->pidfile = resolve_path(c, one_word(c));
        else if (!strcmp(k, "ready"))
                key_ready(c);
        else if (!strcmp(k, "ready-timeout"))
                parse_dur(c, &s->x->policy.ready_timeout);
        else if (!strcmp(k, "stop"))
                key_stop(c);
        else if (!strcmp(k, "stop-command"))
                parse_command(c, &s->x->stop_command, s->shell);
        else if (!strcmp(k, "after"))
                key_names(c, &s->x->after, &s->x->n_after);
        else if (!strcmp(k, "requires"))
                key_names(c, &s->x->requires, &s->x->n_requires);
        else if (!strcmp(k, "watchdog"))
                parse_dur(c, &s->x->policy.watchdog);
        else if (!strcmp(k, "log"))
                key_log(c);
        else {
                for (int h = 0; h < SVC_HOOK_COUNT; h++) {
                        size_t n = strlen(hook_keys[h]);
                        if (!strncmp(k, hook_keys[h], n)) {
                                if (!k[n]) {
                                        if (parse_command(c, &s->x->hooks[h], s->shell))
                                                s->x->policy.has_hook[h] = true;
                                        return;
                                }
                                if (!strcmp(k + n, "-timeout")) {
                                        parse_dur(c, &s->x->policy.hook_timeout[h]);
                                        return;
                                }
                        }
                }
                kv_error(c, "unknown key");
        }
}

static bool known_key(const char *k) {
        if (!strncmp(k, "limit-", 6))
                return true;
        for (size_t i = 0; i < ARRAY_SIZE(known_keys); i++)
                if (!strcmp(known_keys[i], k))
                        return true;
        return false;
}

static int append_identity(char **id, size_t *len, const struct raw_kv *kv) {
        size_t add = strlen(kv->key) + strlen(kv->value) + 2;
        char *n = realloc(*id, *len + add + 1);
        if (!n)
                return -ENOMEM;
        *id = n;
        *len += (size_t)sprintf(n + *len, "%s=%s\n", kv->key, kv->value);
        return 0;
}

static void resolve_ids(struct parse *ps, const struct raw_service *rs, struct svc_config *s);

const struct tend_ladder config_default_ladder = {
        .n = 2,
        .step = { { SIGTERM, 10ull * 1000 * 1000 }, { SIGKILL, 0 } },
};

static void ext_defaults(struct svc_config_ext *x) {
        svc_policy_default(&x->policy);
        set_bit(x->success_codes, 0);
        set_bit(x->success_signals, SIGHUP);
        set_bit(x->success_signals, SIGINT);
        set_bit(x->success_signals, SIGTERM);
        set_bit(x->success_signals, SIGPIPE);
        x->log_size = 10u << 20;
        x->log_keep = 5;
}

/* Zero-filled before the defaults (static storage), as a calloc'd one is: memcmp compares
 * the padding too. Configurations are loaded by one thread. */
static struct svc_config_ext default_ext;

struct svc_config_ext *config_default_ext(void) {
        static bool made;
        if (!made) {
                ext_defaults(&default_ext);
                made = true;
        }
        return &default_ext;
}

/* Shared copies by content: a small chained hash table, for the life of the process. */
struct ext_node {
        struct ext_node *next;
        unsigned refs;
        struct svc_config_ext x;
};

#define EXT_BUCKETS 64
static struct ext_node *ext_table[EXT_BUCKETS];

static size_t ext_bucket(const struct svc_config_ext *x) {
        uint64_t h = 1469598103934665603ull; /* FNV-1a over the bytes, padding included (zero) */
        const unsigned char *p = (const unsigned char *)x;
        for (size_t i = 0; i < sizeof *x; i++)
                h = (h ^ p[i]) * 1099511628211ull;
        return (size_t)(h % EXT_BUCKETS);
}

static bool ext_points(const struct svc_config_ext *x) {
        if (x->directory || x->env || x->user || x->groups || x->user_env || x->group ||
            x->rlimits || x->pidfile || x->tcp_addr || x->tcp_text || x->ready_exec.argv ||
            x->ready_exec.text || x->stop_command.argv || x->stop_command.text || x->after ||
            x->requires || x->log_path)
                return true;
        for (int h = 0; h < SVC_HOOK_COUNT; h++)
                if (x->hooks[h].argv || x->hooks[h].text)
                        return true;
        return false;
}

/* x (calloc'd, so its padding is zero) or the shared copy with the same content, which then
 * replaces it. Only numbers and flags are compared: a field that points anywhere keeps x
 * the service's own. */
static struct svc_config_ext *ext_intern(struct svc_config_ext *x) {
        if (ext_points(x))
                return x;
        x->shared = true; /* as the shared copies have it, for the comparison */
        size_t b = ext_bucket(x);
        for (struct ext_node *n = ext_table[b]; n; n = n->next)
                if (memcmp(&n->x, x, sizeof *x) == 0) {
                        n->refs++;
                        free(x);
                        return &n->x;
                }
        struct ext_node *n = malloc(sizeof *n);
        if (!n) {
                x->shared = false;
                return x;
        }
        memcpy(&n->x, x, sizeof *x); /* the padding too: it is compared */
        n->refs = 1;
        n->next = ext_table[b];
        ext_table[b] = n;
        free(x);
        return &n->x;
}

static void ext_free(struct svc_config_ext *x) {
        if (!x || x == &default_ext)
                return;
        if (x->shared) {
                struct ext_node *n =
                        (struct ext_node *)((char *)x - offsetof(struct ext_node, x));
                if (--n->refs > 0)
                        return;
                for (struct ext_node **pp = &ext_table[ext_bucket(x)]; *pp; pp = &(*pp)->next)
                        if (*pp == n) {
                                *pp = n->next;
                                break;
                        }
                free(n);
                return;
        }
        free(x->directory);
        config_strv_free(x->env);
        free(x->user);
        free(x->groups);
        config_strv_free(x->user_env);
        free(x->group);
        free(x->pidfile);
        free(x->tcp_text);
        config_strv_free(x->ready_exec.argv);
        free(x->ready_exec.text);
        config_strv_free(x->stop_command.argv);
        free(x->stop_command.text);
        for (int h = 0; h < SVC_HOOK_COUNT; h++) {
                config_strv_free(x->hooks[h].argv);
                free(x->hooks[h].text);
        }
        config_strv_free(x->after);
        config_strv_free(x->requires);
        free(x->log_path);
        free(x->rlimits);
        free(x->tcp_addr);
        free(x);
}

/* One allocation for the service's definition and its strings (name, identity, the command's
 * words and text; the text stored once when it is the single word itself): a supervisor
 * keeps one per service, and five small allocations cost ~100 bytes more than their
 * contents. Returns the packed copy (s is freed) or, out of memory or incomplete, s. */
static struct svc_config *config_pack(struct svc_config *s) {
        if (!s->name || !s->identity || !s->command.argv)
                return s;
        size_t n_argv = 0, words = 0;
        for (; s->command.argv[n_argv]; n_argv++)
                words += strlen(s->command.argv[n_argv]) + 1;
        const char *text = s->command.text;
        bool text_is_word = text && n_argv == 1 && strcmp(text, s->command.argv[0]) == 0;
        size_t ln = strlen(s->name) + 1, li = strlen(s->identity) + 1;
        size_t lt = text && !text_is_word ? strlen(text) + 1 : 0;
        size_t la = (n_argv + 1) * sizeof(char *);
        struct svc_config *p = malloc(sizeof *p + la + ln + li + lt + words);
        if (!p)
                return s;
        *p = *s;
        p->packed = true;
        char **argv = (char **)(p + 1); /* p + 1 is aligned for any pointer */
        char *w = (char *)(p + 1) + la;
        p->name = memcpy(w, s->name, ln);
        w += ln;
        p->identity = memcpy(w, s->identity, li);
        w += li;
        for (size_t i = 0; i < n_argv; i++) {
                size_t n = strlen(s->command.argv[i]) + 1;
                argv[i] = memcpy(w, s->command.argv[i], n);
                w += n;
        }
        argv[n_argv] = NULL;
        p->command.argv = argv;
        if (text_is_word)
                p->command.text = argv[0];
        else if (text)
                p->command.text = memcpy(w, text, lt);
        free(s->name);
        free(s->identity);
        config_strv_free(s->command.argv);
        free(s->command.text);
        free(s);
        return p;
}

static struct svc_config *interpret_service(struct parse *ps, struct raw_service *rs) {
        struct svc_config *s = calloc(1, sizeof *s);
        if (!s)
                return NULL;
        s->x = calloc(1, sizeof *s->x);
        if (!s->x) {
                free(s);
                return NULL;
        }
        s->name = strdup(rs->name);
        s->file = rs->file;
        s->line = rs->line;
        ext_defaults(s->x);
        s->ladder = &config_default_ladder;
        char *base = NULL;
        const char *slash = strrchr(rs->file, '/');
        if (slash)
                base = strndup(rs->file, (size_t)(slash - rs->file));
        else
                base = strdup(".");
        struct ctx c = { .ps = ps, .s = s, .base_dir = base };
        size_t id_len = 0;
        bool *dup = calloc(rs->n_kv ? rs->n_kv : 1, sizeof *dup);
        if (!dup)
                ps->errors++;
        /* Keys first: unknown, duplicate; shell before the commands it changes. */
        for (size_t i = 0; dup && i < rs->n_kv; i++) {
                c.kv = &rs->kv[i];
                if (append_identity(&s->identity, &id_len, c.kv) < 0)
                        ps->errors++;
                if (!known_key(c.kv->key)) {
                        interpret_key(&c); /* reports it (or a hook's -timeout) */
                        continue;
                }
                if (!key_repeatable(c.kv->key))
                        for (size_t j = 0; j < i; j++)
                                if (!strcmp(rs->kv[j].key, c.kv->key)) {
                                        kv_error(&c, "given twice (first at line %d)",
                                                 rs->kv[j].line);
                                        dup[i] = true;
                                        break;
                                }
                if (!strcmp(c.kv->key, "shell"))
                        parse_bool(&c, &s->shell);
        }
        for (size_t i = 0; dup && i < rs->n_kv; i++) {
                c.kv = &rs->kv[i];
                if (known_key(c.kv->key) && !dup[i])
                        interpret_key(&c);
        }
        free(dup);
        free(base);
        resolve_ids(ps, rs, s);
        if (!s->identity)
                s->identity = strdup("");
        if (!s->command.argv)
                perror_at(ps, rs->file, rs->line, "service '%s' has no command", rs->name);
        if (s->x->pidfile && s->type != SVC_TYPE_FORKING)
                perror_at(ps, rs->file, rs->line,
                          "service '%s': pidfile is only for type = forking", rs->name);
        if (s->ready == SVC_READY_STOP && s->type == SVC_TYPE_FORKING)
                perror_at(ps, rs->file, rs->line,
                          "service '%s': ready = stop needs type = simple", rs->name);
        if (s->x->policy.restart_delay_max < s->x->policy.restart_delay)
                s->x->policy.restart_delay_max = s->x->policy.restart_delay;
        if (memcmp(s->x, config_default_ext(), sizeof *s->x) == 0) {
                free(s->x); /* every pointer in it is NULL, as in the default */
                s->x = &default_ext;
        } else {
                s->x = ext_intern(s->x);
        }
        return config_pack(s);
}

/* user = NAME|UID and group = NAME|GID, looked up now so that --check finds a missing one. */
static void resolve_ids(struct parse *ps, const struct raw_service *rs, struct svc_config *s) {
        if (s->x->user) {
                struct account_user *pw = NULL;
                unsigned long long v;
                if (account_user_by_name(s->x->user, &pw) < 0 &&
                    parse_uint(s->x->user, UINT32_MAX - 1, &v))
                        account_user_by_uid((uid_t)v, &pw);
                if (!pw && parse_uint(s->x->user, UINT32_MAX - 1, &v)) {
                        /* A bare uid with no passwd entry: no home, no groups. */
                        s->x->has_uid = s->x->has_gid = true;
                        s->x->uid = (uid_t)v;
                        s->x->gid = (gid_t)v;
                } else if (!pw) {
                        perror_at(ps, rs->file, rs->line, "service '%s': no user '%s'",
                                  s->name, s->x->user);
                        return;
                } else {
                        s->x->has_uid = s->x->has_gid = true;
                        s->x->uid = pw->uid;
                        s->x->gid = pw->gid;
                        /* Room for 64 first, then for as many as the account has. On any
                         * failure no supplementary groups (n_groups 0). */
                        size_t n = 64;
                        s->x->groups = malloc(n * sizeof *s->x->groups);
                        int r = s->x->groups ? account_user_groups(pw->name, pw->gid,
                                                                   s->x->groups, &n)
                                             : -ENOMEM;
                        if (r == -ERANGE) {
                                gid_t *more = realloc(s->x->groups, n * sizeof *more);
                                r = -ENOMEM;
                                if (more) {
                                        s->x->groups = more;
                                        r = account_user_groups(pw->name, pw->gid,
                                                                s->x->groups, &n);
                                }
                        }
                        s->x->n_groups = r == 0 ? n : 0;
                        size_t k = 0;
                        s->x->user_env = calloc(4, sizeof *s->x->user_env);
                        if (s->x->user_env) {
                                if (asprintf(&s->x->user_env[k], "HOME=%s", pw->home) >= 0)
                                        k++;
                                if (asprintf(&s->x->user_env[k], "USER=%s", pw->name) >= 0)
                                        k++;
                                if (asprintf(&s->x->user_env[k], "LOGNAME=%s", pw->name) >= 0)
                                        k++;
                                s->x->user_env[k] = NULL;
                        }
                        account_user_free(pw);
                }
        }
        if (s->x->group) {
                gid_t gid;
                unsigned long long v;
                if (account_group_by_name(s->x->group, &gid) == 0)
                        s->x->gid = gid;
                else if (parse_uint(s->x->group, UINT32_MAX - 1, &v))
                        s->x->gid = (gid_t)v;
                else {
                        perror_at(ps, rs->file, rs->line, "service '%s': no group '%s'",
                                  s->name, s->x->group);
                        return;
                }
                s->x->has_gid = true;
        }
}

void config_service_free(struct svc_config *s) {
        if (!s)
                return;
        if (!s->packed) {
                free(s->name);
                free(s->identity);
                config_strv_free(s->command.argv);
                free(s->command.text);
        }
        ext_free(s->x);
        if (s->ladder != &config_default_ladder)
                free((void *)s->ladder);
        free(s);
}

struct config *config_free(struct config *c) {
        if (!c)
                return NULL;
        for (size_t i = 0; i < c->n_services; i++)
                config_service_free(c->services[i]);
        free(c->services);
        free(c);
        return NULL;
}

static int cmp_service(const void *a, const void *b) {
        const struct svc_config *const *x = a, *const *y = b;
        return strcmp((*x)->name, (*y)->name);
}

static size_t config_index(const struct config *c, const char *name) {
        size_t lo = 0, hi = c->n_services;
        while (lo < hi) {
                size_t mid = (lo + hi) / 2;
                int d = strcmp(c->services[mid]->name, name);
                if (d == 0)
                        return mid;
                if (d < 0)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return SIZE_MAX;
}

struct svc_config *config_find(const struct config *c, const char *name) {
        size_t i = config_index(c, name);
        return i == SIZE_MAX ? NULL : c->services[i];
}

bool config_exit_is_success(const struct svc_config *s, int code, int signo) {
        if (signo)
                return signo < 128 && get_bit(s->x->success_signals, (unsigned)signo);
        return code >= 0 && code < 256 && get_bit(s->x->success_codes, (unsigned)code);
}

/* Names in after/requires exist, and the order has no cycle. */
static void check_dependencies(struct parse *ps, struct config *c) {
        for (size_t i = 0; i < c->n_services; i++) {
                struct svc_config *s = c->services[i];
                for (int pass = 0; pass < 2; pass++) {
                        char **v = pass ? s->x->requires : s->x->after;
                        for (size_t k = 0; v && v[k]; k++) {
                                if (!strcmp(v[k], s->name))
                                        perror_at(ps, s->file, s->line,
                                                  "service '%s' cannot start after itself",
                                                  s->name);
                                else if (!config_find(c, v[k]))
                                        perror_at(ps, s->file, s->line,
                                                  "service '%s': %s '%s': no such service",
                                                  s->name, pass ? "requires" : "after", v[k]);
                        }
                }
        }
        if (ps->errors)
                return;
        /* Depth-first search with colours: 0 new, 1 on the path, 2 done. */
        unsigned char *colour = calloc(c->n_services ? c->n_services : 1, 1);
        size_t *stack = malloc((c->n_services + 1) * sizeof *stack);
        size_t *next = calloc(c->n_services ? c->n_services : 1, sizeof *next);
        if (!colour || !stack || !next) {
                ps->errors++;
                goto out;
        }
        for (size_t root = 0; root < c->n_services; root++) {
                if (colour[root])
                        continue;
                size_t sp = 0;
                stack[sp++] = root;
                colour[root] = 1;
                while (sp) {
                        size_t u = stack[sp - 1];
                        struct svc_config *s = c->services[u];
                        size_t k = next[u]++;
                        const char *dep = k < s->x->n_after ? s->x->after[k]
                                        : k < s->x->n_after + s->x->n_requires ? s->x->requires[k - s->x->n_after]
                                        : NULL;
                        if (!dep) {
                                colour[u] = 2;
                                sp--;
                                continue;
                        }
                        size_t v = config_index(c, dep);
                        struct svc_config *d = c->services[v];
                        if (colour[v] == 1) {
                                perror_at(ps, s->file, s->line,
                                          "service '%s': dependency cycle through '%s'",
                                          s->name, d->name);
                                goto out;
                        }
                        if (colour[v] == 0) {
                                colour[v] = 1;
                                stack[sp++] = v;
                        }
                }
        }
out:
        free(colour);
        free(stack);
        free(next);
}

int config_load(const char *path, struct config **ret_config) {
        /* libinih's run-time options (Debian builds them as variables), see the top. */
        ini_allow_inline_comments = 0;
        ini_allow_multiline = 0;
        ini_stop_on_first_error = 0;
        ini_use_stack = 0;
        ini_allow_realloc = 1;
        ini_max_line = CONFIG_LINE_MAX + 8;

        struct parse ps = { 0 };
        int e = parse_file(&ps, path);
        if (e < 0 && e != -EINVAL) {
                msg_error("cannot read '%s': %s", path, strerror(-e));
                raw_free(&ps);
                return e;
        }
        struct config *c = calloc(1, sizeof *c);
        if (!c) {
                raw_free(&ps);
                return -ENOMEM;
        }
        c->services = calloc(ps.n_svc ? ps.n_svc : 1, sizeof *c->services);
        if (!c->services) {
                free(c);
                raw_free(&ps);
                return -ENOMEM;
        }
        for (size_t i = 0; i < ps.n_svc; i++) {
                struct svc_config *s = interpret_service(&ps, &ps.svc[i]);
                if (!s) {
                        ps.errors++;
                        continue;
                }
                c->services[c->n_services++] = s;
        }
        if (c->n_services)
                qsort(c->services, c->n_services, sizeof *c->services, cmp_service);
        if (!ps.errors)
                check_dependencies(&ps, c);
        int errors = ps.errors;
        for (size_t i = 0; i < c->n_services; i++)
                c->services[i]->file = NULL; /* the parse's text, freed now */
        raw_free(&ps);
        if (errors) {
                config_free(c);
                return -EINVAL;
        }
        *ret_config = c;
        return 0;
}
