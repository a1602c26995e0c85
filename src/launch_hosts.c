/* launch_hosts.c — host lists for `tend launch`: expanding -H and --hostfile, folding names
 * back into ranges. The syntax is described in launch_hosts.h and tend-launch(1).
 *
 * Bounds: a list expands to at most LAUNCH_HOSTS_MAX hosts in all, and the number of names an
 * entry would make is computed (with overflow checks) before any is made, so `n[1-999999999]`
 * is refused at once instead of filling memory. Hostfile lines are read whole (a line may hold
 * a list) up to 1 MiB. */
#include "launch_hosts.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NUMBER_DIGITS_MAX 18     /* fits in uint64_t with room */
#define GROUPS_MAX 16            /* bracket groups in one entry */
#define FILE_LINE_MAX (1u << 20)
#define QUOTE_MAX 64             /* how much of a list an error message repeats */

/* ---- messages ------------------------------------------------------------------------------ */

static void set_error(char **ret_error, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_error(char **ret_error, const char *fmt, ...) {
        va_list ap;
        char *s = NULL;

        va_start(ap, fmt);
        if (vasprintf(&s, fmt, ap) < 0)
                s = NULL;
        va_end(ap);
        free(*ret_error);
        *ret_error = s;
}

/* `text` (of length len) for a message: at most QUOTE_MAX bytes, non-printable bytes as
 * \xNN. Returns a malloc'd string or NULL. */
static char *quote(const char *text, size_t len) {
        size_t shown = len > QUOTE_MAX ? QUOTE_MAX : len;
        char *out = malloc(shown * 4 + 4);
        size_t o = 0;

        if (!out)
                return NULL;
        for (size_t i = 0; i < shown; i++) {
                unsigned char c = (unsigned char)text[i];
                if (c < 0x20 || c >= 0x7f || c == '\\')
                        o += (size_t)sprintf(out + o, "\\x%02x", c);
                else
                        out[o++] = (char)c;
        }
        if (shown < len) {
                memcpy(out + o, "...", 3);
                o += 3;
        }
        out[o] = '\0';
        return out;
}

/* ---- the list and its set of names --------------------------------------------------------- */

void launch_hosts_init(struct launch_hosts *h) {
        memset(h, 0, sizeof *h);
}

void launch_hosts_free(struct launch_hosts *h) {
        for (size_t i = 0; i < h->n; i++)
                free(h->names[i]);
        free(h->names);
        free(h->set);
        launch_hosts_init(h);
}

static size_t name_hash(const char *s) {
        uint64_t x = 1469598103934665603ull; /* FNV-1a */
        for (; *s; s++) {
                x ^= (unsigned char)*s;
                x *= 1099511628211ull;
        }
        return (size_t)(x ^ (x >> 29));
}

/* Where `name` is or would go in the set: a slot holding it, or the empty slot to use. */
static size_t *set_slot(const struct launch_hosts *h, const char *name) {
        size_t mask = h->set_cap - 1;
        for (size_t i = name_hash(name) & mask;; i = (i + 1) & mask) {
                size_t *slot = &h->set[i];
                if (*slot == 0 || strcmp(h->names[*slot - 1], name) == 0)
                        return slot;
        }
}

/* Make room for one more name: the array, and the set kept at most half full. */
static int reserve_one(struct launch_hosts *h) {
        if (h->n == h->cap) {
                size_t cap = h->cap ? h->cap * 2 : 16;
                char **names = realloc(h->names, cap * sizeof *names);
                if (!names)
                        return -ENOMEM;
                h->names = names;
                h->cap = cap;
        }
        if ((h->n + 1) * 2 > h->set_cap) {
                size_t cap = h->set_cap ? h->set_cap * 2 : 32;
                size_t *set = calloc(cap, sizeof *set);
                if (!set)
                        return -ENOMEM;
                free(h->set);
                h->set = set;
                h->set_cap = cap;
                for (size_t i = 0; i < h->n; i++)
                        *set_slot(h, h->names[i]) = i + 1;
        }
        return 0;
}

/* Drop the names added since the list had `n` (a failed call adds nothing). */
static void rollback(struct launch_hosts *h, size_t n) {
        if (h->n == n)
                return;
        for (size_t i = n; i < h->n; i++)
                free(h->names[i]);
        h->n = n;
        memset(h->set, 0, h->set_cap * sizeof *h->set);
        for (size_t i = 0; i < h->n; i++)
                *set_slot(h, h->names[i]) = i + 1;
}

/* Takes `name` (malloc'd) in every case. */
static int add_name(struct launch_hosts *h, char *name, const char *where, char **ret_error) {
        int r;

        if (h->n >= LAUNCH_HOSTS_MAX) {
                free(name);
                set_error(ret_error, "%s: more than %d hosts", where, LAUNCH_HOSTS_MAX);
                return -E2BIG;
        }
        r = reserve_one(h);
        if (r < 0) {
                free(name);
                return r;
        }
        size_t *slot = set_slot(h, name);
        if (*slot != 0) {
                char *q = quote(name, strlen(name));
                set_error(ret_error, "%s: duplicate host '%s'", where, q ? q : name);
                free(q);
                free(name);
                return -EEXIST;
        }
        h->names[h->n++] = name;
        *slot = h->n;
        return 0;
}

/* ---- expanding one entry -------------------------------------------------------------------- */

struct range {
        uint64_t lo, hi;
        int width;  /* zero-padding width, 0 = none */
};

struct group {
        struct range *ranges;
        size_t n;
        uint64_t count;  /* numbers in the group */
};

static bool name_char(char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               c == '.' || c == '_' || c == '-' || c == ':' || c == '@' || c == '+';
}

/* A number of 1..NUMBER_DIGITS_MAX digits at text[*pos]; its width is its length when it has
 * a leading zero and more than one digit. */
static int parse_number(const char *text, size_t len, size_t *pos, uint64_t *ret, int *ret_width) {
        size_t start = *pos, i = *pos;
        uint64_t v = 0;

        while (i < len && text[i] >= '0' && text[i] <= '9') {
                if (i - start >= NUMBER_DIGITS_MAX)
                        return -ERANGE;
                v = v * 10 + (uint64_t)(text[i] - '0');
                i++;
        }
        if (i == start)
                return -EINVAL;
        *ret = v;
        *ret_width = (i - start > 1 && text[start] == '0') ? (int)(i - start) : 0;
        *pos = i;
        return 0;
}

/* The bracket group starting after '[' at text[*pos]; *pos ends after ']'. */
static int parse_group(const char *text, size_t len, size_t *pos, struct group *g,
                       const char *where, const char *entry_q, char **ret_error) {
        size_t i = *pos;

        if (i < len && text[i] == ']') {
                set_error(ret_error, "%s: empty brackets in '%s'", where, entry_q);
                return -EINVAL;
        }
        for (;;) {
                struct range r;
                int w2, e;

                if (i >= len) {
                        set_error(ret_error, "%s: unterminated '[' in '%s'", where, entry_q);
                        return -EINVAL;
                }
                e = parse_number(text, len, &i, &r.lo, &r.width);
                if (e == 0) {
                        r.hi = r.lo;
                        if (i < len && text[i] == '-') {
                                i++;
                                e = parse_number(text, len, &i, &r.hi, &w2);
                        }
                }
                if (e == -ERANGE) {
                        set_error(ret_error, "%s: number of more than %d digits in '%s'", where,
                                  NUMBER_DIGITS_MAX, entry_q);
                        return -EINVAL;
                }
                if (e < 0) {
                        if (i >= len)
                                set_error(ret_error, "%s: unterminated '[' in '%s'", where, entry_q);
                        else
                                set_error(ret_error,
                                          "%s: expected a number or a range A-B inside '[...]' "
                                          "in '%s'", where, entry_q);
                        return -EINVAL;
                }
                if (r.hi < r.lo) {
                        set_error(ret_error,
                                  "%s: range %" PRIu64 "-%" PRIu64 " goes down in '%s'", where,
                                  r.lo, r.hi, entry_q);
                        return -EINVAL;
                }
                uint64_t count = r.hi - r.lo + 1;
                if (count > LAUNCH_HOSTS_MAX || g->count + count > LAUNCH_HOSTS_MAX) {
                        set_error(ret_error, "%s: more than %d hosts in '%s'", where,
                                  LAUNCH_HOSTS_MAX, entry_q);
                        return -E2BIG;
                }
                struct range *rs = realloc(g->ranges, (g->n + 1) * sizeof *rs);
                if (!rs)
                        return -ENOMEM;
                g->ranges = rs;
                g->ranges[g->n++] = r;
                g->count += count;
                if (i < len && text[i] == ',') {
                        i++;
                        continue;
                }
                if (i < len && text[i] == ']') {
                        *pos = i + 1;
                        return 0;
                }
                if (i >= len)
                        set_error(ret_error, "%s: unterminated '[' in '%s'", where, entry_q);
                else
                        set_error(ret_error,
                                  "%s: expected ',' or ']' after a number inside '[...]' in '%s'",
                                  where, entry_q);
                return -EINVAL;
        }
}

/* The i-th number of a group (0 <= i < count), and its width. */
static uint64_t group_nth(const struct group *g, uint64_t i, int *ret_width) {
        for (size_t k = 0;; k++) {
                uint64_t c = g->ranges[k].hi - g->ranges[k].lo + 1;
                if (i < c || k + 1 == g->n) {
                        *ret_width = g->ranges[k].width;
                        return g->ranges[k].lo + i;
                }
                i -= c;
        }
}

/* One entry (no surrounding blanks, no top-level comma): literal text and bracket groups. */
static int expand_entry(struct launch_hosts *h, const char *text, size_t len, const char *where,
                        char **ret_error) {
        /* Segments: literal[0] group[0] literal[1] group[1] ... literal[ngroups]. */
        size_t lit_start[GROUPS_MAX + 1], lit_len[GROUPS_MAX + 1];
        struct group groups[GROUPS_MAX];
        size_t ngroups = 0, i = 0;
        char *entry_q = quote(text, len);
        char *name = NULL;
        int r = 0;

        memset(groups, 0, sizeof groups);
        if (!entry_q)
                return -ENOMEM;
        if (len == 0) {
                set_error(ret_error, "%s: empty host name", where);
                r = -EINVAL;
                goto out;
        }
        if (text[0] == '-') {
                set_error(ret_error, "%s: host name starts with '-' in '%s'", where, entry_q);
                r = -EINVAL;
                goto out;
        }
        lit_start[0] = 0;
        for (;;) {
                size_t s = i;
                while (i < len && text[i] != '[' && text[i] != ']') {
                        if (!name_char(text[i])) {
                                char *c = quote(text + i, 1);
                                set_error(ret_error, "%s: invalid character '%s' in '%s'", where,
                                          c ? c : "?", entry_q);
                                free(c);
                                r = -EINVAL;
                                goto out;
                        }
                        i++;
                }
                lit_start[ngroups] = s;
                lit_len[ngroups] = i - s;
                if (i >= len)
                        break;
                if (text[i] == ']') {
                        set_error(ret_error, "%s: ']' without '[' in '%s'", where, entry_q);
                        r = -EINVAL;
                        goto out;
                }
                if (ngroups == GROUPS_MAX) {
                        set_error(ret_error, "%s: more than %d '[...]' groups in '%s'", where,
                                  GROUPS_MAX, entry_q);
                        r = -EINVAL;
                        goto out;
                }
                i++; /* '[' */
                r = parse_group(text, len, &i, &groups[ngroups], where, entry_q, ret_error);
                ngroups++;
                if (r < 0)
                        goto out;
        }
        /* How many names, before making any. */
        uint64_t total = 1;
        for (size_t g = 0; g < ngroups; g++) {
                total *= groups[g].count; /* each <= LAUNCH_HOSTS_MAX: no overflow below */
                if (total > LAUNCH_HOSTS_MAX || h->n + total > LAUNCH_HOSTS_MAX) {
                        set_error(ret_error, "%s: more than %d hosts", where, LAUNCH_HOSTS_MAX);
                        r = -E2BIG;
                        goto out;
                }
        }
        if (h->n + total > LAUNCH_HOSTS_MAX) {
                set_error(ret_error, "%s: more than %d hosts", where, LAUNCH_HOSTS_MAX);
                r = -E2BIG;
                goto out;
        }

        uint64_t idx[GROUPS_MAX] = { 0 };
        for (uint64_t k = 0; k < total; k++) {
                char buf[LAUNCH_HOST_NAME_MAX + 1];
                size_t o = 0;
                bool too_long = false;

                for (size_t g = 0; g <= ngroups; g++) {
                        if (o + lit_len[g] > LAUNCH_HOST_NAME_MAX) {
                                too_long = true;
                                break;
                        }
                        memcpy(buf + o, text + lit_start[g], lit_len[g]);
                        o += lit_len[g];
                        if (g == ngroups)
                                break;
                        int width;
                        uint64_t v = group_nth(&groups[g], idx[g], &width);
                        int w = snprintf(buf + o, sizeof buf - o, "%0*" PRIu64, width, v);
                        if (w < 0 || o + (size_t)w > LAUNCH_HOST_NAME_MAX) {
                                too_long = true;
                                break;
                        }
                        o += (size_t)w;
                }
                if (too_long) {
                        set_error(ret_error, "%s: host name longer than %d bytes in '%s'", where,
                                  LAUNCH_HOST_NAME_MAX, entry_q);
                        r = -EINVAL;
                        goto out;
                }
                buf[o] = '\0';
                name = strdup(buf);
                if (!name) {
                        r = -ENOMEM;
                        goto out;
                }
                r = add_name(h, name, where, ret_error);
                name = NULL;
                if (r < 0)
                        goto out;
                /* Next combination: the last group varies fastest. */
                for (size_t g = ngroups; g-- > 0;) {
                        if (++idx[g] < groups[g].count)
                                break;
                        idx[g] = 0;
                }
        }
out:
        for (size_t g = 0; g < GROUPS_MAX; g++)
                free(groups[g].ranges);
        free(entry_q);
        return r;
}

static bool blank(char c) {
        return c == ' ' || c == '\t' || c == '\r';
}

/* A list: entries split at commas outside brackets, blanks around entries ignored. */
static int expand_list(struct launch_hosts *h, const char *text, size_t len, const char *where,
                       char **ret_error) {
        size_t i = 0;

        for (;;) {
                size_t s = i;
                int depth = 0;
                while (i < len && (depth > 0 || text[i] != ',')) {
                        if (text[i] == '[')
                                depth = 1;
                        else if (text[i] == ']')
                                depth = 0;
                        i++;
                }
                size_t a = s, b = i;
                while (a < b && blank(text[a]))
                        a++;
                while (b > a && blank(text[b - 1]))
                        b--;
                int r = expand_entry(h, text + a, b - a, where, ret_error);
                if (r < 0)
                        return r;
                if (i >= len)
                        return 0;
                i++; /* ',' */
        }
}

int launch_hosts_add_list(struct launch_hosts *h, const char *list, char **ret_error) {
        size_t n0 = h->n, len = strlen(list);
        char *q = quote(list, len);
        char *where = NULL;
        int r;

        *ret_error = NULL;
        if (!q || asprintf(&where, "-H '%s'", q) < 0) {
                free(q);
                return -ENOMEM;
        }
        free(q);
        r = expand_list(h, list, len, where, ret_error);
        if (r < 0)
                rollback(h, n0);
        free(where);
        return r;
}

int launch_hosts_add_file(struct launch_hosts *h, const char *path, char **ret_error) {
        size_t n0 = h->n, cap = 0, lineno = 0;
        char *line = NULL, *where = NULL;
        ssize_t got;
        int r = 0;
        FILE *f;

        *ret_error = NULL;
        f = fopen(path, "re");
        if (!f) {
                r = -errno;
                set_error(ret_error, "--hostfile %s: %s", path, strerror(-r));
                return r;
        }
        for (;;) {
                errno = 0;
                got = getline(&line, &cap, f);
                if (got < 0) {
                        if (errno != 0 && !feof(f)) {
                                r = -errno;
                                set_error(ret_error, "--hostfile %s: %s", path, strerror(-r));
                        }
                        break;
                }
                lineno++;
                free(where);
                where = NULL;
                if (asprintf(&where, "--hostfile %s:%zu", path, lineno) < 0) {
                        where = NULL;
                        r = -ENOMEM;
                        break;
                }
                if ((size_t)got > FILE_LINE_MAX) {
                        set_error(ret_error, "%s: line longer than %u bytes", where, FILE_LINE_MAX);
                        r = -EINVAL;
                        break;
                }
                size_t len = (size_t)got;
                if (memchr(line, '\0', len)) {
                        set_error(ret_error, "%s: NUL byte in the line", where);
                        r = -EINVAL;
                        break;
                }
                char *hash = memchr(line, '#', len);
                if (hash)
                        len = (size_t)(hash - line);
                while (len > 0 && (line[len - 1] == '\n' || blank(line[len - 1])))
                        len--;
                size_t a = 0;
                while (a < len && blank(line[a]))
                        a++;
                if (a == len)
                        continue; /* blank or comment */
                r = expand_list(h, line + a, len - a, where, ret_error);
                if (r < 0)
                        break;
        }
        if (r < 0)
                rollback(h, n0);
        free(where);
        free(line);
        fclose(f);
        return r;
}

/* ---- folding names back ----------------------------------------------------------------------- */

struct item {
        const char *name;
        size_t idx;        /* position in the input */
        bool has_num;
        size_t plen;       /* the prefix is name[0, plen) */
        size_t send;       /* the number is name[plen, send), the suffix name[send...] */
        uint64_t num;
        size_t cls;        /* padding class: the zero-padded width, or 0 */
        bool padded;
};

static int item_cmp(const void *pa, const void *pb) {
        const struct item *a = pa, *b = pb;
        if (!a->has_num || !b->has_num) {
                if (a->has_num != b->has_num)
                        return a->has_num ? 1 : -1;
                return a->idx < b->idx ? -1 : a->idx > b->idx;
        }
        size_t m = a->plen < b->plen ? a->plen : b->plen;
        int c = memcmp(a->name, b->name, m);
        if (c != 0)
                return c;
        if (a->plen != b->plen)
                return a->plen < b->plen ? -1 : 1;
        c = strcmp(a->name + a->send, b->name + b->send);
        if (c != 0)
                return c;
        if (a->cls != b->cls)
                return a->cls < b->cls ? -1 : 1;
        if (a->num != b->num)
                return a->num < b->num ? -1 : 1;
        return a->idx < b->idx ? -1 : a->idx > b->idx;
}

static bool same_family(const struct item *a, const struct item *b) {
        return a->has_num && b->has_num && a->plen == b->plen &&
               memcmp(a->name, b->name, a->plen) == 0 &&
               strcmp(a->name + a->send, b->name + b->send) == 0;
}

struct span {
        size_t start, end;  /* [start, end) of the sorted items */
        size_t first;       /* smallest input position */
};

static int span_cmp(const void *pa, const void *pb) {
        const struct span *a = pa, *b = pb;
        return a->first < b->first ? -1 : a->first > b->first;
}

struct sbuf {
        char *s;
        size_t len, cap;
        bool oom;
};

static void sb_add(struct sbuf *b, const char *s, size_t n) {
        if (b->oom)
                return;
        if (b->len + n + 1 > b->cap) {
                size_t cap = b->cap ? b->cap : 64;
                while (b->len + n + 1 > cap)
                        cap *= 2;
                char *p = realloc(b->s, cap);
                if (!p) {
                        b->oom = true;
                        return;
                }
                b->s = p;
                b->cap = cap;
        }
        memcpy(b->s + b->len, s, n);
        b->len += n;
        b->s[b->len] = '\0';
}

static void sb_num(struct sbuf *b, uint64_t v, size_t width) {
        char buf[32];
        int n = snprintf(buf, sizeof buf, "%0*" PRIu64, (int)width, v);
        sb_add(b, buf, (size_t)n);
}

int launch_hosts_compress(const char *const *names, size_t n, char **ret_text) {
        struct item *items = calloc(n ? n : 1, sizeof *items);
        struct span *spans = calloc(n ? n : 1, sizeof *spans);
        struct sbuf b = { 0 };
        size_t nspans = 0;

        if (!items || !spans)
                goto oom;
        for (size_t i = 0; i < n; i++) {
                struct item *it = &items[i];
                const char *s = names[i];
                size_t len = strlen(s), e = len;

                it->name = s;
                it->idx = i;
                while (e > 0 && !(s[e - 1] >= '0' && s[e - 1] <= '9'))
                        e--;
                size_t st = e;
                while (st > 0 && s[st - 1] >= '0' && s[st - 1] <= '9')
                        st--;
                if (e == 0 || e - st > NUMBER_DIGITS_MAX)
                        continue; /* no number (or too long to be one of ours) */
                it->has_num = true;
                it->plen = st;
                it->send = e;
                it->num = 0;
                for (size_t k = st; k < e; k++)
                        it->num = it->num * 10 + (uint64_t)(s[k] - '0');
                it->padded = e - st > 1 && s[st] == '0';
                it->cls = it->padded ? e - st : 0;
        }
        /* A number without a leading zero but as long as a zero-padded one of the same family
         * belongs with it: node01..node10 is node[01-10]. First sort by family and class, then
         * move such numbers into the padded class of their width, then sort again. */
        qsort(items, n, sizeof *items, item_cmp);
        for (size_t i = 0; i < n;) {
                size_t j = i + 1;
                while (j < n && same_family(&items[i], &items[j]))
                        j++;
                for (size_t k = i; k < j && items[i].has_num; k++) {
                        if (items[k].padded)
                                continue;
                        size_t w = items[k].send - items[k].plen;
                        for (size_t m = i; m < j; m++) {
                                if (items[m].padded && items[m].cls == w) {
                                        items[k].cls = w;
                                        break;
                                }
                        }
                }
                i = j;
        }
        qsort(items, n, sizeof *items, item_cmp);
        for (size_t i = 0; i < n;) {
                size_t j = i + 1;
                while (j < n && same_family(&items[i], &items[j]) && items[i].cls == items[j].cls)
                        j++;
                struct span *sp = &spans[nspans++];
                sp->start = i;
                sp->end = j;
                sp->first = items[i].idx;
                for (size_t k = i; k < j; k++)
                        if (items[k].idx < sp->first)
                                sp->first = items[k].idx;
                i = j;
        }
        qsort(spans, nspans, sizeof *spans, span_cmp);
        sb_add(&b, "", 0);
        for (size_t s = 0; s < nspans; s++) {
                const struct span *sp = &spans[s];
                const struct item *first = &items[sp->start];
                if (s > 0)
                        sb_add(&b, ",", 1);
                if (items[sp->end - 1].num == first->num) { /* one name (or duplicates) */
                        sb_add(&b, first->name, strlen(first->name));
                        continue;
                }
                sb_add(&b, first->name, first->plen);
                sb_add(&b, "[", 1);
                for (size_t k = sp->start; k < sp->end;) {
                        size_t m = k;
                        while (m + 1 < sp->end && items[m + 1].num <= items[m].num + 1)
                                m++; /* '<=' folds a duplicate into the run */
                        if (k > sp->start)
                                sb_add(&b, ",", 1);
                        sb_num(&b, items[k].num, first->cls);
                        if (items[m].num != items[k].num) {
                                sb_add(&b, "-", 1);
                                sb_num(&b, items[m].num, first->cls);
                        }
                        k = m + 1;
                }
                sb_add(&b, "]", 1);
                sb_add(&b, first->name + first->send, strlen(first->name + first->send));
        }
        if (b.oom)
                goto oom;
        free(items);
        free(spans);
        *ret_text = b.s;
        return 0;
oom:
        free(items);
        free(spans);
        free(b.s);
        return -ENOMEM;
}
