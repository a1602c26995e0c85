/* launch.h — what the files of `tend launch` share (doc/launch.md is the design). */
#ifndef TEND_LAUNCH_H
#define TEND_LAUNCH_H

#include "cmd.h"
#include "launch_proto.h"

#include <jansson.h>

#define LAUNCH_JOB_LINE_MAX (1024u * 1024u) /* the job line, newline excluded */
#define LAUNCH_CALLBACKS_MAX 64              /* addresses in a job line's callback list */
#define LAUNCH_TREE_DEPTH_MAX 32             /* levels of --tree (usage error above) */
#define LAUNCH_REFUSED_OUTPUT_MAX (60u * 1024u) /* precheck output kept for REFUSED */

/* Copy len bytes of text into a malloc'd NUL-terminated string that is valid UTF-8: each
 * byte that does not start a valid sequence becomes U+FFFD (JSON strings must be UTF-8, a
 * command's output need not be). NULL without memory. */
char *launch_utf8_clean(const char *data, size_t len);

/* A frame's JSON payload: compact, ASCII. Returns a malloc'd text, NULL without memory. */
char *launch_json_text(json_t *o);

/* launch_guard.c: `tend launch-agent --guard KIND [PATH]`. */
int launch_guard_main(int argc, char **argv);

#endif
