/* fuzz_control.c — the control protocol of `tend supervise` (src/control.c): the bytes are
 * what a peer sends on its connection, handled by the real connection code (line framing,
 * size limits, JSON parsing, authorisation, every verb) through control_feed(), against a
 * fake supervisor of three services that never runs a process. Each input is fed twice: in
 * one piece by a peer with every right, and in small pieces by a read-only peer. */
#include "fuzz.h"
#include "supervise.h"

#include <fcntl.h>
#include <stdarg.h>
#include <string.h>
#include <unistd.h>

size_t control_feed(struct sv *sv, const char *data, size_t len, size_t chunk, bool full);

static tend_loop *loop;
static struct sv sv;
static struct svc svcs[3];
static struct svc_config cfgs[3];
static struct svc *svc_ptrs[3];
static char log_path[256];
static int log_file_marker, log_none_marker;

/* ---- the fake supervisor: what control.c calls ----------------------------------------- */

struct svc *sv_find(struct sv *s, const char *name) {
        for (size_t i = 0; i < s->n_svcs; i++)
                if (!strcmp(s->svcs[i]->cfg->name, name))
                        return s->svcs[i];
        return NULL;
}

void sv_say(struct sv *s, const char *fmt, ...) {
        if (!getenv("FUZZ_VERBOSE"))
                return;
        va_list ap;
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
}

void sv_settle(struct sv *s) {
}

int sv_reload(struct sv *s, char *msg, size_t size) {
        static unsigned n;
        if (n++ % 2) {
                snprintf(msg, size, "the configuration has errors; nothing changed");
                return -1;
        }
        snprintf(msg, size, "reloaded: 0 added, 0 changed, 0 removed");
        return 0;
}

void sv_shutdown(struct sv *s, const char *why) {
        s->shutting_down = true;
}

/* START makes it running, STOP stopped: and whoever waits for that hears it. */
void svc_post(struct svc *s, enum svc_event ev, const char *cause) {
        if (ev == SVC_EV_START)
                s->m.state = SVC_RUNNING;
        else if (ev == SVC_EV_STOP)
                s->m.state = SVC_STOPPED;
        control_on_transition(s->sv, s);
}

json_t *svc_status_json(const struct svc *s) {
        json_t *o = json_object();
        json_object_set_new(o, "name", json_string(s->cfg->name));
        json_object_set_new(o, "state", json_string(svc_state_name(s->m.state)));
        if (s->m.state == SVC_FAILED)
                json_object_set_new(o, "reason", json_string(s->m.reason));
        return o;
}

void logger_describe(const struct svc_logger *l, json_t *o) {
        json_t *d = json_object();
        if (l == (const struct svc_logger *)&log_file_marker) {
                json_object_set_new(d, "kind", json_string("file"));
                json_object_set_new(d, "path", json_string(log_path));
        } else if (l == (const struct svc_logger *)&log_none_marker) {
                json_object_set_new(d, "kind", json_string("none"));
        } else {
                json_object_set_new(d, "kind", json_string("inherit"));
        }
        json_object_set_new(o, "log", d);
}

enum svc_log logger_kind(const struct svc_logger *l) {
        if (l == (const struct svc_logger *)&log_file_marker)
                return SVC_LOG_FILE;
        return l == (const struct svc_logger *)&log_none_marker ? SVC_LOG_NONE : SVC_LOG_INHERIT;
}

const char *logger_path(const struct svc_logger *l) {
        return l == (const struct svc_logger *)&log_file_marker ? log_path : NULL;
}

unsigned logger_keep(const struct svc_logger *l) {
        return 2; /* log_path.1 and .2 do not exist: the read-back stops there */
}

/* ---- set-up ---------------------------------------------------------------------------- */

static void cleanup(void) {
        unlink(log_path);
}

static void setup(void) {
        if (tend_loop_new(&loop) < 0)
                FUZZ_FAIL("tend_loop_new");
        const char *t = getenv("TMPDIR");
        if (!t || t[0] != '/' || strlen(t) > 200)
                t = "/tmp";
        snprintf(log_path, sizeof log_path, "%s/tend-fuzz-control.XXXXXX", t);
        int fd = mkstemp(log_path);
        if (fd < 0)
                FUZZ_FAIL("mkstemp");
        atexit(cleanup);
        FILE *f = fdopen(fd, "w");
        for (int i = 0; i < 40; i++)
                fprintf(f, "2026-01-01T00:00:%02d web: line %d\n", i, i);
        fputs("not utf-8: \xff\xfe\xc3\x28 and a NUL: \0 x\n", f);
        for (int i = 0; i < 300; i++)
                fputs("a very long line ", f);
        fputs("without its newline", f);
        fclose(f);
        static const char *const names[] = { "bad", "db", "web" }; /* sorted */
        for (int i = 0; i < 3; i++) {
                cfgs[i].name = (char *)names[i];
                svcs[i].cfg = &cfgs[i];
                svcs[i].sv = &sv;
                svc_ptrs[i] = &svcs[i];
        }
        svcs[0].log = NULL;
        svcs[1].log = (struct svc_logger *)&log_none_marker;
        svcs[2].log = (struct svc_logger *)&log_file_marker;
        sv.loop = loop;
        sv.svcs = svc_ptrs;
        sv.n_svcs = 3;
}

static void reset(void) {
        sv.shutting_down = false;
        static char failed[] = "start-limit: 10 failures in 60s", none[] = "";
        svcs[0].m.state = SVC_FAILED;
        svcs[0].m.reason = failed;
        svcs[1].m.reason = svcs[2].m.reason = none; /* as svc_machine_init() leaves it */
        svcs[1].m.state = SVC_STOPPED;
        svcs[2].m.state = SVC_RUNNING;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        if (!loop)
                setup();
        reset();
        size_t replies = control_feed(&sv, (const char *)data, size, 0, true);
        /* Any non-empty request gets an answer (or the connection is dropped for not
         * reading, which cannot happen here: replies are read as they come). */
        FUZZ_USE(replies);
        reset();
        size_t chunk = size <= 4096 ? 1 + (size ? data[0] % 16 : 0) : 4096;
        (void)control_feed(&sv, (const char *)data, size, chunk, false);
        return 0;
}
