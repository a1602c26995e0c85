/* launch_node.h — starting a set of hosts' agents and talking to them: what `tend launch`
 * does for the hosts it starts itself, and what an interior agent of the tree does for its
 * children (doc/launch.md, "Processes", "Deadlines", "The callback", "Tree mode").
 *
 * A node spawns each child's agent from the template (at most `fanout` between spawn and
 * callback), writes its job line, watches the banner and the connect/start deadlines, keeps
 * the last 4 KiB of the agent's stderr as the host's diagnostic, listens for callbacks and
 * authenticates them, and then passes frames: up to its owner through ops->frame (with the
 * host index they are about, unchanged), and down with node_send(). Where a child fails or
 * is lost, the node makes the frames itself: FAILED (never started) or LOST (after STARTED),
 * for that host and every host of its subtree that is not final yet, then DONE for each.
 *
 * Frames the owner gets (f->host = the global host index): CONNECTED, START, REFUSED,
 * STARTED, OUT, EXIT, FAILED, LOST, DONE. FAILED's reason is one of unreachable,
 * connect-timeout, agent-exited, start-timeout, spawn-failed, parent-failed, protocol,
 * cancelled (node_cancel). Every host ends with exactly one of REFUSED, EXIT, FAILED, LOST
 * (or an ABORT sent by the owner), then DONE. */
#ifndef TEND_LAUNCH_NODE_H
#define TEND_LAUNCH_NODE_H

#include "launch.h"

struct node;

struct node_child {
        const char *name;
        uint32_t index;
        uint8_t token[LP_KEY];
        json_t *subtree; /* tree mode: the job line's "children" for this host (borrowed), or NULL */
};

struct node_config {
        char **agent;            /* the template's words, with %h %u %n %% */
        const char *remote_tend; /* appended, then "launch-agent" */
        const char *user;        /* %u */
        unsigned fanout;
        uint64_t connect_timeout, start_timeout, heartbeat;
        json_t *job;             /* the job line's common fields (borrowed) */
        json_t *tree;            /* tree mode: the "tree" object without "children", or NULL */
        const char *listen;      /* NULL: any address */
        char **callbacks;        /* NULL: every local address */
        const char *who;         /* message prefix: "launch" or "launch-agent: host 'h'" */
        bool verbose;
};

struct node_ops {
        void (*frame)(struct node *n, const struct lp_frame *f, void *userdata);
        /* Every child is final and every agent process has ended. */
        void (*idle)(struct node *n, void *userdata);
};

int node_new(tend_loop *loop, const struct node_config *cfg, const struct node_child *children,
             size_t n_children, const struct node_ops *ops, void *userdata,
             struct node **ret_node);
/* Listen, then spawn the first agents. Returns 0 or a negative errno (the message printed). */
int node_start(struct node *n);
/* Kills every agent still running (SIGKILL to its process group) and waits for it. */
struct node *node_free(struct node *n);

/* Send a frame down to the host `host` (GO, ABORT, SIGNAL) through the child whose subtree
 * holds it. -ENOENT when no connection leads there (the host is final or not called back). */
int node_send(struct node *n, uint32_t host, int type, const void *payload, size_t len);
/* SIGNAL to every connected child (each forwards it to its command and its subtree). */
void node_signal_all(struct node *n, int signo);
/* Stop hosts that have not called back yet: their agents are stopped and each is reported
 * FAILED with reason "cancelled"; later callbacks get ABORT. */
void node_cancel(struct node *n);
/* Our own lifeline is gone: close every child's connection and stdin and stop its agent
 * (each child then loses its lifeline and stops its subtree); report nothing more. The idle
 * callback comes when every agent process has ended. */
void node_abandon(struct node *n);
/* Backpressure: stop/resume reading every child connection. */
void node_pause_read(struct node *n, bool paused);
/* The last 4 KiB the agent of host `host` (one this node started itself) wrote on its stderr,
 * and its stdout's lines before the banner: malloc'd UTF-8 text, NULL when there is none.
 * Complete once the node is idle (every agent ended, its pipes drained). */
char *node_diagnostic(const struct node *n, uint32_t host);
/* Callbacks refused so far. */
unsigned node_refused(const struct node *n);
/* The listening address ("[::]:40123"), for --verbose. */
const char *node_listen_address(const struct node *n);

#endif
