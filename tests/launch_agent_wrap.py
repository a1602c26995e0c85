#!/usr/bin/python3
"""An agent template wrapper for the tests of `tend launch`: it stands between the launcher
and the real agent and, for the hosts named in its plan, misbehaves.

    launch_agent_wrap.py CTL PLAN HOST REAL-AGENT-ARGV...

used as `--agent 'python3 launch_agent_wrap.py CTL PLAN %h ip netns exec %h'` (the launcher
appends the remote tend path and `launch-agent`). PLAN is `host=mode,host=mode` (or `-`);
a host not in it gets the real agent (exec, nothing in between). Modes:

  silent   never writes the banner: the connect deadline must end it. Forks a child that
           stays in its process group, so the launcher must kill the whole group.
  capture  writes the banner, keeps the job line in CTL/HOST.job (written whole, then renamed)
           and waits: an agent that never calls back. The test can then call back itself
           with the true token (late, or with a wrong proof).
  forge    flips a bit of the token in the job line and hands that to the real agent, whose
           stdin stays the launcher's lifeline through a copying child.

silent and capture report "pid [pid...]" on the FIFO CTL/HOST.pids when the test made one,
and keep it open until they die: the test learns the pids and, from EOF, that they are gone.
They give up by themselves after 60 s (SIGALRM), so a broken launcher leaves no process
behind for long. Standalone: Python's standard library only.
"""

import base64
import json
import os
import signal
import sys

BANNER = b"tend-launch-agent 1\n"
GIVE_UP = 60


def report(ctl, host, pids):
    path = os.path.join(ctl, host + ".pids")
    if not os.path.exists(path):
        return None
    fd = os.open(path, os.O_WRONLY)  # the test holds the read end open already
    os.write(fd, (" ".join(map(str, pids)) + "\n").encode())
    return fd  # kept open (inherited by a forked child too) until death


def read_line(fd):
    data = b""
    while not data.endswith(b"\n"):
        chunk = os.read(fd, 1)
        if not chunk:
            break
        data += chunk
    return data


def wait_forever():
    signal.alarm(GIVE_UP)
    while True:
        signal.pause()


def main():
    ctl, plan, host, real = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
    modes = dict(item.split("=", 1) for item in plan.split(",") if "=" in item)
    mode = modes.get(host)
    if mode is None:
        os.execvp(real[0], real)

    if mode == "silent":
        child = os.fork()
        if child == 0:
            wait_forever()
        report(ctl, host, [os.getpid(), child])
        wait_forever()

    if mode == "capture":
        os.write(1, BANNER)
        line = read_line(0)
        tmp = os.path.join(ctl, host + ".job.part")
        with open(tmp, "wb") as f:
            f.write(line)
        os.rename(tmp, os.path.join(ctl, host + ".job"))
        report(ctl, host, [os.getpid()])
        wait_forever()

    if mode == "forge":
        line = read_line(0)
        job = json.loads(line)
        token = bytearray(base64.b64decode(job["token"]))
        token[0] ^= 1
        job["token"] = base64.b64encode(bytes(token)).decode()
        r, w = os.pipe()
        if os.fork() == 0:
            os.close(r)
            os.write(w, json.dumps(job).encode() + b"\n")
            while True:  # the lifeline: the launcher's stdin, copied until EOF
                data = os.read(0, 65536)
                if not data:
                    os._exit(0)
                os.write(w, data)
        os.close(w)
        os.dup2(r, 0)
        os.close(r)
        os.execvp(real[0], real)

    sys.exit(f"launch_agent_wrap: unknown mode {mode!r}")


if __name__ == "__main__":
    main()
