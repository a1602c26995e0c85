/* outq.h — a non-blocking, bounded writer for our own stdout/stderr (see outq.c). */
#ifndef TEND_OUTQ_H
#define TEND_OUTQ_H

#include "cmd.h"

/* Called when a paused producer may go on. */
typedef void (*outq_resume_cb)(void *userdata);

struct outq {
        tend_loop *loop;
        int fd;           /* what we write to: our own non-blocking reopen, or the fd itself */
        bool own_fd;
        bool opened;      /* the choice between the two is made (at the first write) */
        tend_watch *watch;
        char *buf;
        size_t head, len, cap;
        bool paused;
        int error;        /* errno of the first failed write (EPIPE: the reader left) */
        outq_resume_cb resume;
        void *userdata;
};

/* fd stays the caller's. Nothing is opened before the first write. */
void outq_init(struct outq *q, tend_loop *loop, int fd, outq_resume_cb resume, void *userdata);
/* Queue and write what can be written now. Returns true when the producer should pause until
 * the resume callback. After a write error, data is dropped (q->error says why). */
bool outq_write(struct outq *q, const void *data, size_t len);
/* Write out everything still queued, waiting if need be. */
void outq_finish(struct outq *q);
void outq_free(struct outq *q);

#endif
