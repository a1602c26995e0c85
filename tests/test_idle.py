"""DESIGN §1.11: no polling. An idle `tend run` sleeps in epoll_wait with no timeout, so it
cannot wake up until the kernel has an event for it — also while a long --timeout is armed
(the deadline lives in a timerfd, not in the epoll timeout). Checked from /proc/PID/syscall
(the system call a blocked task sits in, and its arguments) and confirmed by the task's
context-switch counters not moving while the child is made to do work elsewhere."""
import os
import subprocess

import pytest

from conftest import child_env, settled_syscall

# x86-64 system call numbers: epoll_wait, epoll_pwait, epoll_pwait2.
EPOLL_WAITS = {232, 281, 441}


def blocked_syscall(pid):
    with open(f"/proc/{pid}/syscall") as f:
        fields = f.read().split()
    return fields


def switches(pid):
    counts = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                k, v = line.split(":")
                counts[k] = int(v)
    return counts


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="system call numbers are x86-64's")
@pytest.mark.parametrize("args", [[], ["--timeout", "1h"], ["--no-cgroup"]])
def test_idle_run_sleeps_without_timeout(tend, helper, args):
    r, w = os.pipe()
    proc = subprocess.Popen([tend, "run", *args, "--", helper, "sleep-forever"],
                            stdout=w, stdin=subprocess.DEVNULL,
                            env=child_env(HELPER_READY_FD="1"))
    os.close(w)
    try:
        with os.fdopen(r, "rb", buffering=0) as out:
            line = out.readline()
            assert line.startswith(b"ready "), line
            fields = settled_syscall(proc.pid)
            nr = int(fields[0])
            assert nr in EPOLL_WAITS, fields
            # Arguments: epfd, events, maxevents, timeout (as an unsigned hex word).
            timeout = int(fields[4], 16)
            if nr == 441:  # epoll_pwait2 takes a timespec pointer: NULL is "no timeout"
                assert timeout == 0, fields
            else:
                assert timeout in (0xffffffff, 0xffffffffffffffff), fields
            before = switches(proc.pid)
            # Make the machine busy with something else for a moment: 2000 short-lived
            # processes. tend must not be woken by any of it.
            subprocess.run(["sh", "-c", "i=0; while [ $i -lt 2000 ]; do /bin/true; i=$((i+1)); done"],
                           check=True, timeout=120)
            after = switches(proc.pid)
            assert after == before, (before, after)
            assert int(blocked_syscall(proc.pid)[0]) == nr
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert proc.returncode == 128 + 15
