"""Capture benchmark, Python's subprocess: run a command, copy its stdout (and stderr) to files.

    py_capture.py OUT_FILE ERR_FILE|- -- COMMAND [ARGS...]

Popen.communicate() would hold the whole output in memory (gigabytes here), so this is what a
program that keeps its memory bounded writes instead: Popen with pipes, read in 64 KiB chunks
as they become readable (selectors, for two pipes), each chunk written to its file. With ERR_FILE
`-` stderr is not captured (inherited).
"""
import os
import selectors
import subprocess
import sys

CHUNK = 64 * 1024


def main():
    out_path, err_path = sys.argv[1], sys.argv[2]
    if sys.argv[3] != "--":
        sys.exit("usage: py_capture.py OUT ERR|- -- COMMAND [ARGS...]")
    argv = sys.argv[4:]
    split = err_path != "-"
    p = subprocess.Popen(argv, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE if split else None)
    outs = {p.stdout.fileno(): open(out_path, "wb", buffering=0)}
    if split:
        outs[p.stderr.fileno()] = open(err_path, "wb", buffering=0)
    sel = selectors.DefaultSelector()
    for fd in outs:
        sel.register(fd, selectors.EVENT_READ)
    while outs:
        for key, _ in sel.select():
            data = os.read(key.fd, CHUNK)
            if data:
                outs[key.fd].write(data)
            else:
                sel.unregister(key.fd)
                outs.pop(key.fd).close()
    return p.wait()


if __name__ == "__main__":
    sys.exit(main())
