/* launch_hosts.h — the host list of `tend launch`: -H lists, --hostfile files, and the
 * reverse (a list of names folded back into ranges, for --gather's headers).
 *
 * Syntax (tend-launch(1), HOST LISTS):
 *  - a list is comma-separated entries; an entry is a host name with zero or more bracket
 *    groups, pdsh/ClusterShell style: `node[1-3,7]`, `node[01-10]` (a range whose start has a
 *    leading zero is zero-padded to the width of its start), `r[1-2]n[1-3]` (several groups:
 *    every combination, the first group varying slowest: r1n1 r1n2 r1n3 r2n1 ...);
 *  - inside brackets: comma-separated numbers or ranges `A-B` with A <= B, at most 18 digits;
 *    no steps (`1-9/2`), no nesting, no empty group;
 *  - a host name (after expansion) is 1..LAUNCH_HOST_NAME_MAX bytes of letters, digits and
 *    `. _ - : @ +`, not starting with `-` (an agent such as ssh would take it for an option);
 *    everything else (spaces, quotes, shell characters) is refused, so a name is safe in any
 *    agent template;
 *  - empty entries (`a,,b`, a trailing comma) are errors;
 *  - a hostfile holds one list per line (usually one name); `#` starts a comment to the end
 *    of the line; blank lines and blanks around entries are ignored;
 *  - every name appears once (a duplicate is an error naming it); at most LAUNCH_HOSTS_MAX.
 *
 * Nothing here prints or exits: functions return 0 or a negative errno and, on error, set
 * *ret_error to a malloc'd message saying what and where (`-H 'n[1-': ...`,
 * `--hostfile FILE:LINE: ...`), without the "tend: " prefix. *ret_error is NULL when the
 * error is -ENOMEM and no message could be made. On error the list keeps the hosts it had
 * before the failed call (a failed call adds nothing). */
#ifndef TEND_LAUNCH_HOSTS_H
#define TEND_LAUNCH_HOSTS_H

#include <stddef.h>

#define LAUNCH_HOSTS_MAX 65536
#define LAUNCH_HOST_NAME_MAX 255

struct launch_hosts {
        char **names;     /* n names in order, each malloc'd, NUL-terminated */
        size_t n;
        /* private: allocation size of names, and a set of the names for duplicates */
        size_t cap;
        size_t *set;      /* open addressing, index+1 into names, 0 = empty */
        size_t set_cap;   /* a power of two */
};

/* A zeroed struct is an empty list; launch_hosts_init() makes one. */
void launch_hosts_init(struct launch_hosts *h);
/* Frees every name and the arrays; leaves an empty list. */
void launch_hosts_free(struct launch_hosts *h);

/* Append the hosts of one -H argument. Errors: -EINVAL (syntax, bad name), -EEXIST
 * (duplicate), -E2BIG (more than LAUNCH_HOSTS_MAX in all), -ENOMEM. */
int launch_hosts_add_list(struct launch_hosts *h, const char *list, char **ret_error);

/* Append the hosts of a hostfile. Errors as above, plus the errno of opening or reading FILE
 * (the message names the file). A file with no host is not an error here. */
int launch_hosts_add_file(struct launch_hosts *h, const char *path, char **ret_error);

/* Fold names back into the list syntax: names that differ only in their last number (same
 * text before and after it, same zero-padding) become one entry `h[1-3,7]`; a group of one
 * stays a plain name. Entries come in the order of their first name in `names`; numbers
 * inside an entry are sorted. Expanding the result gives back the same set of names. `names`
 * should hold no duplicates (a duplicate appears once). *ret_text is malloc'd. Returns 0 or
 * -ENOMEM. n = 0 gives "". */
int launch_hosts_compress(const char *const *names, size_t n, char **ret_text);

#endif
