/* supervise_status.c — a service described as one JSON object: what `tend ctl status` will
 * show, and what SIGUSR1 writes to tend's stderr today. Times are given as durations
 * (seconds ago, seconds from now) because the machine keeps monotonic time. */
#include "supervise.h"

#include <string.h>

static double seconds(uint64_t usec) {
        return (double)usec / 1e6;
}

json_t *svc_status_json(const struct svc *s) {
        json_t *o = json_object();
        if (!o)
                return NULL;
        const struct svc_machine *m = &s->m;
        uint64_t now = tend_now_usec();
        json_object_set_new(o, "name", json_string(s->cfg->name));
        json_object_set_new(o, "state", json_string(svc_state_name(m->state)));
        json_object_set_new(o, "phase", m->phase ? json_string(svc_phase_name(m->phase))
                                                 : json_null());
        json_object_set_new(o, "since_seconds", json_real(seconds(now - m->since)));
        json_object_set_new(o, "ready", json_boolean(svc_is_up(m)));
        json_object_set_new(o, "uptime_seconds",
                            svc_is_up(m) && m->ready_since
                                    ? json_real(seconds(now - m->ready_since))
                                    : json_null());
        bool main_alive = s->main && !s->main_exited;
        json_object_set_new(o, "main_pid", main_alive ? json_integer(s->main_pid) : json_null());
        pid_t pids[64];
        int n = tend_group_members(s->group, pids, ARRAY_SIZE(pids));
        json_t *members = json_array();
        for (int i = 0; i < n && i < (int)ARRAY_SIZE(pids); i++)
                json_array_append_new(members, json_integer(pids[i]));
        json_object_set_new(o, "processes", members);
        json_object_set_new(o, "processes_total", json_integer(n < 0 ? 0 : n));
        json_object_set_new(o, "group", tend_group_path(s->group)
                                                ? json_string(tend_group_path(s->group))
                                                : json_string("process-group"));
        json_object_set_new(o, "restarts", json_integer(m->restarts));
        json_object_set_new(o, "next_try_in_seconds",
                            m->state == SVC_BACKOFF && m->deadline
                                    ? json_real(seconds(m->deadline > now ? m->deadline - now : 0))
                                    : json_null());
        json_object_set_new(o, "reason", m->reason[0] ? json_string(m->reason) : json_null());
        if (s->have_exit) {
                json_t *e = json_object();
                if (s->last_exit_lost) {
                        json_object_set_new(e, "lost", json_true());
                } else {
                        json_object_set_new(e, "code", s->last_signo
                                                               ? json_null()
                                                               : json_integer(s->last_code));
                        json_object_set_new(e, "signal",
                                            s->last_signo
                                                    ? json_string(tend_signal_name(s->last_signo))
                                                    : json_null());
                }
                json_object_set_new(e, "at_unix", json_real(seconds(s->last_exit_wall)));
                json_object_set_new(o, "last_exit", e);
        } else {
                json_object_set_new(o, "last_exit", json_null());
        }
        const struct svc_readiness *rd = s->rd;
        json_object_set_new(o, "status_text", rd && rd->status_text ? json_string(rd->status_text)
                                                                    : json_null());
        json_object_set_new(o, "reloading", json_boolean(m->state == SVC_RELOADING));
        if (rd && rd->notify_path) {
                json_t *nt = json_object();
                json_object_set_new(nt, "socket", json_string(rd->notify_path));
                json_object_set_new(nt, "dropped", json_integer((json_int_t)rd->notify_dropped));
                json_object_set_new(nt, "errno", rd->notify_errno ? json_integer(rd->notify_errno)
                                                                  : json_null());
                json_object_set_new(o, "notify", nt);
        }
        logger_describe(s->log, o);
        return o;
}
