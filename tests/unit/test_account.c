/* test_account.c — the files backend of src/account.c (what the static program uses instead
 * of NSS), pointed at test passwd and group files: comments, blank and malformed lines, NIS
 * '+'/'-' markers, duplicates, a missing file, a line long enough to make the buffer grow and
 * one past ACCOUNT_LINE_MAX (skipped, the entries after it still found), group lists in file
 * order with the primary group first and once, and -ERANGE with the count when the room is
 * short. Last, the files backend and NSS agree on every account of this machine's own
 * /etc/passwd.
 *
 * The module lives in the program (src/); the Makefile links this test with its object
 * (TEST_OBJ_test_account). */
#include "harness.h"

#include <tend.h>

#include "unit_util.h"

#include "account.h"

#include <grp.h>
#include <pwd.h>

struct files {
        char dir[PATH_MAX];
        char passwd[PATH_MAX + 16];
        char group[PATH_MAX + 16];
};

static void files_make(struct files *f, const char *passwd, const char *group) {
        ut_mkdtemp(f->dir, sizeof f->dir, "account");
        snprintf(f->passwd, sizeof f->passwd, "%s/passwd", f->dir);
        snprintf(f->group, sizeof f->group, "%s/group", f->dir);
        if (passwd)
                ut_write_file(f->passwd, passwd, 0644);
        if (group)
                ut_write_file(f->group, group, 0644);
}

static void files_remove(struct files *f) {
        unlink(f->passwd);
        unlink(f->group);
        rmdir(f->dir);
}

/* "NAME:x:UID:GID:<filler>:HOME:/bin/sh\n" with a gecos field of `filler` bytes. */
static char *long_user_line(const char *name, unsigned uid, size_t filler, const char *home) {
        char *gecos = malloc(filler + 1);
        assert_non_null(gecos);
        memset(gecos, 'g', filler);
        gecos[filler] = '\0';
        char *line = NULL;
        assert_true(asprintf(&line, "%s:x:%u:%u:%s:%s:/bin/sh\n", name, uid, uid, gecos, home) > 0);
        free(gecos);
        return line;
}

/* "NAME:x:GID:m0,m1,...,USER\n" with `members` filler members before `user`. */
static char *long_group_line(const char *name, unsigned gid, size_t members, const char *user) {
        size_t cap = members * 8 + strlen(name) + strlen(user) + 64, len = 0;
        char *line = malloc(cap);
        assert_non_null(line);
        len += (size_t)snprintf(line + len, cap - len, "%s:x:%u:", name, gid);
        for (size_t i = 0; i < members; i++)
                len += (size_t)snprintf(line + len, cap - len, "m%zu,", i);
        snprintf(line + len, cap - len, "%s\n", user);
        return line;
}

static void expect_user(const char *passwd, const char *name, uid_t uid, gid_t gid,
                        const char *home) {
        struct account_user *u = NULL;
        int r = account_files_user_by_name(passwd, name, &u);
        if (r < 0)
                fail_msg("user '%s': %s", name, strerror(-r));
        assert_int_equal(u->uid, uid);
        assert_int_equal(u->gid, gid);
        assert_string_equal(u->name, name);
        assert_string_equal(u->home, home);
        u = account_user_free(u);
        assert_null(u);
        r = account_files_user_by_uid(passwd, uid, &u);
        if (r < 0)
                fail_msg("uid %u: %s", (unsigned)uid, strerror(-r));
        assert_int_equal(u->uid, uid);
        account_user_free(u);
}

static void expect_no_user(const char *passwd, const char *name) {
        struct account_user *u = (struct account_user *)1; /* untouched on failure */
        int r = account_files_user_by_name(passwd, name, &u);
        if (r != -ENOENT)
                fail_msg("user '%s': %d, expected -ENOENT", name, r);
        assert_ptr_equal(u, (struct account_user *)1);
}

static void users(void **state) {
        struct files f;
        files_make(&f,
                   "# a comment:x:7:7::/c:/bin/sh\n"
                   "\n"
                   "root:x:0:0:root:/root:/bin/bash\n"
                   "garbage without any colon\n"
                   "short:x:3\n"
                   "baduid:x:notanumber:5::/b:/bin/sh\n"
                   "+nis:x:40:40::/nis:/bin/sh\n"
                   "-minus:x:41:41::/minus:/bin/sh\n"
                   "alice:x:1000:100:Alice:/home/alice:/bin/sh\n"
                   "alice:x:1001:101:second alice:/elsewhere:/bin/sh\n"
                   "nohome:x:1002:1002:::/bin/sh\n"
                   "  spaced:x:1003:1003::/s:\n"
                   "last:x:1004:1004::/home/last:/bin/sh", /* no newline at the end */
                   NULL);
        expect_user(f.passwd, "root", 0, 0, "/root");
        expect_user(f.passwd, "alice", 1000, 100, "/home/alice"); /* the first one */
        expect_user(f.passwd, "nohome", 1002, 1002, "");
        expect_user(f.passwd, "spaced", 1003, 1003, "/s"); /* leading blanks skipped, as glibc */
        expect_user(f.passwd, "last", 1004, 1004, "/home/last");

        struct account_user *u = NULL;
        assert_int_equal(account_files_user_by_uid(f.passwd, 1001, &u), 0);
        assert_string_equal(u->name, "alice");
        assert_string_equal(u->home, "/elsewhere");
        u = account_user_free(u);

        expect_no_user(f.passwd, "garbage");
        expect_no_user(f.passwd, "short");
        expect_no_user(f.passwd, "baduid");
        expect_no_user(f.passwd, "+nis");   /* markers never match ... */
        expect_no_user(f.passwd, "-minus");
        expect_no_user(f.passwd, "nobody");
        expect_no_user(f.passwd, "");
        assert_int_equal(account_files_user_by_uid(f.passwd, 40, &u), -ENOENT); /* ... nor by uid */
        assert_int_equal(account_files_user_by_uid(f.passwd, 7, &u), -ENOENT);  /* a comment */
        assert_int_equal(account_files_user_by_uid(f.passwd, 12345, &u), -ENOENT);
        assert_null(u);
        files_remove(&f);

        /* No passwd file: no account (and no error other than that). */
        assert_int_equal(account_files_user_by_name(f.passwd, "root", &u), -ENOENT);
        assert_int_equal(account_files_user_by_uid(f.passwd, 0, &u), -ENOENT);
        assert_null(u);
}

static void long_lines(void **state) {
        /* 200 KiB: the buffer grows (from 4 KiB) and the entry is read whole. 1.5 MiB: past
         * ACCOUNT_LINE_MAX, skipped, and what follows is still found. */
        char *grows = long_user_line("grows", 2000, 200 * 1024, "/home/grows");
        char *huge = long_user_line("huge", 2001, ACCOUNT_LINE_MAX + ACCOUNT_LINE_MAX / 2,
                                    "/home/huge");
        size_t len = strlen(grows) + 2 * strlen(huge) + 256;
        char *text = malloc(len);
        assert_non_null(text);
        snprintf(text, len, "first:x:1:1::/first:/bin/sh\n%s%safter:x:2:2::/after:/bin/sh\n%s",
                 grows, huge, huge); /* the huge line last too, at the end of the file */
        struct files f;
        files_make(&f, text, NULL);
        expect_user(f.passwd, "first", 1, 1, "/first");
        expect_user(f.passwd, "grows", 2000, 2000, "/home/grows");
        expect_user(f.passwd, "after", 2, 2, "/after");
        expect_no_user(f.passwd, "huge");
        struct account_user *u = NULL;
        assert_int_equal(account_files_user_by_uid(f.passwd, 2001, &u), -ENOENT);
        assert_null(u);
        files_remove(&f);
        free(text);
        free(grows);
        free(huge);
}

static void groups(void **state) {
        char *wide = long_group_line("wide", 300, 40000, "alice"); /* ~300 KiB: grows */
        char *huge = long_group_line("huge", 301, 200000, "alice"); /* > 1 MiB: skipped */
        assert_true(strlen(huge) > ACCOUNT_LINE_MAX);
        size_t len = strlen(wide) + strlen(huge) + 1024;
        char *text = malloc(len);
        assert_non_null(text);
        snprintf(text, len,
                 "# comment:x:1:alice\n"
                 "users:x:100:alice,bob\n"      /* alice's primary group: not twice */
                 "garbage line\n"
                 "audio:x:29:bob,alice\n"
                 "video:x:44:alicex,xalice\n"   /* names that only look alike */
                 "+nis:x:45:alice\n"            /* glibc's initgroups reads these too */
                 "%s"
                 "%s"
                 "empty:x:46:\n"
                 "staff:x:50:alice\n"
                 "audio2:x:29:alice\n",         /* a second line with gid 29: twice, as glibc */
                 wide, huge);
        struct files f;
        files_make(&f, NULL, text);

        gid_t g[16];
        size_t n = 16;
        assert_int_equal(account_files_user_groups(f.group, "alice", 100, g, &n), 0);
        const gid_t want[] = { 100, 29, 45, 300, 50, 29 };
        assert_int_equal(n, sizeof want / sizeof *want);
        for (size_t i = 0; i < n; i++)
                if (g[i] != want[i])
                        fail_msg("group %zu is %u, expected %u", i, (unsigned)g[i],
                                 (unsigned)want[i]);

        /* Not enough room: -ERANGE, the count, the first ones stored. */
        gid_t small[3] = { 0, 0, 0 };
        n = 2;
        assert_int_equal(account_files_user_groups(f.group, "alice", 100, small, &n), -ERANGE);
        assert_int_equal(n, 6);
        assert_int_equal(small[0], 100);
        assert_int_equal(small[1], 29);
        assert_int_equal(small[2], 0);
        n = 0;
        assert_int_equal(account_files_user_groups(f.group, "alice", 100, small, &n), -ERANGE);
        assert_int_equal(n, 6);

        /* A primary group that is not in the file, a user in no group. */
        n = 16;
        assert_int_equal(account_files_user_groups(f.group, "carol", 777, g, &n), 0);
        assert_int_equal(n, 1);
        assert_int_equal(g[0], 777);
        n = 16;
        assert_int_equal(account_files_user_groups(f.group, "bob", 29, g, &n), 0);
        assert_int_equal(n, 2);
        assert_int_equal(g[0], 29);
        assert_int_equal(g[1], 100);

        /* Groups by name. */
        gid_t gid = 12345;
        assert_int_equal(account_files_group_by_name(f.group, "audio", &gid), 0);
        assert_int_equal(gid, 29); /* the first line */
        assert_int_equal(account_files_group_by_name(f.group, "wide", &gid), 0);
        assert_int_equal(gid, 300);
        assert_int_equal(account_files_group_by_name(f.group, "staff", &gid), 0);
        assert_int_equal(gid, 50);
        gid = 12345;
        assert_int_equal(account_files_group_by_name(f.group, "huge", &gid), -ENOENT);
        assert_int_equal(account_files_group_by_name(f.group, "+nis", &gid), -ENOENT);
        assert_int_equal(account_files_group_by_name(f.group, "garbage line", &gid), -ENOENT);
        assert_int_equal(account_files_group_by_name(f.group, "nogroup", &gid), -ENOENT);
        assert_int_equal(account_files_group_by_name(f.group, "", &gid), -ENOENT);
        assert_int_equal(gid, 12345); /* untouched on failure */
        files_remove(&f);

        /* No group file: a group name is unknown; a user's groups are its primary alone. */
        assert_int_equal(account_files_group_by_name(f.group, "audio", &gid), -ENOENT);
        n = 16;
        assert_int_equal(account_files_user_groups(f.group, "alice", 100, g, &n), 0);
        assert_int_equal(n, 1);
        assert_int_equal(g[0], 100);
        free(text);
        free(wide);
        free(huge);
}

/* The ordinary program's backend is NSS: for every account of /etc/passwd, both backends
 * say the same (uid, gid, home, groups). */
static void files_agree_with_nss(void **state) {
        FILE *pf = fopen(ACCOUNT_PASSWD_PATH, "re");
        if (!pf)
                skip_with_reason("no %s", ACCOUNT_PASSWD_PATH);
        struct passwd *pw;
        size_t checked = 0;
        static gid_t a[NGROUPS_MAX], b[NGROUPS_MAX];
        while ((pw = fgetpwent(pf))) {
                if (pw->pw_name[0] == '+' || pw->pw_name[0] == '-')
                        continue; /* NIS markers: nss_compat's business, not an account */
                struct account_user *x = NULL, *y = NULL;
                assert_int_equal(account_files_user_by_name(ACCOUNT_PASSWD_PATH, pw->pw_name, &x), 0);
                int r = account_user_by_name(pw->pw_name, &y);
                if (r < 0)
                        fail_msg("NSS has no user '%s': %s", pw->pw_name, strerror(-r));
                assert_int_equal(x->uid, y->uid);
                assert_int_equal(x->gid, y->gid);
                assert_string_equal(x->home, y->home);
                size_t na = NGROUPS_MAX, nb = NGROUPS_MAX;
                assert_int_equal(account_files_user_groups(ACCOUNT_GROUP_PATH, x->name, x->gid, a, &na), 0);
                assert_int_equal(account_user_groups(y->name, y->gid, b, &nb), 0);
                if (na != nb || memcmp(a, b, na * sizeof *a) != 0)
                        fail_msg("user '%s': %zu groups in the files, %zu from NSS", x->name, na, nb);
                account_user_free(x);
                account_user_free(y);
                checked++;
        }
        fclose(pf);
        assert_true(checked > 0);
}

static const struct CMUnitTest tests[] = {
        cmocka_unit_test(users),
        cmocka_unit_test(long_lines),
        cmocka_unit_test(groups),
        cmocka_unit_test(files_agree_with_nss),
};

TEND_TEST_MAIN(tests)
