/* error.c — text for the library's error codes. */
#include "internal.h"

#include <limits.h>
#include <string.h>

/* The texts are English and do not follow the locale: the program's own messages are English,
 * and strerrordesc_np() is the errno table that needs no buffer, so it is safe from any thread.
 * strerror() is not used because for unknown values it may format into a buffer of its own. */
TEND_PUBLIC const char *tend_strerror(int err) {
        if (err == INT_MIN)
                return "unknown error";
        if (err < 0)
                err = -err;

        switch (err) {
        case TEND_ESTATUSLOST:
                return "exit status lost: reaped by another waiter and not recoverable on this "
                       "kernel";
        case TEND_EPARSE:
                return "cannot parse";
        case TEND_EBADRECORD:
                return "malformed record";
        default:
                break;
        }

        if (err < TEND_E_BASE) {
                const char *text = strerrordesc_np(err);
                if (text)
                        return text;
        }
        return "unknown error";
}
