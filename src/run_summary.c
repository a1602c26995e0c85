/* run_summary.c — see run_summary.h. */
#include "run_summary.h"

static double tv_seconds(struct timeval tv) {
        return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

static json_t *step_signal(const struct run_summary *s, int step) {
        if (step < 0 || !s->ladder || (size_t)step >= s->ladder->n)
                return json_null();
        return json_string(tend_signal_name(s->ladder->step[step].signo));
}

json_t *run_summary_json(const struct run_summary *s) {
        json_t *o = json_object();
        if (!o)
                return NULL;
        bool have = s->exited && !s->status_lost;
        json_object_set_new(o, "command", json_string(s->command));
        json_object_set_new(o, "exit_code", have && !s->exit.signo ? json_integer(s->exit.code)
                                                                   : json_null());
        json_object_set_new(o, "signal", have && s->exit.signo
                                                 ? json_string(tend_signal_name(s->exit.signo))
                                                 : json_null());
        json_object_set_new(o, "signal_number",
                            have && s->exit.signo ? json_integer(s->exit.signo) : json_null());
        json_object_set_new(o, "core_dumped", json_boolean(have && s->exit.core));
        json_object_set_new(o, "status_lost", json_boolean(s->status_lost));
        json_object_set_new(o, "timed_out", json_boolean(s->timed_out));
        json_object_set_new(o, "stop_step", s->stop_step >= 0 ? json_integer(s->stop_step)
                                                              : json_null());
        json_object_set_new(o, "stop_signal", step_signal(s, s->stop_step));
        uint64_t end = have ? s->exit.end_usec : tend_now_usec();
        json_object_set_new(o, "wall_seconds", json_real((double)(end - s->start_usec) / 1e6));
        json_object_set_new(o, "user_cpu_seconds",
                            json_real(have ? tv_seconds(s->exit.rusage.ru_utime) : 0));
        json_object_set_new(o, "system_cpu_seconds",
                            json_real(have ? tv_seconds(s->exit.rusage.ru_stime) : 0));
        json_object_set_new(o, "max_rss_kib", json_integer(have ? s->exit.rusage.ru_maxrss : 0));
        json_object_set_new(o, "stdout_bytes", json_integer((json_int_t)s->stdout_bytes));
        json_object_set_new(o, "stderr_bytes", json_integer((json_int_t)s->stderr_bytes));
        json_t *left = json_array();
        for (size_t i = 0; i < s->n_leftovers; i++)
                json_array_append_new(left, json_integer(s->leftovers[i]));
        json_object_set_new(o, "leftovers", left);
        json_object_set_new(o, "leftovers_total", json_integer((json_int_t)s->n_leftovers_total));
        json_object_set_new(o, "leftovers_stop_signal", step_signal(s, s->leftover_step));
        json_object_set_new(o, "leftovers_kept", json_boolean(s->keep_leftovers &&
                                                              s->n_leftovers_total > 0));
        json_object_set_new(o, "group", json_string(s->cgroup ? "cgroup" : "process-group"));
        json_object_set_new(o, "tend_exit_code", json_integer(s->tend_exit_code));
        return o;
}
