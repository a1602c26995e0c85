"""`tend ctl` and the control socket of `tend supervise`.

Each test starts a real supervisor (the Supervisor of test_supervise.py, whose transition
lines on stderr are the events we wait for) with its control socket in its runtime directory,
and drives it with `tend ctl` or with raw protocol lines. Waits are for replies, transitions
or process exits, bounded by TIMEOUT, never a sleep. The supervisor is stopped at the end of
each test and must exit 0.
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import child_env, require_root
from test_supervise import TIMEOUT, pid_gone, q, supervise  # noqa: F401 (fixture)


def ctl(tend, sup, *args, control=None, prefix=(), check=None, timeout=TIMEOUT):
    """Run `tend ctl` against sup; returns the CompletedProcess."""
    path = control or sup.control
    r = subprocess.run([*prefix, str(tend), "ctl", "--control", str(path), *args],
                       capture_output=True, text=True, env=child_env(), timeout=timeout,
                       stdin=subprocess.DEVNULL)
    if check is not None:
        assert r.returncode == check, (r.returncode, r.stdout, r.stderr)
    return r


def ctl_json(tend, sup, *args, check=0):
    r = ctl(tend, sup, "--json", *args, check=check)
    return [json.loads(line) for line in r.stdout.splitlines()]


def status(tend, sup, *names):
    (reply,) = ctl_json(tend, sup, "status", *names)
    assert reply["ok"] is True
    return {s["name"]: s for s in reply["services"]}


def start_sup(supervise, text, args=()):
    sup = supervise(text, args=args)
    sup.control = sup.runtime / "control"
    return sup


class Raw:
    """A protocol client: lines out, reply objects in."""

    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.connect(str(path))  # blocking: a full backlog waits for the accept
        self.s.settimeout(TIMEOUT)
        self.buf = b""

    @classmethod
    def as_user(cls, path, uid, gid):
        """A client whose connection the supervisor sees as uid (primary group gid): made
        by a child that drops to that user, connects and hands the socket over (SO_PEERCRED
        is the connecting process's)."""
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.setgroups([])
                os.setgid(gid)
                os.setuid(uid)
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(str(path))
                socket.send_fds(a, [b"x"], [s.fileno()])
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert status == 0
        _, fds, _, _ = socket.recv_fds(b, 1, 1)
        a.close()
        b.close()
        c = cls.__new__(cls)
        c.s = socket.socket(fileno=fds[0])
        c.s.settimeout(TIMEOUT)
        c.buf = b""
        return c

    def send(self, data):
        self.s.sendall(data)

    def reply(self):
        """The next reply object, or None at EOF. A Unix socket closed with unread input
        (ours, which the supervisor refused to read) ends with ECONNRESET: that is an EOF
        here too."""
        while b"\n" not in self.buf:
            try:
                data = self.s.recv(65536)
            except ConnectionResetError:
                data = b""
            if not data:
                assert self.buf == b"", self.buf
                return None
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def close(self):
        self.s.close()


def two_services(helper):
    return f"""\
[service a]
command = {helper} sleep-forever

[service b]
command = {helper} catch HUP
environment = HELPER_READY_FD=3
ready = fd:3
"""


# ---- the socket -----------------------------------------------------------------------------------

def test_socket_mode_and_cleanup(supervise, helper, tend):
    sup = start_sup(supervise, two_services(helper))
    sup.wait_state("a", "running")
    st = os.stat(sup.control)
    assert oct(st.st_mode & 0o777) == "0o600"
    assert st.st_uid == os.geteuid()
    assert sup.stop() == 0
    assert not sup.control.exists()


def test_second_supervisor_on_the_same_socket_is_refused(supervise, helper, tend, tmp):
    sup = start_sup(supervise, two_services(helper))
    sup.wait_state("a", "running")
    conf = Path(tmp) / "other.conf"
    conf.write_text(f"[service x]\ncommand = {helper} sleep-forever\n")
    r = subprocess.run([str(tend), "supervise", "--runtime-dir", str(Path(tmp) / "rt2"),
                        "--control", str(sup.control), str(conf)], capture_output=True,
                       text=True, env=child_env(), timeout=TIMEOUT, stdin=subprocess.DEVNULL)
    assert r.returncode == 125
    assert "another supervisor listens" in r.stderr
    ctl(tend, sup, "status", check=0)  # the first one still has its socket
    assert sup.stop() == 0


def test_stale_socket_is_replaced(supervise, helper, tend, tmp):
    rt = Path(tmp) / "rt"
    rt.mkdir()
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(rt / "control"))
    stale.close()  # bound, nobody listens: what a killed supervisor leaves
    sup = start_sup(supervise, two_services(helper))
    sup.wait_state("a", "running")
    ctl(tend, sup, "status", check=0)
    assert sup.stop() == 0


def test_no_socket_is_a_connection_error(tend, tmp):
    r = subprocess.run([str(tend), "ctl", "--control", str(Path(tmp) / "nothing"), "status"],
                       capture_output=True, text=True, env=child_env(), timeout=TIMEOUT)
    assert r.returncode == 125
    assert "cannot connect" in r.stderr


@pytest.mark.parametrize("args", [[], ["frobnicate"], ["start"], ["signal", "a"],
                                  ["wait", "a"], ["logs"], ["reload", "x"],
                                  ["--timeout", "soon", "wait", "a", "running"], ["--bogus"]])
def test_usage_errors(tend, tmp, args):
    r = subprocess.run([str(tend), "ctl", "--control", str(Path(tmp) / "s"), *args],
                       capture_output=True, text=True, env=child_env(), timeout=TIMEOUT)
    assert r.returncode == 125, r
    assert r.stderr.startswith("tend: ")


def test_help(tend):
    r = subprocess.run([str(tend), "ctl", "--help"], capture_output=True, text=True,
                       timeout=TIMEOUT)
    assert r.returncode == 0
    assert "--json" in r.stdout and "125" in r.stdout


# ---- verbs ----------------------------------------------------------------------------------------

def test_status_table_and_json(supervise, helper, tend):
    sup = start_sup(supervise, two_services(helper))
    sup.wait_state("a", "running")
    sup.wait_state("b", "running")
    r = ctl(tend, sup, "status", check=0)
    lines = r.stdout.splitlines()
    assert lines[0].split()[:4] == ["NAME", "STATE", "PID", "UPTIME"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["a"][1] == "running" and rows["b"][1] == "running"
    st = status(tend, sup)
    assert set(st) == {"a", "b"}
    a = st["a"]
    assert a["state"] == "running" and a["ready"] is True
    assert a["main_pid"] == int(rows["a"][2])
    assert a["processes"] == [a["main_pid"]]
    assert a["restarts"] == 0 and a["last_exit"] is None
    assert a["uptime_seconds"] >= 0
    assert set(status(tend, sup, "b")) == {"b"}
    r = ctl(tend, sup, "status", "nope", check=1)
    assert "unknown service 'nope'" in r.stderr
    assert sup.stop() == 0


def test_stop_start_restart_and_wait(supervise, helper, tend):
    sup = start_sup(supervise, two_services(helper))
    sup.wait_state("a", "running")
    pid = status(tend, sup, "a")["a"]["main_pid"]

    ctl(tend, sup, "stop", "a", check=0)
    assert "tend ctl stop (uid 0)" in sup.wait_state("a", "stopping")
    ctl(tend, sup, "wait", "--timeout", "20s", "a", "stopped", check=0)
    assert pid_gone(pid)
    st = status(tend, sup, "a")["a"]
    assert st["state"] == "stopped" and st["main_pid"] is None

    # A wait that begins before the event is answered by the event.
    waiter = subprocess.Popen([str(tend), "ctl", "--control", str(sup.control), "wait",
                               "--timeout", "20s", "a", "running"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=child_env())
    try:
        ctl(tend, sup, "start", "a", check=0)
        out, err = waiter.communicate(timeout=TIMEOUT)
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.wait()
    assert waiter.returncode == 0, err
    assert out == "a is running\n"
    sup.wait_state("a", "running")
    pid2 = status(tend, sup, "a")["a"]["main_pid"]
    assert pid2 and pid2 != pid

    (reply,) = ctl_json(tend, sup, "restart", "a")
    assert reply["ok"] and reply["services"][0]["name"] == "a"
    sup.wait_state("a", "stopping")
    sup.wait_state("a", "starting")
    sup.wait_state("a", "running")
    assert pid_gone(pid2)
    pid3 = status(tend, sup, "a")["a"]["main_pid"]
    assert pid3 not in (pid, pid2)
    assert status(tend, sup, "a")["a"]["restarts"] == 0  # asked for, not automatic

    r = ctl(tend, sup, "start", "a", "nope", check=1)
    assert "unknown service 'nope'" in r.stderr
    assert sup.stop() == 0


def test_wait_timeout(supervise, helper, tend):
    sup = start_sup(supervise, two_services(helper))
    sup.wait_state("a", "running")
    t0 = time.monotonic()
    r = ctl(tend, sup, "wait", "--timeout", "300ms", "a", "stopped", check=1)
    assert time.monotonic() - t0 >= 0.3
    assert "timeout: 'a' did not become stopped within 0.3s (it is running)" in r.stderr
    # Already there: at once.
    ctl(tend, sup, "wait", "a", "running", check=0)
    r = ctl(tend, sup, "wait", "a", "sleepy", check=1)
    assert "unknown state" in r.stderr
    assert sup.stop() == 0


def test_wait_fails_when_the_service_fails(supervise, helper, tend):
    sup = start_sup(supervise, f"""\
[service bad]
command = {helper} exit 3
restart = never
ready = notify
""")
    # Never ready (it exits without notifying), so it is never `running`: a wait for
    # running cannot slip into a moment between the start and the exit.
    sup.wait_state("bad", "failed")
    r = ctl(tend, sup, "wait", "--timeout", "20s", "bad", "running", check=1)
    assert "service 'bad' failed: exited with code 3" in r.stderr
    ctl(tend, sup, "start", "bad", check=0)
    r = ctl(tend, sup, "wait", "--timeout", "20s", "bad", "running", check=1)
    assert "service 'bad' failed" in r.stderr
    sup.wait_state("bad", "failed")
    ctl(tend, sup, "wait", "bad", "failed", check=0)
    assert sup.stop() == 0


def test_signal(supervise, helper, tend):
    sup = start_sup(supervise, two_services(helper))
    sup.wait_state("b", "running")
    (reply,) = ctl_json(tend, sup, "signal", "b", "HUP")
    assert reply["ok"] and reply["signal"] == "HUP" and reply["pid"] > 0
    sup.wait_line(rf"^b: got HUP from {sup.proc.pid}$", stream=1)
    sup.wait_state("b", "stopped")  # catch exits 0 once its signal came
    r = ctl(tend, sup, "signal", "b", "HUP", check=1)
    assert "has no main process" in r.stderr
    r = ctl(tend, sup, "signal", "a", "NOSUCH", check=1)
    assert "unknown signal" in r.stderr
    assert sup.stop() == 0


def test_reload_and_shutdown(supervise, helper, tend):
    sup = start_sup(supervise, two_services(helper))
    sup.wait_state("a", "running")
    sup.config.write_text(two_services(helper) + f"[service c]\ncommand = {helper} sleep-forever\n")
    r = ctl(tend, sup, "reload", check=0)
    assert r.stdout == "0 changed, 1 added, 0 removed, 2 unchanged\n"
    ctl(tend, sup, "wait", "--timeout", "20s", "c", "running", check=0)
    sup.config.write_text("[service broken\n")
    r = ctl(tend, sup, "reload", check=1)
    assert "has errors" in r.stderr
    assert status(tend, sup, "c")["c"]["state"] == "running"

    ctl(tend, sup, "shutdown", check=0)
    sup.wait_line(r"^tend: shutdown \(tend ctl shutdown, uid 0\): stopping 3 services$")
    assert sup.proc.wait(timeout=TIMEOUT) == 0
    assert sup.stop() == 0
    assert not sup.control.exists()


def test_logs_tail_follow_and_elsewhere(supervise, helper, tend, tmp):
    log = Path(tmp) / "l.log"
    sup = start_sup(supervise, f"""\
[service l]
command = for i in 1 2 3 4 5; do echo line$i; done; exec {helper} catch USR1
shell = yes
log = file:{log}
ready = exec:grep -q line5 {q(log)}

[service a]
command = {helper} sleep-forever
""")
    sup.wait_state("l", "running")  # the probe saw line5 in the file
    r = ctl(tend, sup, "logs", "-n", "2", "l", check=0)
    got = r.stdout.splitlines()
    assert [line.split(" ", 2)[1:] for line in got] == [["stdout", "line4"], ["stdout", "line5"]]
    replies = ctl_json(tend, sup, "logs", "l")
    assert [x["log"].split()[-1] for x in replies[:-1]] == [f"line{i}" for i in range(1, 6)]
    assert replies[-1] == {"ok": True, "lines": 5, "path": str(log), "following": False}

    follower = subprocess.Popen([str(tend), "ctl", "--control", str(sup.control), "logs",
                                 "-n", "1", "--follow", "l"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=child_env())
    try:
        assert follower.stdout.readline().endswith(" stdout line5\n")
        # line5 was sent by the same callback that then registers the follower, and the
        # supervisor is one thread: the signal request below is handled after it.
        ctl(tend, sup, "signal", "l", "USR1", check=0)
        line = follower.stdout.readline()
        assert line.endswith(f" stdout got USR1 from {sup.proc.pid}\n"), line
    finally:
        follower.terminate()
        follower.wait(timeout=TIMEOUT)

    r = ctl(tend, sup, "logs", "a", check=1)
    assert "keeps no log to read back" in r.stderr and "log = inherit" in r.stderr
    assert "--follow" in r.stderr
    assert sup.stop() == 0


def _burst_service(helper, name, log):
    # A service that writes "n 0" .. "n COUNT-1" then "done" on stdout at each SIGUSR1 (one
    # write per line: the shell's echo), COUNT from the file next to it.
    return f"""
[service {name}]
command = trap 'i=0; while [ $i -lt 200 ]; do echo "n $i"; i=$((i+1)); done; echo done' USR1; \\
    {helper} notify-send READY=1; while :; do {helper} sleep-forever & wait $!; done
shell = yes
ready = notify
log = {log}
"""


def _follow(sup, name, lines=0):
    """A raw client following NAME's log, registered once this returns."""
    c = Raw(sup.control)
    c.send(json.dumps({"verb": "logs", "name": name, "lines": lines, "follow": True}).encode()
           + b"\n")
    history = []
    while True:
        r = c.reply()
        assert r is not None
        if "log" in r:
            history.append(r["log"])
            continue
        assert r["ok"] is True and r["following"] is True, r
        return c, history


def _follow_until_done(c):
    got = []
    while True:
        r = c.reply()
        assert r is not None, got[-3:]
        line = r["log"]
        m = re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z stdout (.*)$", line)
        assert m, line
        if m.group(1) == "done":
            return got
        got.append(m.group(1))


def test_logs_read_back_through_rotated_files(supervise, helper, tend, tmp):
    # 300 lines in files of 2 KiB, 3 rotated ones kept: the current file has fewer than the
    # lines asked for, and the rest comes from svc.log.1, .2, .3, oldest first, with no gap.
    log = Path(tmp) / "svc.log"
    sup = start_sup(supervise, f"""\
[service chatty]
command = i=0; while [ $i -lt 300 ]; do echo "line $i"; i=$((i+1)); done; \\
    exec {helper} notify READY=1
shell = yes
ready = notify
log = file:{log},size=2K,keep=3
""")
    sup.wait_state("chatty", "running")  # READY=1 came after the last line was written
    current = log.read_text().splitlines()
    assert 0 < len(current) < 60
    r = ctl(tend, sup, "logs", "-n", "60", "chatty", check=0)
    body = [line.split(" ", 2)[2] for line in r.stdout.splitlines()]
    assert body == [f"line {i}" for i in range(240, 300)]
    # Everything that is kept, in order: the files from the oldest.
    kept = []
    for name in ("svc.log.3", "svc.log.2", "svc.log.1", "svc.log"):
        kept += (Path(tmp) / name).read_text().splitlines()
    replies = ctl_json(tend, sup, "logs", "-n", "10000", "chatty")
    assert [x["log"] for x in replies[:-1]] == kept
    assert replies[-1]["lines"] == len(kept)
    assert kept[-1].endswith(" stdout line 299") and len(kept) < 300
    assert sup.stop() == 0


def test_follow_across_rotations_loses_and_repeats_nothing(supervise, helper, tend, tmp):
    # The follower gets the lines from the supervisor as they are written, not from the
    # file: rotations in the middle (2 KiB files) neither lose nor repeat a line.
    log = Path(tmp) / "f.log"
    sup = start_sup(supervise, _burst_service(helper, "f", f"file:{log},size=2K,keep=1"))
    sup.wait_state("f", "running")
    c, history = _follow(sup, "f")
    assert history == []
    ctl(tend, sup, "signal", "f", "USR1", check=0)
    assert _follow_until_done(c) == [f"n {i}" for i in range(200)]
    assert status(tend, sup, "f")["f"]["log"]["rotations"] >= 2
    assert sup.stop() == 0


def test_follow_inherit_and_none(supervise, helper, tend):
    # log = inherit: no history to read back, but --follow streams the new lines (the same
    # lines still go to the supervisor's stdout with the prefix). log = none: a clear error.
    sup = start_sup(supervise, _burst_service(helper, "p", "inherit") + f"""
[service n]
command = {helper} sleep-forever
log = none
""")
    sup.wait_state("p", "running")
    c, history = _follow(sup, "p", lines=10)
    assert history == []
    ctl(tend, sup, "signal", "p", "USR1", check=0)
    assert _follow_until_done(c) == [f"n {i}" for i in range(200)]
    sup.wait_line(r"^p: done$", stream=1)
    assert sup.out[sup.out.index("p: n 0"):sup.out.index("p: done")] == \
        [f"p: n {i}" for i in range(200)]
    for args in (["logs", "n"], ["logs", "-f", "n"]):
        r = ctl(tend, sup, *args, check=1)
        assert "keeps no log: its output is discarded (log = none)" in r.stderr, r.stderr
    assert sup.stop() == 0


# ---- bad input ----------------------------------------------------------------------------------

def test_malformed_unknown_oversized_and_truncated(supervise, helper, tend):
    sup = start_sup(supervise, two_services(helper))
    sup.wait_state("a", "running")

    c = Raw(sup.control)
    c.send(b'{"verb": "status", oops\n')
    r = c.reply()
    assert r["ok"] is False and r["error"].startswith("malformed request")
    c.send(b"[1, 2]\n")
    assert "want an object" in c.reply()["error"]
    c.send(b'{"verb": 7}\n')
    assert "want an object" in c.reply()["error"]
    c.send(b'{"verb": "status", "verb": "stop"}\n')
    assert c.reply()["ok"] is False
    c.send(b'{"id": 1, "verb": "dance"}\n')
    assert c.reply() == {"id": 1, "ok": False, "error": "unknown verb 'dance'"}
    c.send(b'{"verb": "start", "names": "a"}\n')
    assert c.reply()["ok"] is False
    c.send(b'\xff\xfe\x00garbage\n')
    assert c.reply()["ok"] is False
    # The same connection goes on; two requests in one write are both answered in order.
    c.send(b'\n{"id": "x", "verb": "status", "names": ["a"]}\n{"id": 2, "verb": "status"}\n')
    r1, r2 = c.reply(), c.reply()
    assert r1["id"] == "x" and r1["ok"] and [s["name"] for s in r1["services"]] == ["a"]
    assert r2["id"] == 2 and len(r2["services"]) == 2
    c.close()

    # Oversized: an error, then the connection is closed.
    c = Raw(sup.control)
    c.send(b'{"verb": "status", "pad": "' + b"x" * 70000)
    r = c.reply()
    assert r["ok"] is False and "too long" in r["error"]
    assert c.reply() is None
    c.close()

    # Truncated: the peer ends its side in the middle of a line.
    c = Raw(sup.control)
    c.send(b'{"verb": "sta')
    c.s.shutdown(socket.SHUT_WR)
    r = c.reply()
    assert r["ok"] is False and "truncated" in r["error"]
    assert c.reply() is None
    c.close()

    # Gone before the reply: nothing to answer, nothing harmed.
    c = Raw(sup.control)
    c.send(b'{"verb": "status"}\n{"verb": "wait", "name": "a", "state": "stopped"}\n')
    c.close()

    assert sup.proc.poll() is None
    assert status(tend, sup)["a"]["state"] == "running"
    assert sup.stop() == 0


def test_a_client_that_does_not_read_is_dropped(supervise, helper, tend):
    sup = start_sup(supervise, two_services(helper))
    sup.wait_state("a", "running")
    c = Raw(sup.control)
    c.s.setblocking(False)
    req = b'{"verb": "status"}\n' * 512
    deadline = time.monotonic() + TIMEOUT
    dropped = False
    while time.monotonic() < deadline and not dropped:
        try:
            c.s.send(req)
        except BlockingIOError:
            # Our side is full too: the supervisor stopped reading us, or it is about to
            # drop us. Wait for its word rather than sleep.
            m = sup.wait_line(r"^tend: control: uid 0 \(pid \d+\) does not read its replies; dropped$")
            dropped = bool(m)
        except (BrokenPipeError, ConnectionResetError):
            dropped = True
    assert dropped
    c.close()
    assert status(tend, sup)["a"]["state"] == "running"
    assert sup.stop() == 0


def _waiting(c, name, state):
    """Put Raw client c in a wait for NAME to be STATE, and know it is registered: the wait
    follows, in the same write, a request answered at once (one read, handled in order)."""
    c.send(b'{"verb":"status","names":["a"]}\n' +
           json.dumps({"verb": "wait", "name": name, "state": state}).encode() + b"\n")
    assert c.reply()["ok"] is True


def test_too_many_connections(supervise, helper, tend):
    sup = start_sup(supervise, two_services(helper))
    sup.wait_state("a", "running")
    conns = []
    try:
        for _ in range(64):
            c = Raw(sup.control)
            conns.append(c)
            c.send(b'{"verb": "status", "names": ["a"]}\n')
            assert c.reply()["ok"]  # accepted and counted
        # A full table of idle connections: the newcomer takes the place of the oldest.
        r = ctl(tend, sup, "status", check=0)
        r = conns[0].reply()
        assert r["ok"] is False and "closed to make room for a new connection" in r["error"]
        assert conns[0].reply() is None
        sup.wait_line(r"^tend: control: 64 connections; closing the one of uid 0 \(pid \d+\) "
                      r"for a new one$")
        for c in conns:
            c.close()
        # 64 waits of peers with every right: nobody's place to take.
        conns = []
        for _ in range(64):
            c = Raw(sup.control)
            conns.append(c)
            _waiting(c, "b", "stopped")
        r = ctl(tend, sup, "status", check=1)
        assert "too many control connections" in r.stderr
        conns[5].close()
        ctl(tend, sup, "stop", "b", check=0)
        for c in conns[:5] + conns[6:]:
            assert c.reply()["service"]["state"] == "stopped"
    finally:
        for c in conns:
            c.close()
    assert sup.stop() == 0


def test_silent_connections_are_closed(supervise, helper, tend):
    # --control-idle-timeout: no complete request within the bound, an error line and EOF;
    # counted from the last request too. A wait and a follow are exempt: they outlive a
    # silent connection opened after them, and still get their replies.
    sup = start_sup(supervise, two_services(helper), args=("--control-idle-timeout", "300ms"))
    sup.wait_state("b", "running")
    waiter = Raw(sup.control)
    _waiting(waiter, "b", "stopped")
    follower = Raw(sup.control)
    follower.send(b'{"verb":"logs","name":"a","lines":0,"follow":true}\n')
    assert follower.reply()["following"] is True
    silent = Raw(sup.control)
    r = silent.reply()  # the event: the supervisor's idle timer, nothing here sleeps
    assert r["ok"] is False
    assert r["error"] == "no request within 0.3s: closing the connection (--control-idle-timeout)"
    assert silent.reply() is None
    # A byte now and then is no request.
    dribble = Raw(sup.control)
    dribble.send(b'{"verb"')
    assert "no request within" in dribble.reply()["error"]
    assert dribble.reply() is None
    # After a request, the bound counts again.
    once = Raw(sup.control)
    once.send(b'{"verb":"status"}\n')
    assert once.reply()["ok"] is True
    assert "no request within" in once.reply()["error"]
    assert once.reply() is None
    # The waiter and the follower were silent longer than that and are still served.
    # (Had the follower been closed, its error line and EOF would be there by now: it
    # became silent before `once` did.)
    follower.s.setblocking(False)
    with pytest.raises(BlockingIOError):
        follower.s.recv(1)
    ctl(tend, sup, "stop", "b", check=0)
    assert waiter.reply()["service"]["state"] == "stopped"
    for c in (waiter, follower, silent, dribble, once):
        c.close()
    assert sup.stop() == 0


def test_readers_cannot_lock_root_out(supervise, helper, tend, open_dir):
    # 64 waits of a peer who may only read (a member of --control-group) fill the table: a
    # connection of root takes the place of the oldest of them.
    require_root()
    sock = open_dir / "control"
    sup = start_sup(supervise, two_services(helper),
                    args=("--control", str(sock), "--control-group", "100"))
    sup.control = sock
    sup.wait_state("b", "running")
    readers = [Raw.as_user(sock, 65534, 100) for _ in range(64)]
    try:
        for c in readers:
            _waiting(c, "b", "stopped")
        ctl(tend, sup, "status", check=0)
        r = readers[0].reply()
        assert r["ok"] is False and "closed to make room" in r["error"]
        assert readers[0].reply() is None
        sup.wait_line(r"^tend: control: 64 connections; closing the one of uid 65534 ")
        # The table is full again (root's ctl has left): a reader does not take a reader's
        # place.
        readers.append(Raw.as_user(sock, 65534, 100))
        _waiting(readers[-1], "b", "stopped")
        late = Raw.as_user(sock, 65534, 100)
        r = late.reply()
        assert r == {"ok": False, "error": "too many control connections"}
        late.close()
    finally:
        for c in readers:
            c.close()
    assert sup.stop() == 0


# ---- who may ask -------------------------------------------------------------------------------

@pytest.fixture
def open_dir():
    """A directory anybody may traverse (the test's own tmp is 0700)."""
    d = tempfile.mkdtemp(prefix="tend-ctl-", dir="/tmp")
    os.chmod(d, 0o711)
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


def nobody(*extra):
    if not shutil.which("setpriv"):
        pytest.skip("setpriv(1) is missing")
    return ["setpriv", "--reuid=65534", "--regid=65534", *extra]


def test_unauthorised_uid_is_refused(supervise, helper, tend, open_dir):
    require_root()
    sock = open_dir / "control"
    sup = start_sup(supervise, two_services(helper), args=("--control", str(sock)))
    sup.control = sock
    sup.wait_state("a", "running")
    # The file's mode stops it first ...
    r = ctl(tend, sup, "status", prefix=nobody("--clear-groups"), check=125)
    assert "Permission denied" in r.stderr
    # ... and SO_PEERCRED even when the file lets it through.
    os.chmod(sock, 0o666)
    r = ctl(tend, sup, "status", prefix=nobody("--clear-groups"), check=1)
    assert "permission denied: uid 65534 may not use this supervisor" in r.stderr
    r = ctl(tend, sup, "stop", "a", prefix=nobody("--clear-groups"), check=1)
    sup.wait_line(r"^tend: control: uid 65534 \(pid \d+\) refused$")
    assert status(tend, sup, "a")["a"]["state"] == "running"
    assert sup.stop() == 0


def test_control_group_may_read_status_only(supervise, helper, tend, open_dir):
    require_root()
    sock = open_dir / "control"
    sup = start_sup(supervise, two_services(helper),
                    args=("--control", str(sock), "--control-group", "100"))
    sup.control = sock
    sup.wait_state("a", "running")
    st = os.stat(sock)
    assert oct(st.st_mode & 0o777) == "0o660" and st.st_gid == 100
    member = nobody("--groups=100")  # a supplementary group: SO_PEERGROUPS
    r = ctl(tend, sup, "status", prefix=member, check=0)
    assert "running" in r.stdout
    ctl(tend, sup, "wait", "a", "running", prefix=member, check=0)
    for args in (["stop", "a"], ["restart", "a"], ["signal", "a", "KILL"], ["shutdown"],
                 ["reload"], ["logs", "a"]):
        r = ctl(tend, sup, *args, prefix=member, check=1)
        assert "permission denied: uid 65534 may only read status" in r.stderr, args
    # A primary group works as well; no group at all does not.
    ctl(tend, sup, "status", prefix=["setpriv", "--reuid=65534", "--regid=100",
                                      "--clear-groups"], check=0)
    r = ctl(tend, sup, "status", prefix=nobody("--clear-groups"), check=125)
    assert status(tend, sup, "a")["a"]["state"] == "running"
    assert sup.stop() == 0


def test_reloading_is_a_state(supervise, helper, tend):
    # sd_notify RELOADING=1 (systemd's Type=notify-reload) puts a running service in state
    # reloading, shown by status and waitable; READY=1 brings it back to running. A stop while
    # reloading is a stop. The service's shell sends both from its traps (HUP: reloading,
    # USR1: ready again).
    sup = start_sup(supervise, f"""\
[service r]
command = trap '{helper} notify-send RELOADING=1 STATUS=reloading' HUP; \\
    trap '{helper} notify-send READY=1 STATUS=serving' USR1; \\
    {helper} notify-send READY=1 STATUS=serving; \\
    while :; do {helper} sleep-forever & wait $!; done
shell = yes
ready = notify
""")
    sup.wait_state("r", "running")
    waiter = subprocess.Popen([str(tend), "ctl", "--control", str(sup.control), "wait",
                               "--timeout", f"{TIMEOUT}s", "r", "reloading"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=child_env(), stdin=subprocess.DEVNULL)
    try:
        ctl(tend, sup, "signal", "r", "HUP", check=0)
        assert sup.wait_state("r", "reloading") == "reloading: notify (RELOADING=1)"
        out, err = waiter.communicate(timeout=TIMEOUT)
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.wait()
    assert waiter.returncode == 0, err
    assert out == "r is reloading\n"
    s = status(tend, sup, "r")["r"]
    assert s["state"] == "reloading" and s["reloading"] is True and s["ready"] is True
    r = ctl(tend, sup, "status", check=0)
    assert " reloading " in r.stdout.splitlines()[1]
    ctl(tend, sup, "wait", "r", "reloading", check=0)  # already in it: at once
    ctl(tend, sup, "signal", "r", "USR1", check=0)
    assert sup.wait_state("r", "running") == "reloaded: notify (READY=1)"
    s = status(tend, sup, "r")["r"]
    assert s["state"] == "running" and s["reloading"] is False
    # Stopped while reloading: stopped as from running.
    ctl(tend, sup, "signal", "r", "HUP", check=0)
    sup.wait_state("r", "reloading")
    ctl(tend, sup, "stop", "r", check=0)
    assert sup.wait_state("r", "stopping").startswith("tend ctl stop")
    sup.wait_state("r", "stopped")
    assert [t[1:3] for t in sup.transitions("r")] == [
        ("stopped", "starting"), ("starting", "running"), ("running", "reloading"),
        ("reloading", "running"), ("running", "reloading"), ("reloading", "stopping"),
        ("stopping", "stopped")]
    assert sup.stop() == 0


def test_status_of_thousands_of_services(supervise, tend, tmp):
    # A status reply of over 1.5 MiB (3,000 services with long names and long reasons) comes
    # whole: a reply may be far above the 1 MiB of unsent replies a connection may pile up.
    # Cheap services: no process (the command does not exist: failed at once), no pipe
    # (log = none), no cgroup.
    n = 3000
    missing = "/nonexistent/" + "x" * 120
    text = "".join(f"""
[service {'s%05d' % i}{'-' * 50}]
command = {missing}
restart = never
log = none
""" for i in range(n))
    sup = start_sup(supervise, text, args=("--no-cgroup",))
    failed = 0
    deadline = time.monotonic() + 60
    while failed < n:
        left = deadline - time.monotonic()
        assert left > 0, f"{failed} of {n} failed"
        sup._pump(left)
        failed = sum(1 for line in sup.err if " -> failed (cannot exec" in line)
    r = ctl(tend, sup, "--json", "status", check=0, timeout=60)
    assert len(r.stdout) > 3 * 1024 * 1024 // 2
    (reply,) = [json.loads(line) for line in r.stdout.splitlines()]
    assert reply["ok"] is True
    names = [s["name"] for s in reply["services"]]
    assert names == sorted(f"s{i:05d}{'-' * 50}" for i in range(n))
    assert all(s["state"] == "failed" and missing in s["reason"] for s in reply["services"])
    # The table too, and the connection's big buffer does not stop the next request.
    r = ctl(tend, sup, "status", check=0, timeout=60)
    assert len(r.stdout.splitlines()) == n + 1
    c = Raw(sup.control)
    for _ in range(2):
        c.send(b'{"verb":"status"}\n')
        assert len(c.reply()["services"]) == n
    assert sup.stop(timeout=60) == 0


def test_control_at_the_fd_limit(supervise, helper, tend):
    # The supervisor runs out of file descriptors with control connections: the one it cannot
    # take is told so (a reserve fd lets it answer rather than spin on a readable socket),
    # and once some close, requests work again.
    from test_supervise import _nofile
    sup = supervise(two_services(helper), preexec_fn=_nofile(60))
    sup.control = sup.runtime / "control"
    sup.wait_state("a", "running")
    sup.wait_state("b", "running")
    conns = []
    try:
        for _ in range(64):
            c = Raw(sup.control)
            conns.append(c)
            try:
                c.send(b'{"verb":"status","names":["a"]}\n')
            except (BrokenPipeError, ConnectionResetError):
                # The connection it cannot keep is answered at once, without waiting for a
                # request, and closed: that may come before our send. The answer is still
                # there to read.
                pass
            r = c.reply()
            assert r is not None, "a connection was closed without an answer"
            if r["ok"] is False:
                assert r == {"ok": False, "error": "the supervisor is out of file descriptors"}
                assert c.reply() is None
                break
            assert r["ok"] is True
        else:
            pytest.fail("never ran out of file descriptors")
        assert len(conns) > 5
        for c in conns[:5]:
            c.close()
        assert status(tend, sup, "a")["a"]["state"] == "running"
    finally:
        for c in conns:
            c.close()
    assert sup.stop() == 0
