/* ladder.c — stopping a process (and its group) step by step: TERM, wait, QUIT, wait, KILL.
 *
 * Each step sends its signal, then SIGCONT so a stopped process can act on it, and arms one
 * timer for the step's wait. The ladder ends when the main process has exited and the group
 * (if any) is empty; which step was in effect then is what the report shows. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

struct proc_ladder {
        struct tend_ladder ladder;
        tend_loop *loop;
        tend_proc *proc;     /* NULL for a group-only ladder */
        tend_group *group;   /* NULL: signal only the process */
        int step;
        bool proc_done, group_done, finished;
        bool holds_ref; /* a loop_ref() until the ladder finishes or is freed */
        tend_timer *timer;
        tend_stop_cb proc_cb;
        tend_group_stop_cb group_cb;
        void *userdata;
};

struct proc_ladder **proc_ladder_slot(tend_proc *p);
void ladder_proc_exited(tend_proc *p);
void ladder_proc_free(tend_proc *p);

static void ladder_unref(struct proc_ladder *l) {
        if (l->holds_ref) {
                l->holds_ref = false;
                loop_unref(l->loop);
        }
}

static void ladder_free(struct proc_ladder *l) {
        if (!l)
                return;
        ladder_unref(l);
        if (l->group && !l->group_done)
                group_remove_empty_listener(l->group, l);
        tend_timer_free(l->timer);
        free(l);
}

static void ladder_check_done(struct proc_ladder *l) {
        if (l->finished)
                return;
        if (l->group && !l->group_done && tend_group_empty(l->group)) {
                l->group_done = true;
                group_remove_empty_listener(l->group, l);
        }
        if (!(l->proc_done && (!l->group || l->group_done)))
                return;
        l->finished = true;
        ladder_unref(l);
        tend_timer_stop(l->timer);
        /* The callback may free the process or group, and with it this ladder: read all we
         * need first and touch nothing after. */
        int step = l->step;
        void *ud = l->userdata;
        if (l->proc) {
                if (l->proc_cb)
                        l->proc_cb(l->proc, step, ud);
        } else {
                tend_group *g = l->group;
                tend_group_stop_cb cb = l->group_cb;
                struct proc_ladder **slot = group_ladder_slot(g);
                if (*slot == l) {
                        *slot = NULL;
                        ladder_free(l);
                }
                if (cb)
                        cb(g, step, ud);
        }
}

/* signo to the main process (directly: it may not be in the group yet) and to every other
 * member of the group, each once — a second SIGTERM makes many programs skip their graceful
 * exit. */
static void ladder_signal(struct proc_ladder *l, int signo) {
        pid_t main_pid = 0;
        if (l->proc && !l->proc_done && tend_proc_signal(l->proc, signo) == 0)
                main_pid = tend_proc_pid(l->proc);
        if (!l->group)
                return;
        if (signo == SIGKILL)
                (void)tend_group_kill(l->group); /* atomic; a second KILL changes nothing */
        else
                (void)group_signal_except(l->group, signo, main_pid);
}

static void ladder_send(struct proc_ladder *l) {
        int signo = l->ladder.step[l->step].signo;
        ladder_signal(l, signo);
        /* Signal 0 (a step that only waits, e.g. while a stop command works) sends nothing
         * that a stopped process would need to be woken for. */
        if (signo != 0 && signo != SIGKILL && signo != SIGCONT)
                ladder_signal(l, SIGCONT);
        if ((size_t)l->step + 1 < l->ladder.n || l->ladder.step[l->step].wait_usec)
                tend_timer_start(l->timer, l->ladder.step[l->step].wait_usec);
}

static void on_ladder_timer(tend_timer *t, void *userdata) {
        struct proc_ladder *l = userdata;
        if ((size_t)l->step + 1 < l->ladder.n)
                l->step++;
        /* Past the last step's wait: send it again (new members may have appeared) and keep
         * waiting; a process that survives SIGKILL is in the kernel's hands. */
        ladder_send(l);
        ladder_check_done(l);
}

static void on_group_empty(tend_group *g, void *userdata) {
        ladder_check_done(userdata);
}

static int ladder_start(tend_loop *loop, tend_proc *p, tend_group *g,
                        const struct tend_ladder *ladder, struct proc_ladder **slot,
                        struct proc_ladder **ret) {
        if (!ladder || ladder->n == 0 || ladder->n > TEND_LADDER_MAX)
                return -EINVAL;
        struct proc_ladder *l = calloc(1, sizeof *l);
        if (!l)
                return -ENOMEM;
        l->ladder = *ladder;
        l->loop = loop;
        l->proc = p;
        l->group = g;
        l->proc_done = !p || tend_proc_exited(p);
        int r = tend_timer_new(loop, on_ladder_timer, l, &l->timer);
        if (r < 0) {
                free(l);
                return r;
        }
        if (g) {
                r = group_add_empty_listener(g, on_group_empty, l);
                if (r < 0) {
                        tend_timer_free(l->timer);
                        free(l);
                        return r;
                }
        }
        ladder_free(*slot);
        *slot = l;
        loop_ref(loop);
        l->holds_ref = true;
        *ret = l;
        return 0;
}

TEND_PUBLIC int tend_proc_stop(tend_proc *p, const struct tend_ladder *ladder, tend_group *g,
                               tend_stop_cb cb, void *userdata) {
        struct proc_ladder *l;
        int r = ladder_start(proc_loop(p), p, g, ladder, proc_ladder_slot(p), &l);
        if (r < 0)
                return r;
        l->proc_cb = cb;
        l->userdata = userdata;
        ladder_send(l);
        ladder_check_done(l);
        return 0;
}

TEND_PUBLIC int tend_proc_stop_step(const tend_proc *p) {
        struct proc_ladder *l = *proc_ladder_slot((tend_proc *)p);
        return l ? l->step : -1;
}

TEND_PUBLIC int tend_group_stop(tend_group *g, const struct tend_ladder *ladder,
                                tend_group_stop_cb cb, void *userdata) {
        struct proc_ladder *l;
        int r = ladder_start(group_loop(g), NULL, g, ladder, group_ladder_slot(g), &l);
        if (r < 0)
                return r;
        l->group_cb = cb;
        l->userdata = userdata;
        ladder_send(l);
        ladder_check_done(l);
        return 0;
}

void ladder_proc_exited(tend_proc *p) {
        struct proc_ladder *l = *proc_ladder_slot(p);
        if (!l || l->finished)
                return;
        l->proc_done = true;
        ladder_check_done(l);
}

void ladder_proc_free(tend_proc *p) {
        struct proc_ladder **slot = proc_ladder_slot(p);
        ladder_free(*slot);
        *slot = NULL;
}

void ladder_group_free(tend_group *g) {
        struct proc_ladder **slot = group_ladder_slot(g);
        ladder_free(*slot);
        *slot = NULL;
}
