/* cmd.h — what the program's subcommand files share. */
#ifndef TEND_CMD_H
#define TEND_CMD_H

#include "tend.h"
/* The program shares the library's one I/O layer (lib/io.c, linked in statically). */
#include "internal.h"

#include <stdarg.h>
#include <stdbool.h>

/* Exit codes of the program (tend(1), EXIT STATUS). */
enum {
        EXIT_TEND_TIMEOUT = 124,     /* tend run: the timeout fired */
        EXIT_TEND_FAILURE = 125,     /* tend itself failed (bad option, cannot set up) */
        EXIT_TEND_NOEXEC = 126,      /* command found but not executable */
        EXIT_TEND_NOTFOUND = 127,    /* command not found */
};

/* "tend: <message>\n" on stderr. */
void msg_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void msg_verror(const char *fmt, va_list ap);

/* prog.c: block SIGPIPE, make the loop, become a child subreaper and reap orphans (on_orphan
 * may be NULL); prints what failed. Returns 0 or a negative errno. */
int prog_owner_loop(tend_loop **ret_loop, tend_orphan_cb on_orphan, void *userdata);
/* With 0, 1 or 2 closed, the next open() lands there: a --stdout file or a log opened as fd 1
 * would also get what is written to "stdout". Hold each closed one with /dev/null,
 * close-on-exec, so that children still find it closed. Called first thing in main(). */
void prog_hold_closed_stdio(void);
/* Write text and a newline to the file path (created or truncated, mode 0666 less the
 * umask), or to stderr for "-": the --json FILE of run and launch. 0 or -errno. */
int prog_write_line_to(const char *path, const char *text);
/* Make our own process group the terminal's foreground again (after a child had it). */
void prog_take_terminal_back(void);

/* Subcommands: argv[0] is the subcommand's name; each returns the exit code. */
int cmd_run(int argc, char **argv);
int cmd_record(int argc, char **argv);
int cmd_init(int argc, char **argv);
int cmd_supervise(int argc, char **argv);
int cmd_ctl(int argc, char **argv);
int cmd_launch(int argc, char **argv);
/* Internal: the remote side of `tend launch` (and its guard). */
int cmd_launch_agent(int argc, char **argv);
/* `tend init` under one of tini's names (argv[0] is that name): tini's defaults. */
int cmd_init_tini(int argc, char **argv);

#endif
