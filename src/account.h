/* account.h — user and group accounts: a user by name or uid, a group by name, a user's
 * supplementary groups. Every lookup of the program goes through here (tend run --user,
 * user=/group= of tend supervise, --control-group, tend launch's local user name).
 *
 * Two backends, chosen when the program is compiled:
 *  - the ordinary (dynamically linked) program asks glibc's NSS (getpwnam_r, getpwuid_r,
 *    getgrnam_r, getgrouplist), so accounts of LDAP, SSSD or systemd's nss module are found;
 *  - the static program (`make static`, compiled with TEND_STATIC) never calls NSS. A
 *    statically linked glibc that loads an NSS module (say libnss_systemd.so.2 for
 *    `passwd: files systemd`) loads the shared libc beside its own, and the module's first
 *    use of thread-local storage crashes (seen: SIGSEGV in _nss_systemd_is_blocked() under
 *    getgrouplist()). So it reads /etc/passwd and /etc/group itself, with glibc's file parsers
 *    fgetpwent_r/fgetgrent_r, which load nothing: files only, which is what a static init in
 *    a container can honestly offer.
 *
 * The files backend follows glibc's own files module: the first entry that matches wins,
 * entries whose name starts with '+' or '-' (NIS compat markers) never match a name or a uid,
 * malformed lines are skipped, and a user's groups are its primary group then, in file
 * order, every other group that lists it as a member. A line longer than ACCOUNT_LINE_MAX
 * bytes is skipped (it cannot be an account tend should trust, and skipping it does not hide
 * the accounts after it).
 *
 * Functions return 0 or a negative errno: -ENOENT when there is no such account (also when
 * the database file is missing), -ENOMEM, or the error of reading the database. Out-parameters
 * (ret_*) are untouched on failure. Nothing here prints. */
#ifndef TEND_ACCOUNT_H
#define TEND_ACCOUNT_H

#include <stddef.h>
#include <sys/types.h>

/* The longest passwd or group entry read (and the largest buffer given to the *_r functions
 * of NSS): 1 MiB. */
#define ACCOUNT_LINE_MAX (1024 * 1024)

#define ACCOUNT_PASSWD_PATH "/etc/passwd"
#define ACCOUNT_GROUP_PATH "/etc/group"

/* What tend takes from a passwd entry. One allocation: the strings live in it. */
struct account_user {
        uid_t uid;
        gid_t gid;
        char *name;
        char *home;
};

int account_user_by_name(const char *name, struct account_user **ret_user);
int account_user_by_uid(uid_t uid, struct account_user **ret_user);
/* Returns NULL; account_user_free(NULL) does nothing. */
struct account_user *account_user_free(struct account_user *u);

int account_group_by_name(const char *name, gid_t *ret_gid);

/* The groups of `user`, whose primary group is `gid`, as getgrouplist(3) gives them: gid
 * first, then the groups that list the user as a member. `groups` has room for *n entries.
 * Returns 0 with *n set to the number stored; or -ERANGE when they do not fit, with *n set
 * to the number there are (the first ones are stored), so that a caller can retry with that
 * much room; or another negative errno (*n untouched). No group database at all is not an
 * error: the primary group alone. */
int account_user_groups(const char *user, gid_t gid, gid_t *groups, size_t *n);

/* The files backend with the database paths as arguments: what the static program uses
 * (with ACCOUNT_PASSWD_PATH and ACCOUNT_GROUP_PATH), compiled into every build so that
 * tests/unit/test_account.c can point it at test files. */
int account_files_user_by_name(const char *passwd_path, const char *name,
                               struct account_user **ret_user);
int account_files_user_by_uid(const char *passwd_path, uid_t uid, struct account_user **ret_user);
int account_files_group_by_name(const char *group_path, const char *name, gid_t *ret_gid);
int account_files_user_groups(const char *group_path, const char *user, gid_t gid,
                              gid_t *groups, size_t *n);

#endif
