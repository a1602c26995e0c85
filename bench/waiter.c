/* waiter.c — for the exit storm: block reading stdin until end-of-file, then exit with the
 * code given as the only argument. */
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv) {
        char buf[64];
        while (read(STDIN_FILENO, buf, sizeof buf) > 0)
                ;
        return argc > 1 ? atoi(argv[1]) : 0;
}
