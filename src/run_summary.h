/* run_summary.h — the result object of one command run to its end: `tend run --json` writes
 * it, and `tend launch-agent` sends it in its EXIT frame (doc/launch.md), so both say the
 * same thing with the same fields. */
#ifndef TEND_RUN_SUMMARY_H
#define TEND_RUN_SUMMARY_H

#include "tend.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

struct run_summary {
        const char *command;
        bool exited;            /* the status is known or was lost */
        bool status_lost;
        struct tend_exit exit;  /* when exited && !status_lost */
        bool timed_out;
        int stop_step;          /* ladder step that ended the command, -1: none ran */
        const struct tend_ladder *ladder;
        uint64_t start_usec;
        uint64_t stdout_bytes, stderr_bytes;
        const pid_t *leftovers; /* the first n_leftovers of n_leftovers_total */
        size_t n_leftovers, n_leftovers_total;
        int leftover_step;      /* step that ended the leftovers, -1: none ran */
        bool keep_leftovers;
        bool cgroup;            /* the group was a cgroup (else a process group) */
        int tend_exit_code;
};

/* A new JSON object (NULL without memory). */
json_t *run_summary_json(const struct run_summary *s);

#endif
