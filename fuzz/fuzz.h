/* fuzz.h — shared by the fuzz targets (fuzz/fuzz_*.c), built with fuzz/driver.c (a plain
 * main(): corpus replay and deterministic mutations) or with libFuzzer (`make fuzz`). */
#ifndef TEND_FUZZ_H
#define TEND_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A broken invariant: report and abort (a crash to the driver and to libFuzzer). */
#define FUZZ_FAIL(...)                                                                       \
        do {                                                                                 \
                fprintf(stderr, "fuzz: %s:%d: ", __FILE__, __LINE__);                        \
                fprintf(stderr, __VA_ARGS__);                                                \
                fputc('\n', stderr);                                                         \
                abort();                                                                     \
        } while (0)

/* Keep a value alive (so a read of it is not optimised away). */
#define FUZZ_USE(x)                                                                          \
        do {                                                                                 \
                volatile size_t fuzz_use_ = (size_t)(x);                                     \
                (void)fuzz_use_;                                                             \
        } while (0)

#endif
