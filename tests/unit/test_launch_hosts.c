/* test_launch_hosts.c — host lists of `tend launch` (src/launch_hosts.c): -H expansion with
 * pdsh-style ranges and zero padding, several bracket groups, hostfiles with comments, every
 * error with what and where, duplicates, the 65,536 cap, and folding names back into ranges
 * (--gather's headers) so that expanding the fold gives the same names.
 *
 * The module lives in the program (src/); the Makefile links this test with its object
 * (TEST_OBJ_test_launch_hosts). */
#include "harness.h"

#include "launch_hosts.h"

#define LIST(...) ((const char *const[]){ __VA_ARGS__, NULL })

static size_t count(const char *const *v) {
        size_t n = 0;
        while (v[n])
                n++;
        return n;
}

/* Expand `list` and compare with the expected names, in order. */
static void expect_list(const char *list, const char *const *want) {
        struct launch_hosts h;
        char *err = NULL;
        int r;

        launch_hosts_init(&h);
        r = launch_hosts_add_list(&h, list, &err);
        if (r != 0)
                fail_msg("'%s': r=%d (%s), error '%s'", list, r, strerror(-r), err ? err : "(none)");
        assert_null(err);
        size_t n = count(want);
        if (h.n != n) {
                for (size_t i = 0; i < h.n; i++)
                        print_message("  got[%zu] = %s\n", i, h.names[i]);
                fail_msg("'%s': %zu hosts, expected %zu", list, h.n, n);
        }
        for (size_t i = 0; i < n; i++)
                if (strcmp(h.names[i], want[i]) != 0)
                        fail_msg("'%s': host %zu is '%s', expected '%s'", list, i, h.names[i],
                                 want[i]);
        launch_hosts_free(&h);
}

/* Expand `list` and expect error `code` with a message containing every fragment given. */
static void expect_error(const char *list, int code, const char *const *fragments) {
        struct launch_hosts h;
        char *err = NULL;
        int r;

        launch_hosts_init(&h);
        r = launch_hosts_add_list(&h, list, &err);
        if (r != code)
                fail_msg("'%s': r=%d, expected %d (message '%s')", list, r, code,
                         err ? err : "(none)");
        assert_non_null(err);
        for (size_t i = 0; fragments[i]; i++)
                if (!strstr(err, fragments[i]))
                        fail_msg("'%s': message '%s' lacks '%s'", list, err, fragments[i]);
        assert_int_equal(h.n, 0); /* a failed call adds nothing */
        free(err);
        launch_hosts_free(&h);
}

static void plain_names(void **state) {
        expect_list("a", LIST("a"));
        expect_list("a,b,c", LIST("a", "b", "c"));
        expect_list("c,a,b", LIST("c", "a", "b")); /* order kept */
        expect_list(" a , b\t", LIST("a", "b"));    /* blanks around entries */
        expect_list("n1.example.org,user@h2,fd00::1,x_y+z",
                    LIST("n1.example.org", "user@h2", "fd00::1", "x_y+z"));
        expect_list("tend-ns-1", LIST("tend-ns-1"));
}

static void ranges(void **state) {
        expect_list("node[1-3,7]", LIST("node1", "node2", "node3", "node7"));
        expect_list("node[1-3]x", LIST("node1x", "node2x", "node3x"));
        expect_list("[1-2]", LIST("1", "2"));
        expect_list("n[5]", LIST("n5"));
        expect_list("n[0-2]", LIST("n0", "n1", "n2"));
        expect_list("n[8-11]", LIST("n8", "n9", "n10", "n11"));
        expect_list("a,n[1-2],b", LIST("a", "n1", "n2", "b"));
        expect_list("n[3,1,2]", LIST("n3", "n1", "n2")); /* as written, not sorted */
}

static void zero_padding(void **state) {
        expect_list("node[01-10]", LIST("node01", "node02", "node03", "node04", "node05",
                                        "node06", "node07", "node08", "node09", "node10"));
        expect_list("n[001-003]", LIST("n001", "n002", "n003"));
        expect_list("n[08-10]", LIST("n08", "n09", "n10"));
        expect_list("n[098-100]", LIST("n098", "n099", "n100"));
        expect_list("n[1,02]", LIST("n1", "n02")); /* per range */
        expect_list("n[00]", LIST("n00"));
}

static void several_groups(void **state) {
        expect_list("r[1-2]n[1-3]", LIST("r1n1", "r1n2", "r1n3", "r2n1", "r2n2", "r2n3"));
        expect_list("r[1-2]n[01-02].x", LIST("r1n01.x", "r1n02.x", "r2n01.x", "r2n02.x"));
        expect_list("[1-2][3-4]", LIST("13", "14", "23", "24"));
}

static void syntax_errors(void **state) {
        expect_error("", -EINVAL, LIST("-H ''", "empty host name"));
        expect_error("a,,b", -EINVAL, LIST("-H 'a,,b'", "empty host name"));
        expect_error("a,", -EINVAL, LIST("empty host name"));
        expect_error("n[1-", -EINVAL, LIST("-H 'n[1-'", "unterminated '['"));
        expect_error("n[1", -EINVAL, LIST("unterminated '['"));
        expect_error("n[", -EINVAL, LIST("unterminated '['"));
        expect_error("n1]", -EINVAL, LIST("']' without '['", "'n1]'"));
        expect_error("n[]", -EINVAL, LIST("empty brackets", "'n[]'"));
        expect_error("n[a]", -EINVAL, LIST("expected a number"));
        expect_error("n[1-2/2]", -EINVAL, LIST("expected ',' or ']'"));
        expect_error("n[1,]", -EINVAL, LIST("expected a number"));
        expect_error("n[[1]]", -EINVAL, LIST("expected a number"));
        expect_error("n[5-3]", -EINVAL, LIST("range 5-3 goes down", "'n[5-3]'"));
        expect_error("n[1234567890123456789]", -EINVAL, LIST("more than 18 digits"));
        expect_error("a b", -EINVAL, LIST("invalid character ' '", "'a b'"));
        expect_error("a;rm", -EINVAL, LIST("invalid character ';'"));
        expect_error("a'b", -EINVAL, LIST("invalid character '''"));
        expect_error("a$b", -EINVAL, LIST("invalid character '$'"));
        expect_error("a\x01", -EINVAL, LIST("invalid character '\\x01'"));
        expect_error("a/b", -EINVAL, LIST("invalid character '/'"));
        expect_error("-oProxyCommand=x", -EINVAL, LIST("starts with '-'"));
        expect_error("ok,-[1-2]", -EINVAL, LIST("starts with '-'"));
        expect_error("[1-2]a[1][1][1][1][1][1][1][1][1][1][1][1][1][1][1][1]", -EINVAL,
                     LIST("more than 16"));
}

static void long_names(void **state) {
        char name[LAUNCH_HOST_NAME_MAX + 2];
        memset(name, 'a', sizeof name);
        name[LAUNCH_HOST_NAME_MAX] = '\0';
        expect_list(name, LIST(name)); /* exactly the limit */
        name[LAUNCH_HOST_NAME_MAX] = 'a';
        name[LAUNCH_HOST_NAME_MAX + 1] = '\0';
        expect_error(name, -EINVAL, LIST("longer than 255 bytes", "...")); /* quoted, cut */
        /* The range pushes it over. */
        name[LAUNCH_HOST_NAME_MAX - 1] = '\0';
        char list[LAUNCH_HOST_NAME_MAX + 16];
        snprintf(list, sizeof list, "%s[9-10]", name);
        expect_error(list, -EINVAL, LIST("longer than 255 bytes"));
}

static void duplicates(void **state) {
        expect_error("a,b,a", -EEXIST, LIST("-H 'a,b,a'", "duplicate host 'a'"));
        expect_error("n[1-3],n2", -EEXIST, LIST("duplicate host 'n2'"));
        expect_error("n[1-3,2]", -EEXIST, LIST("duplicate host 'n2'"));
        /* Zero-padded and plain are different names. */
        expect_list("n[1],n[01]", LIST("n1", "n01"));

        /* Across calls: the second -H fails and adds nothing; the first stays. */
        struct launch_hosts h;
        char *err = NULL;
        launch_hosts_init(&h);
        assert_int_equal(launch_hosts_add_list(&h, "x[1-100]", &err), 0);
        assert_int_equal(launch_hosts_add_list(&h, "y1,y2,x50", &err), -EEXIST);
        assert_non_null(strstr(err, "duplicate host 'x50'"));
        free(err);
        assert_int_equal(h.n, 100);
        /* y1 was rolled back: adding it again works. */
        assert_int_equal(launch_hosts_add_list(&h, "y1", &err), 0);
        assert_int_equal(h.n, 101);
        assert_string_equal(h.names[100], "y1");
        launch_hosts_free(&h);
        assert_int_equal(h.n, 0);
        launch_hosts_free(&h); /* twice is fine */
}

static void cap(void **state) {
        struct launch_hosts h;
        char *err = NULL;

        launch_hosts_init(&h);
        assert_int_equal(launch_hosts_add_list(&h, "n[1-65536]", &err), 0);
        assert_int_equal(h.n, LAUNCH_HOSTS_MAX);
        assert_string_equal(h.names[65535], "n65536");
        assert_int_equal(launch_hosts_add_list(&h, "one-more", &err), -E2BIG);
        assert_non_null(strstr(err, "more than 65536 hosts"));
        free(err);
        assert_int_equal(h.n, LAUNCH_HOSTS_MAX);
        launch_hosts_free(&h);

        /* Refused before anything is made: huge ranges and products. */
        expect_error("n[1-65537]", -E2BIG, LIST("more than 65536 hosts"));
        expect_error("n[1-999999999999]", -E2BIG, LIST("more than 65536 hosts"));
        expect_error("a[1-1000]b[1-1000]", -E2BIG, LIST("more than 65536 hosts"));
        expect_error("n[1-60000,1-60000]", -E2BIG, LIST("more than 65536 hosts"));
        expect_error("a[1-40000],b[1-40000]", -E2BIG, LIST("more than 65536 hosts"));
}

/* ---- hostfiles ------------------------------------------------------------------------------ */

/* A temporary file in the test session's directory (removed with the session even when a
 * test fails before its unlink), else in /tmp. */
static char *temp_path(void) {
        const char *dir = getenv("TEND_TEST_SESSION");
        char *path = NULL;
        assert_true(asprintf(&path, "%s/hostfile-XXXXXX", dir && *dir ? dir : "/tmp") > 0);
        return path;
}

static char *write_file(const char *text) {
        char *path = temp_path();
        int fd = mkstemp(path);
        assert_true(fd >= 0);
        size_t len = strlen(text);
        assert_int_equal(write(fd, text, len), (ssize_t)len);
        close(fd);
        return path;
}

static void hostfile(void **state) {
        char *path = write_file("# the cluster\n"
                                "\n"
                                "a\n"
                                "  b   # the second\n"
                                "\t\n"
                                "n[1-2],c\r\n"
                                "last");
        struct launch_hosts h;
        char *err = NULL;
        launch_hosts_init(&h);
        assert_int_equal(launch_hosts_add_list(&h, "first", &err), 0);
        int r = launch_hosts_add_file(&h, path, &err);
        if (r != 0)
                fail_msg("r=%d: %s", r, err);
        const char *const *want = LIST("first", "a", "b", "n1", "n2", "c", "last");
        assert_int_equal(h.n, count(want));
        for (size_t i = 0; i < h.n; i++)
                assert_string_equal(h.names[i], want[i]);
        launch_hosts_free(&h);
        unlink(path);
        free(path);
}

static void hostfile_errors(void **state) {
        static const struct {
                const char *text;
                int code;
                const char *line;
                const char *what;
        } cases[] = {
                { "a\nb\n\nn[1-\n", -EINVAL, ":4: ", "unterminated '['" },
                { "a\nb\na # again\n", -EEXIST, ":3: ", "duplicate host 'a'" },
                { "# c\nx y\n", -EINVAL, ":2: ", "invalid character ' '" },
                { "a\0b\n", -EINVAL, ":1: ", "NUL byte" },
                { "ok\n-bad\n", -EINVAL, ":2: ", "starts with '-'" },
        };
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
                char *path = temp_path();
                int fd = mkstemp(path);
                assert_true(fd >= 0);
                size_t len = strlen(cases[i].text);
                if (i == 3)
                        len = 4; /* the NUL case */
                assert_int_equal(write(fd, cases[i].text, len), (ssize_t)len);
                close(fd);
                struct launch_hosts h;
                char *err = NULL;
                launch_hosts_init(&h);
                int r = launch_hosts_add_file(&h, path, &err);
                char where[512];
                snprintf(where, sizeof where, "--hostfile %s%s", path, cases[i].line);
                if (r != cases[i].code || !err || !strstr(err, where) ||
                    !strstr(err, cases[i].what))
                        fail_msg("case %zu: r=%d message '%s', expected %d with '%s' and '%s'", i,
                                 r, err ? err : "(none)", cases[i].code, where, cases[i].what);
                assert_int_equal(h.n, 0);
                free(err);
                launch_hosts_free(&h);
                unlink(path);
                free(path);
        }

        /* A missing file: the errno and the name. */
        struct launch_hosts h;
        char *err = NULL;
        launch_hosts_init(&h);
        assert_int_equal(launch_hosts_add_file(&h, "/nonexistent/hosts", &err), -ENOENT);
        assert_non_null(err);
        assert_non_null(strstr(err, "--hostfile /nonexistent/hosts: No such file or directory"));
        free(err);
        /* A directory cannot be read. */
        assert_true(launch_hosts_add_file(&h, "/", &err) < 0);
        assert_non_null(err);
        assert_non_null(strstr(err, "--hostfile /: "));
        free(err);
        launch_hosts_free(&h);
}

static void hostfile_empty(void **state) {
        char *path = write_file("# nothing\n\n   \n");
        struct launch_hosts h;
        char *err = NULL;
        launch_hosts_init(&h);
        assert_int_equal(launch_hosts_add_file(&h, path, &err), 0);
        assert_null(err);
        assert_int_equal(h.n, 0);
        launch_hosts_free(&h);
        unlink(path);
        free(path);
}

/* ---- folding back ----------------------------------------------------------------------------- */

static void expect_fold(const char *const *names, const char *want) {
        char *text = NULL;
        int r = launch_hosts_compress(names, count(names), &text);
        assert_int_equal(r, 0);
        if (strcmp(text, want) != 0)
                fail_msg("fold gave '%s', expected '%s'", text, want);

        /* Expanding the fold gives the same set of names. */
        struct launch_hosts h;
        char *err = NULL;
        launch_hosts_init(&h);
        if (count(names) > 0) {
                r = launch_hosts_add_list(&h, text, &err);
                if (r != 0)
                        fail_msg("fold '%s' does not expand: %s", text, err);
                assert_int_equal(h.n, count(names));
                for (size_t i = 0; names[i]; i++) {
                        size_t k = 0;
                        while (k < h.n && strcmp(h.names[k], names[i]) != 0)
                                k++;
                        if (k == h.n)
                                fail_msg("fold '%s' lost '%s'", text, names[i]);
                }
        }
        launch_hosts_free(&h);
        free(text);
}

static void fold(void **state) {
        char *text = NULL;
        assert_int_equal(launch_hosts_compress(NULL, 0, &text), 0);
        assert_string_equal(text, "");
        free(text);

        expect_fold(LIST("h1", "h2", "h3", "h7"), "h[1-3,7]");
        expect_fold(LIST("h7", "h3", "h1", "h2"), "h[1-3,7]"); /* numbers sorted */
        expect_fold(LIST("h1"), "h1");
        expect_fold(LIST("alpha"), "alpha");
        expect_fold(LIST("b", "a", "h2", "h1"), "b,a,h[1-2]");    /* order of first name */
        expect_fold(LIST("h2", "b", "h1", "a"), "h[1-2],b,a");
        expect_fold(LIST("n01", "n02", "n03", "n04", "n05", "n06", "n07", "n08", "n09", "n10"),
                    "n[01-10]");
        expect_fold(LIST("n8", "n9", "n10", "n11"), "n[8-11]");
        expect_fold(LIST("n1", "n01"), "n1,n01");                    /* different names */
        expect_fold(LIST("n1", "n01", "n2", "n02"), "n[1-2],n[01-02]");
        expect_fold(LIST("n08", "n09", "n10", "n100"), "n[08-10],n100");
        expect_fold(LIST("r1n1", "r1n2", "r2n1"), "r1n[1-2],r2n1");   /* last number only */
        expect_fold(LIST("a1.x", "a2.x", "a3.y"), "a[1-2].x,a3.y");
        expect_fold(LIST("h0", "h1", "h3", "h4", "h5", "h9"), "h[0-1,3-5,9]");
        expect_fold(LIST("1", "2", "3"), "[1-3]");
        expect_fold(LIST("tend-h0", "tend-h1"), "tend-h[0-1]");

        /* A large set comes back to one range. */
        static char storage[1000][16];
        const char *names[1001];
        for (int i = 0; i < 1000; i++) {
                snprintf(storage[i], sizeof storage[i], "node%04d", 999 - i);
                names[i] = storage[i];
        }
        names[1000] = NULL;
        expect_fold(names, "node[0000-0999]");
}

static const struct CMUnitTest tests[] = {
        cmocka_unit_test(plain_names),   cmocka_unit_test(ranges),
        cmocka_unit_test(zero_padding),  cmocka_unit_test(several_groups),
        cmocka_unit_test(syntax_errors), cmocka_unit_test(long_names),
        cmocka_unit_test(duplicates),    cmocka_unit_test(cap),
        cmocka_unit_test(hostfile),      cmocka_unit_test(hostfile_errors),
        cmocka_unit_test(hostfile_empty), cmocka_unit_test(fold),
};

TEND_TEST_MAIN(tests)
