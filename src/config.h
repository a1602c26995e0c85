/* config.h — the configuration of `tend supervise` (tend.conf(5)), parsed by config.c. */
#ifndef TEND_CONFIG_H
#define TEND_CONFIG_H

#include "cmd.h"
#include "service.h"

#include <netinet/in.h>
#include <stdbool.h>
#include <sys/socket.h>

#define CONFIG_NAME_MAX 64
#define CONFIG_RLIMITS_MAX 16

enum svc_type { SVC_TYPE_SIMPLE = 0, SVC_TYPE_FORKING };

enum svc_ready {
        SVC_READY_NONE = 0, /* ready once spawned (forking: once the start command is done) */
        SVC_READY_NOTIFY,   /* sd_notify READY=1 */
        SVC_READY_FD,       /* s6: a newline on fd N */
        SVC_READY_STOP,     /* Upstart: the main process SIGSTOPs itself */
        SVC_READY_TCP,      /* a TCP connect to host:port succeeds */
        SVC_READY_EXEC,     /* a command exits 0 */
};

enum svc_log { SVC_LOG_INHERIT = 0, SVC_LOG_FILE, SVC_LOG_NONE };

/* A command: argv, or the text for /bin/sh -c when the service has shell = yes. */
struct svc_command {
        char **argv;  /* NULL-terminated; NULL when not set */
        char *text;   /* as written, for messages */
};

/* What most services leave at its default: kept apart so that they can all share one copy
 * (config_default_ext()), or one copy per distinct set of values when only numbers differ
 * (restart = always for all, say). A supervisor of 10,000 services held 10,000 copies of
 * ~450 bytes of defaults before (DESIGN §5: at most 1 KiB per idle service, all told). */
struct svc_config_ext {
        char *directory;
        char **env;           /* NAME=VALUE, NULL-terminated */
        size_t n_env;
        char *user;           /* as written; resolved at load time into: */
        bool has_uid;
        uid_t uid;
        gid_t gid;            /* the user's primary group, or group = */
        bool has_gid;
        gid_t *groups;        /* the user's supplementary groups */
        size_t n_groups;
        char **user_env;      /* HOME=, USER=, LOGNAME= of the user, NULL-terminated */
        char *group;
        bool has_umask;
        mode_t umask;
        struct tend_rlimit *rlimits; /* n_rlimits of them (malloc'd; most services have none) */
        size_t n_rlimits;

        struct svc_policy policy;
        uint8_t success_codes[32];  /* bit per exit code 0..255 */
        uint8_t success_signals[16]; /* bit per signal 1..127 */

        char *pidfile;

        int ready_fd;
        struct sockaddr_storage *tcp_addr; /* ready = tcp: (malloc'd) */
        socklen_t tcp_addr_len;
        char *tcp_text;       /* host:port as written */
        struct svc_command ready_exec;

        struct svc_command stop_command;
        struct svc_command hooks[SVC_HOOK_COUNT];

        char **after;         /* service names, NULL-terminated */
        size_t n_after;
        char **requires;
        size_t n_requires;

        char *log_path;
        uint64_t log_size;    /* rotate above this many bytes (0: never) */
        unsigned log_keep;    /* rotated files kept */
        bool shared;          /* config.c: one copy for every service that has the same (set
                                 only where no field points anywhere), freed with the last */
};

struct svc_config {
        char *name;
        const char *file;     /* where the section starts: only while config_load() runs
                                 (the parse owns the text; NULL afterwards) */
        int line;
        char *identity;       /* every key and value in order: equal text, equal service */

        struct svc_command command;
        bool shell;
        bool packed;          /* name, identity and command live in this allocation */
        enum svc_type type;
        enum svc_ready ready;
        enum svc_log log;
        const struct tend_ladder *ladder; /* config_default_ladder, or malloc'd */
        /* The rest: config_default_ext() when every field of it has its default (shared,
         * never written once loaded), else the service's own. Read-only outside config.c. */
        struct svc_config_ext *x;
};

/* The defaults of struct svc_config_ext, shared by the services that change none of them. */
struct svc_config_ext *config_default_ext(void);

/* TERM/10s,KILL: the stop ladder of every service without stop = (shared, not freed). */
extern const struct tend_ladder config_default_ladder;

struct config {
        struct svc_config **services; /* sorted by name */
        size_t n_services;
};

/* Parse path (and what it includes). On failure, every problem found has been reported with
 * msg_error() as "FILE:LINE: problem" and a negative errno is returned. */
int config_load(const char *path, struct config **ret_config);
/* Frees the services still in c (a caller may take one and set its slot to NULL). */
struct config *config_free(struct config *c);
void config_service_free(struct svc_config *s);
/* By name, or NULL. */
struct svc_config *config_find(const struct config *c, const char *name);

/* Does this exit (code, or signo if non-zero) count as success for the service? */
bool config_exit_is_success(const struct svc_config *s, int code, int signo);

/* Split text into words with shell-like quoting: blanks separate words; '...' keeps
 * everything literally; "..." keeps everything but \", \\, \$ and \` (backslash-newline is
 * dropped); a backslash outside quotes keeps the next character. No expansion of any kind:
 * $, *, ~ and ` are ordinary characters (shell = yes runs /bin/sh for that). Returns 0 with a
 * malloc'd NULL-terminated array (free with config_strv_free), or -EINVAL with *ret_error
 * set to a static description. */
int config_split(const char *text, char ***ret_words, size_t *ret_n, const char **ret_error);
void config_strv_free(char **v);

#endif
