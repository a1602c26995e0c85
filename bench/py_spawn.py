"""Spawn benchmark, Python's subprocess: the same job as bench/spawn.c, same output.

    py_spawn.py N INFLIGHT RESIDENT_MIB [PROGRAM]

One at a time: subprocess.Popen(...).wait(). With INFLIGHT > 1, Popen has no "wait for any",
so the finished child is found with os.waitid(P_ALL, WNOWAIT) (which does not reap) and then
collected by its own Popen.wait(), so subprocess still does the reaping.
"""
import json
import os
import subprocess
import sys
import time


def main():
    n, inflight, resident_mib = (int(a) for a in sys.argv[1:4])
    program = sys.argv[4] if len(sys.argv) > 4 else "/bin/true"
    big = None
    if resident_mib:
        big = bytearray(resident_mib << 20)
        big[::4096] = b"\1" * (len(big) // 4096)   # write every page: resident
    argv = [program]
    failures = started = finished = 0
    t0 = time.monotonic()
    if inflight == 1:
        for _ in range(n):
            if subprocess.Popen(argv).wait() != 0:
                failures += 1
        started = finished = n
    else:
        running = {}
        while started < n and started < inflight:
            p = subprocess.Popen(argv)
            running[p.pid] = p
            started += 1
        while finished < n:
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOWAIT)
            p = running.pop(info.si_pid)
            if p.wait() != 0:
                failures += 1
            finished += 1
            if started < n:
                p = subprocess.Popen(argv)
                running[p.pid] = p
                started += 1
    t1 = time.monotonic()
    print(json.dumps({"mode": "python", "n": n, "inflight": inflight,
                      "resident_mib": resident_mib, "seconds": round(t1 - t0, 6),
                      "failures": failures}, separators=(",", ":")))
    del big
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
