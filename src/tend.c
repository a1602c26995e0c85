/* tend.c — the program: dispatch to a subcommand from one table. */
#include "cmd.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct command {
        const char *name;
        int (*fn)(int argc, char **argv);
        const char *summary; /* NULL: internal, not listed by --help */
};

static const struct command commands[] = {
        { "run", cmd_run, "run one command to the end, with nothing lost and nothing left behind" },
        { "init", cmd_init, "be a container's PID 1: forward signals, reap zombies, end cleanly" },
        { "supervise", cmd_supervise, "keep many services up from one event loop" },
        { "ctl", cmd_ctl, "ask a running `tend supervise`: status, start, stop, wait, logs" },
        { "launch", cmd_launch, "start a command on many hosts and know for sure which started" },
        { "record", cmd_record, "read records written by `tend run --record`" },
        /* What `tend launch` runs on each host (through ssh or the --agent template). */
        { "launch-agent", cmd_launch_agent, NULL },
};

void msg_verror(const char *fmt, va_list ap) {
        /* One fprintf of a preformatted line, so concurrent writers do not interleave it. */
        char line[4096];
        vsnprintf(line, sizeof line, fmt, ap);
        fprintf(stderr, "tend: %s\n", line);
}

void msg_error(const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        msg_verror(fmt, ap);
        va_end(ap);
}

static void usage(FILE *f) {
        fprintf(f, "usage: tend COMMAND [OPTIONS] [ARGS]\n\ncommands:\n");
        for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
                if (commands[i].summary)
                        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
        fprintf(f, "\n'tend COMMAND --help' or 'man tend-COMMAND' tells more.\n");
}

/* Installed or linked as tini (tini-static, tini-amd64, ...) or docker-init, the program is
 * `tend init` in tini's compatible mode, so that `docker run --init` and images that call
 * tini work unchanged. */
static bool called_as_tini(const char *argv0) {
        if (!argv0)
                return false;
        const char *base = strrchr(argv0, '/');
        base = base ? base + 1 : argv0;
        return !strcmp(base, "tini") || !strncmp(base, "tini-", 5) ||
               !strcmp(base, "docker-init");
}

int main(int argc, char **argv) {
        prog_hold_closed_stdio();
        if (argc >= 1 && called_as_tini(argv[0]))
                return cmd_init_tini(argc, argv);
        if (argc < 2) {
                usage(stderr);
                return EXIT_TEND_FAILURE;
        }
        const char *name = argv[1];
        if (!strcmp(name, "--help") || !strcmp(name, "-h") || !strcmp(name, "help")) {
                usage(stdout);
                return 0;
        }
        if (!strcmp(name, "--version")) {
                printf("tend %s\n", TEND_VERSION);
                return 0;
        }
        for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
                if (!strcmp(commands[i].name, name))
                        return commands[i].fn(argc - 1, argv + 1);
        msg_error("unknown command '%s' (try 'tend --help')", name);
        return EXIT_TEND_FAILURE;
}
