/* account.c — user and group lookups: glibc's NSS in the ordinary program, /etc/passwd and
 * /etc/group read directly in the static one (why: account.h).
 *
 * Buffers: the *_r functions (NSS's and the file parsers) are given a buffer that starts at
 * 4 KiB and doubles on ERANGE up to ACCOUNT_LINE_MAX. Past that, an NSS lookup fails with
 * -ERANGE (the callers take it as "no such account") and the files backend skips the line:
 * fgetpwent_r/fgetgrent_r leave the stream at the start of a line too long for the buffer
 * (glibc rewinds it, so that a caller can retry with a larger one), and the line is then read
 * through to its newline and dropped. */
#include "account.h"

#include <errno.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BUF_START 4096

static int user_new(const struct passwd *pw, struct account_user **ret_user) {
        size_t name_len = strlen(pw->pw_name) + 1;
        size_t home_len = strlen(pw->pw_dir ? pw->pw_dir : "") + 1;
        struct account_user *u = malloc(sizeof *u + name_len + home_len);
        if (!u)
                return -ENOMEM;
        u->uid = pw->pw_uid;
        u->gid = pw->pw_gid;
        u->name = (char *)(u + 1);
        u->home = u->name + name_len;
        memcpy(u->name, pw->pw_name, name_len);
        memcpy(u->home, pw->pw_dir ? pw->pw_dir : "", home_len);
        *ret_user = u;
        return 0;
}

struct account_user *account_user_free(struct account_user *u) {
        free(u);
        return NULL;
}

/* ---- files: /etc/passwd and /etc/group ------------------------------------------------------ */

struct scan {
        FILE *f;
        char *buf;
        size_t size;
};

static int scan_open(struct scan *s, const char *path) {
        s->f = fopen(path, "re");
        if (!s->f)
                return -errno;
        s->size = BUF_START;
        s->buf = malloc(s->size);
        if (!s->buf) {
                fclose(s->f);
                return -ENOMEM;
        }
        return 0;
}

static void scan_close(struct scan *s) {
        free(s->buf);
        fclose(s->f);
}

/* After an ERANGE: a larger buffer for the same line, or past ACCOUNT_LINE_MAX the line
 * skipped. 0 to read on, or a negative errno. */
static int scan_too_long(struct scan *s) {
        if (s->size < ACCOUNT_LINE_MAX) {
                size_t size = s->size * 2 > ACCOUNT_LINE_MAX ? ACCOUNT_LINE_MAX : s->size * 2;
                char *buf = realloc(s->buf, size);
                if (!buf)
                        return -ENOMEM;
                s->buf = buf;
                s->size = size;
                return 0;
        }
        int c;
        while ((c = getc_unlocked(s->f)) != EOF && c != '\n')
                ;
        return ferror(s->f) ? -EIO : 0;
}

/* One fgetpwent_r or fgetgrent_r: its error number, and whether it gave an entry. */
static int read_user(struct scan *s, void *entry, bool *found) {
        struct passwd *res = NULL;
        int e = fgetpwent_r(s->f, entry, s->buf, s->size, &res);
        *found = res != NULL;
        return e;
}

static int read_group(struct scan *s, void *entry, bool *found) {
        struct group *res = NULL;
        int e = fgetgrent_r(s->f, entry, s->buf, s->size, &res);
        *found = res != NULL;
        return e;
}

/* The next well-formed entry: 0, -ENOENT at the end, or another negative errno. */
static int scan_next(struct scan *s, int (*read_entry)(struct scan *, void *, bool *),
                     void *entry) {
        for (;;) {
                bool found = false;
                int e = read_entry(s, entry, &found);
                if (e == 0 && found)
                        return 0;
                if (e == ERANGE) {
                        int r = scan_too_long(s);
                        if (r < 0)
                                return r;
                        continue;
                }
                return e ? -e : -ENOENT;
        }
}

static int scan_next_user(struct scan *s, struct passwd *pw) {
        return scan_next(s, read_user, pw);
}

static int scan_next_group(struct scan *s, struct group *gr) {
        return scan_next(s, read_group, gr);
}

/* '+' and '-' entries are NIS compat markers, never an account (glibc's files module skips
 * them too). */
static bool is_marker(const char *name) {
        return name[0] == '+' || name[0] == '-';
}

static int files_user(const char *path, const char *name, uid_t uid,
                      struct account_user **ret_user) {
        if (name && (!*name || is_marker(name)))
                return -ENOENT;
        struct scan s;
        int r = scan_open(&s, path);
        if (r < 0)
                return r;
        struct passwd pw;
        while ((r = scan_next_user(&s, &pw)) == 0) {
                if (is_marker(pw.pw_name))
                        continue;
                if (name ? strcmp(pw.pw_name, name) == 0 : pw.pw_uid == uid) {
                        r = user_new(&pw, ret_user);
                        break;
                }
        }
        scan_close(&s);
        return r;
}

int account_files_user_by_name(const char *passwd_path, const char *name,
                               struct account_user **ret_user) {
        return files_user(passwd_path, name, 0, ret_user);
}

int account_files_user_by_uid(const char *passwd_path, uid_t uid, struct account_user **ret_user) {
        return files_user(passwd_path, NULL, uid, ret_user);
}

int account_files_group_by_name(const char *group_path, const char *name, gid_t *ret_gid) {
        if (!*name || is_marker(name))
                return -ENOENT;
        struct scan s;
        int r = scan_open(&s, group_path);
        if (r < 0)
                return r;
        struct group gr;
        while ((r = scan_next_group(&s, &gr)) == 0) {
                if (!is_marker(gr.gr_name) && strcmp(gr.gr_name, name) == 0) {
                        *ret_gid = gr.gr_gid;
                        break;
                }
        }
        scan_close(&s);
        return r;
}

/* As glibc's getgrouplist() with files alone: the primary group, then each group other than
 * the primary that names the user, in file order. No other duplicate is removed (two lines
 * with one gid give it twice, as glibc does; setgroups(2) takes that). */
int account_files_user_groups(const char *group_path, const char *user, gid_t gid,
                              gid_t *groups, size_t *n) {
        size_t room = *n, count = 0;
        if (room > 0)
                groups[0] = gid;
        count = 1;
        struct scan s;
        int r = scan_open(&s, group_path);
        if (r == -ENOENT) {
                r = 0; /* no group file: the primary group alone */
        } else if (r == 0) {
                struct group gr;
                while ((r = scan_next_group(&s, &gr)) == 0) {
                        if (gr.gr_gid == gid)
                                continue;
                        for (char **m = gr.gr_mem; m && *m; m++)
                                if (strcmp(*m, user) == 0) {
                                        if (count < room)
                                                groups[count] = gr.gr_gid;
                                        count++;
                                        break;
                                }
                }
                scan_close(&s);
                if (r == -ENOENT)
                        r = 0;
        }
        if (r < 0)
                return r;
        *n = count;
        return count > room ? -ERANGE : 0;
}

/* ---- the backend of this build ------------------------------------------------------------ */

#ifdef TEND_STATIC

int account_user_by_name(const char *name, struct account_user **ret_user) {
        return account_files_user_by_name(ACCOUNT_PASSWD_PATH, name, ret_user);
}

int account_user_by_uid(uid_t uid, struct account_user **ret_user) {
        return account_files_user_by_uid(ACCOUNT_PASSWD_PATH, uid, ret_user);
}

int account_group_by_name(const char *name, gid_t *ret_gid) {
        return account_files_group_by_name(ACCOUNT_GROUP_PATH, name, ret_gid);
}

int account_user_groups(const char *user, gid_t gid, gid_t *groups, size_t *n) {
        return account_files_user_groups(ACCOUNT_GROUP_PATH, user, gid, groups, n);
}

#else

static int nss_user(const char *name, uid_t uid, struct account_user **ret_user) {
        for (size_t size = BUF_START;; size *= 2) {
                char *buf = malloc(size);
                if (!buf)
                        return -ENOMEM;
                struct passwd pw, *res = NULL;
                int e = name ? getpwnam_r(name, &pw, buf, size, &res)
                             : getpwuid_r(uid, &pw, buf, size, &res);
                int r = e ? -e : res ? user_new(&pw, ret_user) : -ENOENT;
                free(buf);
                if (r != -ERANGE || size >= ACCOUNT_LINE_MAX)
                        return r;
        }
}

int account_user_by_name(const char *name, struct account_user **ret_user) {
        return nss_user(name, 0, ret_user);
}

int account_user_by_uid(uid_t uid, struct account_user **ret_user) {
        return nss_user(NULL, uid, ret_user);
}

int account_group_by_name(const char *name, gid_t *ret_gid) {
        for (size_t size = BUF_START;; size *= 2) {
                char *buf = malloc(size);
                if (!buf)
                        return -ENOMEM;
                struct group gr, *res = NULL;
                int e = getgrnam_r(name, &gr, buf, size, &res);
                int r = e ? -e : res ? 0 : -ENOENT;
                if (r == 0)
                        *ret_gid = gr.gr_gid;
                free(buf);
                if (r != -ERANGE || size >= ACCOUNT_LINE_MAX)
                        return r;
        }
}

int account_user_groups(const char *user, gid_t gid, gid_t *groups, size_t *n) {
        int room = *n > INT_MAX ? INT_MAX : (int)*n, got = room;
        if (getgrouplist(user, gid, groups, &got) >= 0) {
                *n = (size_t)got;
                return 0;
        }
        if (got <= room)
                return -ENOMEM; /* failed, and not for want of room */
        *n = (size_t)got;
        return -ERANGE;
}

#endif
