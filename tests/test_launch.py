"""Process-level tests of `tend launch` (doc/launch.md, man/tend-launch.1, issue 5).

The hosts are real and made by the tests: network namespaces on a bridge, one per host, each
with its own address (tests/netns_hosts.py). Two agents reach them: `ip netns exec %h` (fast,
most tests), and the default ssh template through an sshd in each namespace (the tests named
*_ssh). Misbehaving agents come from tests/launch_agent_wrap.py (never answers, never calls
back, forges its token); misbehaving callbacks are made by the test itself speaking the
frame protocol with the token it captured from a job line (doc/launch.md, "The callback").

Synchronisation is by events only. A remote command that must be running first prints
"ready <pid>" (its pid in our pid namespace: namespaces here share it), which arrives on the
launcher's stdout as "HOST: ready PID"; commands wait on a gate, a FIFO per host they open
read-write before they report ready, which the test opens with a write. Processes are waited
for through pidfds with deadlines. Every test is bounded in time (TIMEOUT, deadlines derived
from the heartbeat and ladder given to the launcher), and after every test nothing of ours may
remain in any host's namespace: the `lab` fixture's tear-down checks it (Site.close), kills
what it finds and fails the test.

Durations are short on purpose (ladder TERM/300ms,KILL; heartbeat 1s in the tests of the
lifeline, 2s elsewhere) so the whole file runs in about a minute or less.
"""

import base64
import hashlib
import hmac
import json
import os
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import REPO, cgroup2_writable, child_env
from netns_hosts import IP, Site, describe, wait_gone

TIMEOUT = 30           # bound of every launch and every wait for an event
# --heartbeat of the lifeline tests, seconds (see common()). On this 2-core machine, shared
# with other sessions' builds, tests and benchmarks (load average 10-60, a benchmark at raised
# priority), 200ms and then 500ms lost hosts that were fine: 3 missed = 3 s leaves room.
HEARTBEAT = 1.0
LADDER = "TERM/300ms,KILL"
LADDER_SECONDS = 0.3
# How long after losing its launcher a remote command may still live: 3 missed heartbeats,
# the ladder, and slack for a loaded 2-core machine.
LIFELINE_BOUND = 3 * HEARTBEAT + LADDER_SECONDS + 2.5
WRAP = REPO / "tests" / "launch_agent_wrap.py"
PY = "/usr/bin/python3"

HOST_KEYS = {"host", "index", "started", "state", "exit_code", "signal", "reason", "message",
             "diagnostic", "wall_seconds"}
STATES = {"exited", "killed", "timed-out", "failed", "refused", "cancelled", "lost"}

# Frames (doc/launch.md, "Frames").
HDR = struct.Struct(">BBHII")
HELLO, CHALLENGE, PROOF, START, GO, ABORT, REFUSED, STARTED, OUT, EXIT = range(1, 11)
HEARTBEAT_FRAME, DONE = 14, 16


# ---- the launcher --------------------------------------------------------------------------------

class Launch:
    """A running `tend launch`: its output read by two threads into lines, as they come."""

    def __init__(self, argv, env, json_path, stall=None):
        self.argv = argv
        self.stall = stall  # (bytes, seconds): stop reading stdout once, after that much
        self.json_path = json_path
        self.lines = {1: [], 2: []}
        self.cond = threading.Condition()
        self.eof = {1: False, 2: False}
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env, start_new_session=True)
        self.threads = [threading.Thread(target=self._read, args=(s, f), daemon=True)
                        for s, f in ((1, self.proc.stdout), (2, self.proc.stderr))]
        for t in self.threads:
            t.start()
        self.rc = None
        self.elapsed = None

    def _read(self, stream, f):
        partial = []  # pieces of the line not ended yet (a long line must not cost n^2)
        total = 0
        while True:
            data = f.read1(65536)
            if not data:
                break
            total += len(data)
            if stream == 1 and self.stall and total >= self.stall[0]:
                # The stimulus, not a synchronisation: a terminal that stops reading.
                time.sleep(self.stall[1])
                self.stall = None
            *done, rest = data.split(b"\n")
            if done:
                done[0] = b"".join(partial) + done[0]
                partial = []
                with self.cond:
                    self.lines[stream].extend(l.decode(errors="replace") for l in done)
                    self.cond.notify_all()
            if rest:
                partial.append(rest)
        with self.cond:
            if partial:
                self.lines[stream].append(b"".join(partial).decode(errors="replace")
                                          + "<no newline>")
            self.eof[stream] = True
            self.cond.notify_all()

    def text(self, stream=None):
        with self.cond:
            if stream:
                return "\n".join(self.lines[stream])
            return ("--- stdout:\n" + "\n".join(self.lines[1]) + "\n--- stderr:\n"
                    + "\n".join(self.lines[2]))

    def wait_line(self, pattern, stream=1, timeout=TIMEOUT, count=1):
        """Wait until `count` lines of the stream match pattern; returns the matches."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                found = [m for m in map(rx.search, self.lines[stream]) if m]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0 or self.eof[stream]:
                    pytest.fail(f"{len(found)} of {count} lines matching {pattern!r} on "
                                f"{'stdout' if stream == 1 else 'stderr'} after "
                                f"{time.monotonic() - self.t0:.1f}s (exit {self.proc.poll()})\n"
                                + self.text(), pytrace=False)
                self.cond.wait(left)

    def ready_pids(self, hosts, timeout=TIMEOUT):
        """{host name: pid} from each host's "HOST: ready PID" line."""
        names = [h.name for h in hosts]
        alt = "|".join(map(re.escape, names))
        found = self.wait_line(rf"^({alt}): ready (\d+)$", count=len(names), timeout=timeout)
        pids = {m.group(1): int(m.group(2)) for m in found}
        assert sorted(pids) == sorted(names), self.text()
        return pids

    def finish(self, timeout=TIMEOUT):
        """Wait for the exit and the end of both streams; returns the exit code."""
        try:
            self.rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"tend launch still running after {timeout}s, killed\n" + self.text(),
                        pytrace=False)
        self.elapsed = time.monotonic() - self.t0
        for t in self.threads:
            t.join(10)
        return self.rc

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for t in self.threads:
            t.join(10)

    def result(self):
        assert self.json_path is not None
        try:
            text = Path(self.json_path).read_text()
        except OSError as e:
            pytest.fail(f"no --json result ({e})\n" + self.text(), pytrace=False)
        obj = json.loads(text)
        assert set(obj) == {"hosts", "refused_callbacks"}, f"result keys: {sorted(obj)}"
        for h in obj["hosts"]:
            assert set(h) == HOST_KEYS, f"host keys differ from doc/launch.md: {sorted(h)}"
            assert h["state"] in STATES, h
        return obj

    def hosts(self):
        """{host name: its entry in the JSON result}"""
        return {h["host"]: h for h in self.result()["hosts"]}


class Lab:
    """Sites, launches and gates of one test; everything undone at the end."""

    def __init__(self, tend, helper, tmp):
        self.tend, self.helper, self.tmp = str(tend), str(helper), Path(tmp)
        self.sites, self.launches, self.fifos = [], [], []
        self.gates = self.tmp / "gates"
        self.gates.mkdir()
        self.ctl = self.tmp / "ctl"
        self.ctl.mkdir()
        self.n_json = 0

    def site(self, n, **kw):
        s = Site(self.tmp, n, **kw)
        self.sites.append(s)
        for h in s.hosts:
            os.mkfifo(self.gates / f"gate-{h.name}")
        return s

    def netns_agent(self, plan=None):
        agent = f"{IP} netns exec %h"
        if plan:
            spec = ",".join(f"{h.name}={mode}" for h, mode in plan.items())
            agent = f"{PY} {WRAP} {self.ctl} {spec} %h " + agent
        return ["--agent", agent]

    def launch(self, site, args, command, *, json=True, env=None, stall=None):
        json_path = None
        if json:
            self.n_json += 1
            json_path = self.tmp / f"result-{self.n_json}.json"
        argv = [self.tend, "launch", *map(str, args)]
        if json_path:
            argv += ["--json", str(json_path)]
        argv += ["--", *map(str, command)]
        if site is not None:
            argv = site.wrap(argv)
        l = Launch(argv, env or child_env(), json_path, stall)
        self.launches.append(l)
        return l

    # Commands -------------------------------------------------------------------------------

    def gate_command(self, after="echo bye"):
        """Prints "ready PID" once it holds its gate open, waits for the gate, then `after`."""
        return ["/bin/sh", "-c",
                f'exec 3<>"{self.gates}/gate-$({IP} netns identify)"; echo ready $$; '
                f"read x <&3; {after}"]

    def open_gate(self, host):
        fd = os.open(self.gates / f"gate-{host.name}", os.O_WRONLY | os.O_NONBLOCK)
        os.write(fd, b"go\n")
        os.close(fd)

    def marker_command(self, then=None):
        """Leaves a file ran-HOST in the gates directory, then prints the host's name."""
        return ["/bin/sh", "-c", f'h=$({IP} netns identify); : > "{self.gates}/ran-$h"; '
                                  f'echo "$h"{"; " + then if then else ""}']

    def ran(self, host):
        return (self.gates / f"ran-{host.name}").exists()

    # Wrapper reports -------------------------------------------------------------------------

    def expect_pids(self, host):
        """The FIFO on which the wrapper reports host's agent pids (opened before launch)."""
        path = self.ctl / f"{host.name}.pids"
        os.mkfifo(path)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        self.fifos.append(fd)
        return fd

    def read_pids(self, fd, timeout=TIMEOUT):
        p = select.poll()
        p.register(fd, select.POLLIN)
        if not p.poll(timeout * 1000):
            pytest.fail("the agent wrapper never reported its pids", pytrace=False)
        data = os.read(fd, 4096)
        assert data.endswith(b"\n"), data
        return [int(x) for x in data.split()]

    def wait_writers_gone(self, fd, timeout):
        """True once every process holding the FIFO's write end has died (EOF)."""
        deadline = time.monotonic() + timeout
        p = select.poll()
        p.register(fd, select.POLLIN)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if p.poll(left * 1000):
                try:
                    if os.read(fd, 4096) == b"":
                        return True
                except BlockingIOError:
                    pass

    def job_line(self, host):
        return json.loads((self.ctl / f"{host.name}.job").read_text())

    def close(self):
        for l in self.launches:
            l.kill()
            for f in (l.proc.stdout, l.proc.stderr):
                f.close()
        for fd in self.fifos:
            os.close(fd)
        errors = []
        for s in self.sites:
            try:
                s.close()
            except AssertionError as e:
                errors.append(str(e))
        return errors


@pytest.fixture
def lab(tend, helper, tmp):
    lab = Lab(tend, helper, tmp)
    try:
        yield lab
    finally:
        errors = lab.close()
    if errors:
        pytest.fail("after the test: " + "\n".join(errors), pytrace=False)


def common(hb=2.0, ladder=LADDER):
    """Options of every launch: the short ladder and a heartbeat. The tests of the lifeline
    use HEARTBEAT; the others 2s: short enough that an event loop stalled for seconds loses
    its host and fails the test (an agent reading all of /proc did), long enough that a
    starved machine (see HEARTBEAT) does not."""
    return ["--stop", ladder, "--heartbeat", f"{int(hb * 1000)}ms"]


def names_arg(hosts):
    return ",".join(h.name for h in hosts)


def assert_exited(result, hosts, code=0):
    for h in hosts:
        e = result[h.name]
        assert e["started"] is True and e["state"] == "exited" and e["exit_code"] == code, e


def pids_gone(pids, timeout):
    alive = wait_gone(pids, timeout)
    assert not alive, "still running: " + "; ".join(describe(p) for p in alive)


def agent_pid(site, host):
    """The agent of host: the process in its namespace running `launch-agent` (not the
    guard)."""
    found = []
    for pid in site.pids(host):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"launch-agent" in cmd and b"--guard" not in cmd:
            found.append(pid)
    assert len(found) == 1, f"agents of {host.name}: " + "; ".join(map(describe, found))
    return found[0]


def guard_argvs(site, host):
    """[(pid, argv)] of the guards in host's namespace."""
    found = []
    for pid in site.pids(host):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"launch-agent" in cmd and b"--guard" in cmd:
            found.append((pid, cmd))
    return found


def ppid(pid):
    text = Path(f"/proc/{pid}/stat").read_text()
    return int(text[text.rindex(")") + 2:].split()[1])


# ---- the frame protocol, for callbacks made by the test ------------------------------------------

def frame(ftype, host, payload=b"", stream=0):
    return HDR.pack(ftype, stream, 0, host, len(payload)) + payload


def recv_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def recv_frame(sock):
    """(type, host, payload), or None at EOF (or a reset: the launcher closed on us)."""
    try:
        head = recv_exact(sock, HDR.size)
        if head is None:
            return None
        ftype, _, _, host, length = HDR.unpack(head)
        payload = recv_exact(sock, length) if length else b""
    except (ConnectionResetError, socket.timeout) as e:
        if isinstance(e, socket.timeout):
            raise
        return None
    if payload is None:
        return None
    return ftype, host, payload


def recv_until_closed(sock):
    """Frames until the launcher closes the connection (a socket timeout fails)."""
    frames = []
    while True:
        f = recv_frame(sock)
        if f is None:
            return frames
        frames.append(f)


def mac(token, side, index, nonce_a, nonce_l):
    return hmac.new(token, b"tend-launch " + side + struct.pack(">I", index) + nonce_a + nonce_l,
                    hashlib.sha256).digest()


def callback_address(job):
    """An address of the job line's callback list that this (root) namespace reaches."""
    for entry in job["callback"]:
        m = re.fullmatch(r"\[(.*)\]:(\d+)|([^:]*):(\d+)", entry)
        assert m, f"callback entry {entry!r}"
        if m.group(3):
            return socket.AF_INET, (m.group(3), int(m.group(4)))
    m = re.fullmatch(r"\[(.*)\]:(\d+)", job["callback"][0])
    return socket.AF_INET6, (m.group(1), int(m.group(2)))


def connect(job, timeout=10):
    family, addr = callback_address(job)
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(addr)
    return s


def hello(sock, index, token):
    """HELLO, then the launcher's CHALLENGE, whose MAC is checked with the true token.
    Returns (nonce_a, nonce_l), or None if the launcher closed instead."""
    nonce_a = os.urandom(32)
    sock.sendall(frame(HELLO, index, struct.pack(">I", 1) + nonce_a))
    f = recv_frame(sock)
    if f is None:
        return None
    ftype, host, payload = f
    assert (ftype, host, len(payload)) == (CHALLENGE, index, 64), f
    nonce_l, their_mac = payload[:32], payload[32:]
    if token is not None:
        assert hmac.compare_digest(their_mac, mac(token, b"L", index, nonce_a, nonce_l)), \
            "the launcher's CHALLENGE MAC is not HMAC(token, 'tend-launch L' | i | na | nl)"
    return nonce_a, nonce_l


def authenticated(job, index, token):
    """A connection to the launcher that has passed the handshake for host `index`."""
    s = connect(job)
    got = hello(s, index, token)
    assert got is not None, "the launcher closed on a HELLO with the right token"
    na, nl = got
    s.sendall(frame(PROOF, index, mac(token, b"A", index, na, nl)))
    return s


def expect_closed(sock, after):
    """The launcher closes the connection (frames before that are skipped)."""
    try:
        until_frame(sock, -1)
    except socket.timeout:
        pytest.fail(f"the launcher did not close the connection within {sock.gettimeout()}s "
                    f"after {after}", pytrace=False)


def until_frame(sock, ftype):
    """Frames until one of type ftype (heartbeats and others are skipped); None at EOF."""
    while True:
        f = recv_frame(sock)
        if f is None or f[0] == ftype:
            return f


# ---- all hosts start -----------------------------------------------------------------------------

def test_all_hosts_start_netns(lab, tmp):
    site = lab.site(4)
    h = site.hosts
    hostfile = Path(tmp) / "hosts"
    hostfile.write_text(f"# two of them\n{h[2].name}\n\n  {h[3].name}  # last\n")
    l = lab.launch(site, [*lab.netns_agent(), *common(), "-H", names_arg(h[:2]),
                          "--hostfile", hostfile], [IP, "netns", "identify"])
    assert l.finish() == 0, l.text()
    # Each command ran in its own host's namespace, its output came home prefixed.
    assert sorted(l.lines[1]) == sorted(f"{x.name}: {x.name}" for x in h), l.text()
    result = l.hosts()
    assert [result[x.name]["index"] for x in h] == [0, 1, 2, 3]
    assert_exited(result, h)
    assert l.result()["refused_callbacks"] == 0
    # The result table on stderr names every host.
    for x in h:
        assert x.name in l.text(2), l.text()


@pytest.mark.parametrize("user", [None, "root"])
def test_all_hosts_start_ssh(lab, user):
    """The default agent template, for real: ssh in batch mode to an sshd in each
    namespace (the client's configuration maps each host name to its address)."""
    site = lab.site(3, sshd=True)
    args = [*common(), "-H", names_arg(site.hosts)]
    if user:
        args += ["-l", user]
    l = lab.launch(site, args, [IP, "netns", "identify"])
    assert l.finish() == 0, l.text() + "\n" + site.sshd_logs()
    assert sorted(l.lines[1]) == sorted(f"{x.name}: {x.name}" for x in site.hosts), l.text()
    assert_exited(l.hosts(), site.hosts)


def test_login_chatter_goes_to_the_diagnostic_ssh(lab):
    """What a login prints before the agent's banner (here sshd's ~/.ssh/rc) is the host's
    diagnostic, never the command's output."""
    site = lab.site(2, sshd=True)
    (site.home / ".ssh" / "rc").write_text(
        f"echo login chatter\necho login complaint >&2\n: > {lab.tmp}/rc-ran-$$\n")
    l = lab.launch(site, [*common(), "-H", names_arg(site.hosts)], [IP, "netns", "identify"])
    assert l.finish() == 0, l.text()
    assert sorted(l.lines[1]) == sorted(f"{h.name}: {h.name}" for h in site.hosts), l.text()
    assert len(list(lab.tmp.glob("rc-ran-*"))) == 2, "sshd did not run ~/.ssh/rc"
    for h in site.hosts:
        e = l.hosts()[h.name]
        assert "login chatter" in (e["diagnostic"] or ""), e
    assert_exited(l.hosts(), site.hosts)


def test_fanout_one_still_starts_every_host(lab):
    site = lab.site(4)
    l = lab.launch(site, [*lab.netns_agent(), *common(), "--fanout", "1", "-H",
                          names_arg(site.hosts)], [IP, "netns", "identify"])
    assert l.finish() == 0, l.text()
    assert_exited(l.hosts(), site.hosts)


def test_agent_template_expansion(lab):
    """%h, %n, %u and %% in the agent template (-l sets %u), and the two words appended: the
    remote tend's path and launch-agent. The environment set by the template reaches the
    command through ip netns exec and the agent."""
    site = lab.site(2)
    agent = f"/usr/bin/env TT_N=%n TT_U=%u TT_P=100%% TT_H=%h {IP} netns exec %h"
    l = lab.launch(site, ["--agent", agent, *common(), "-l", "someone", "-H",
                          names_arg(site.hosts)],
                   ["/bin/sh", "-c", 'echo "$TT_H $TT_N $TT_U $TT_P"'])
    assert l.finish() == 0, l.text()
    assert sorted(l.lines[1]) == sorted(f"{h.name}: {h.name} {h.index} someone 100%"
                                        for h in site.hosts), l.text()


def test_remote_tend_path(lab, tend, tmp):
    """--remote-tend: the agent on the host is that program (here a copy of tend)."""
    site = lab.site(1)
    copy = Path(tmp) / "bin" / "tend-copy"
    copy.parent.mkdir()
    shutil.copy2(tend, copy)
    l = lab.launch(site, [*lab.netns_agent(), *common(), "--remote-tend", copy,
                          "-H", names_arg(site.hosts)],
                   ["/bin/sh", "-c", 'readlink "/proc/$PPID/exe"'])
    assert l.finish() == 0, l.text()
    assert l.lines[1] == [f"{site.names[0]}: {copy}"], l.text()


def test_command_leftovers_are_stopped_on_the_host(lab, helper):
    """The command leaves a daemon behind (double fork and setsid): the agent stops it
    before it reports the end, so nothing remains in the host's namespace."""
    site = lab.site(2)
    l = lab.launch(site, [*lab.netns_agent(), *common(), "-H", names_arg(site.hosts)],
                   ["/usr/bin/env", "HELPER_READY_FD=1", helper, "escape"])
    assert l.finish() == 0, l.text()
    escaped = [int(m.group(1)) for m in map(re.compile(r": ready (\d+)").search, l.lines[1]) if m]
    assert len(escaped) == 2, l.text()
    pids_gone(escaped, 2)
    assert_exited(l.hosts(), site.hosts)


def test_fanout_limits_agents_waiting_for_their_callback(lab):
    """--fanout 2, four agents that write their banner and never call back: the third agent
    is started only once one of the first two has been given up (start deadline)."""
    site = lab.site(4)
    fds = [lab.expect_pids(h) for h in site.hosts]
    l = lab.launch(site, [*lab.netns_agent({h: "capture" for h in site.hosts}), *common(),
                          "--fanout", "2", "--start-timeout", "300ms",
                          "-H", names_arg(site.hosts)], [IP, "netns", "identify"])
    lab.read_pids(fds[0])
    lab.read_pids(fds[1])
    lab.read_pids(fds[2])
    # By now (a Python start later) the agent whose slot was freed is dead; the others
    # live until their 300ms deadline, so a short look tells the two cases apart.
    dead = [lab.wait_writers_gone(fd, 0.1) for fd in fds[:2]]
    assert any(dead), "a third agent was started while two were waiting for their callback"
    lab.read_pids(fds[3])
    assert l.finish() == 2, l.text()
    for h in site.hosts:
        e = l.hosts()[h.name]
        assert (e["state"], e["reason"]) == ("failed", "start-timeout"), e


# ---- hosts that never start ----------------------------------------------------------------------

def test_unreachable_host_connect_timeout_ssh(lab):
    """Host 1's link is down before the launch: ssh's SYN goes nowhere. The connect deadline
    (1.5 s) ends it before ssh's own ConnectTimeout (2 s, rounded up); the others start."""
    site = lab.site(3, sshd=True)
    site.cut(1)
    l = lab.launch(site, [*common(), "--connect-timeout", "1500ms", "-H", names_arg(site.hosts)],
                   [IP, "netns", "identify"])
    assert l.finish() == 2, l.text()
    result = l.hosts()
    bad = result[site.hosts[1].name]
    assert bad["started"] is False and bad["state"] == "failed", bad
    assert bad["reason"] == "connect-timeout", bad
    assert_exited(result, [site.hosts[0], site.hosts[2]])
    assert sorted(l.lines[1]) == sorted(f"{x.name}: {x.name}"
                                        for x in (site.hosts[0], site.hosts[2])), l.text()
    assert "connect-timeout" in l.text(2), "the table shows why"
    assert l.elapsed < 1.5 + 8, l.elapsed


def test_silent_agent_connect_timeout_kills_its_group(lab):
    """An agent that never writes its banner: host failed (connect-timeout), and its whole
    process group is killed, the child it forked too."""
    site = lab.site(2)
    quiet = site.hosts[1]
    fd = lab.expect_pids(quiet)
    l = lab.launch(site, [*lab.netns_agent({quiet: "silent"}), *common(),
                          "--connect-timeout", "500ms", "-H", names_arg(site.hosts)],
                   [IP, "netns", "identify"])
    pids = lab.read_pids(fd)
    assert len(pids) == 2
    assert l.finish() == 2, l.text()
    result = l.hosts()
    assert result[quiet.name]["state"] == "failed", result[quiet.name]
    assert result[quiet.name]["reason"] == "connect-timeout", result[quiet.name]
    assert_exited(result, [site.hosts[0]])
    assert lab.wait_writers_gone(fd, 2), "the silent agent or its child outlived the launcher"
    pids_gone(pids, 1)


def test_missing_host_is_unreachable_with_diagnostic(lab):
    """The agent exits before its banner (ip netns exec: no such namespace, exit 255): failed,
    reason unreachable, with the agent's own message as the diagnostic; never mixed into the
    commands' output."""
    site = lab.site(2)
    ghost = f"tend-{site.id:03x}-nohost"
    l = lab.launch(site, [*lab.netns_agent(), *common(), "-H",
                          f"{names_arg(site.hosts)},{ghost}"], [IP, "netns", "identify"])
    assert l.finish() == 2, l.text()
    result = l.hosts()
    g = result[ghost]
    assert (g["started"], g["state"], g["reason"]) == (False, "failed", "unreachable"), g
    assert ghost in (g["diagnostic"] or ""), g  # ip: Cannot open network namespace "..."
    assert "255" in (g["message"] or ""), g      # the agent's exit status
    assert_exited(result, site.hosts)
    assert not any(line.startswith(ghost + ":") for line in l.lines[1]), l.text()


def test_ssh_refused_host_key_is_unreachable_with_ssh_message(lab):
    """ssh refuses host 1 (its key is not in known_hosts, BatchMode): the agent exits 255
    before the banner: failed, unreachable, ssh's own words in the diagnostic."""
    site = lab.site(2, sshd=True)
    known = site.home / ".ssh" / "known_hosts"
    known.write_text("".join(line + "\n" for line in known.read_text().splitlines()
                             if not line.startswith(site.hosts[1].addr + " ")))
    l = lab.launch(site, [*common(), "-H", names_arg(site.hosts)], [IP, "netns", "identify"])
    assert l.finish() == 2, l.text()
    e = l.hosts()[site.hosts[1].name]
    assert (e["started"], e["state"], e["reason"]) == (False, "failed", "unreachable"), e
    assert "Host key verification failed" in (e["diagnostic"] or ""), e
    assert_exited(l.hosts(), [site.hosts[0]])


def test_listen_and_callback_addresses(lab):
    """--listen on the bridge's address only and --callback naming it: the hosts call back
    there (-v says where it listens). Then --listen on loopback: no host can reach it."""
    site = lab.site(2)
    l = lab.launch(site, [*lab.netns_agent(), *common(), "-v", "--listen", site.gateway,
                          "--callback", site.gateway, "-H", names_arg(site.hosts)],
                   [IP, "netns", "identify"])
    assert l.finish() == 0, l.text()
    port = l.wait_line(rf"listening on {re.escape(site.gateway)}:(\d+)", stream=2)[0].group(1)
    for h in site.hosts:
        l.wait_line(rf"'{re.escape(h.name)}': called back from \S*{re.escape(h.addr)}\]?:\d+",
                    stream=2)
    assert int(port) > 0
    assert_exited(l.hosts(), site.hosts)

    l2 = lab.launch(site, [*lab.netns_agent(), *common(), "--listen", "127.0.0.1",
                           "--start-timeout", "2s", "-H", names_arg(site.hosts)],
                    [IP, "netns", "identify"])
    assert l2.finish() == 2, l2.text()
    for h in site.hosts:
        e = l2.hosts()[h.name]
        assert (e["started"], e["state"]) == (False, "failed"), e
        assert e["reason"] in ("agent-exited", "start-timeout"), e


@pytest.mark.parametrize("how", ["black-hole", "no-route"])
def test_host_that_cannot_call_back(lab, how):
    """Host 2's agent starts and writes its banner, but cannot reach the launcher.
    black-hole: its link is down, so its connects hang (no ARP answer): the start deadline
    ends it (failed, start-timeout). no-route: a namespace with loopback only, every connect
    fails at once: the agent gives up and says so (failed, agent-exited, with its message).
    Either way its command never ran and nothing is left running in its namespace."""
    site = lab.site(3, isolated={2} if how == "no-route" else ())
    cut_off = site.hosts[2]
    if how == "black-hole":
        site.cut(cut_off)
    l = lab.launch(site, [*lab.netns_agent(), *common(), "--start-timeout", "1s",
                          "-H", names_arg(site.hosts)], lab.marker_command())
    assert l.finish() == 2, l.text()
    result = l.hosts()
    e = result[cut_off.name]
    assert (e["started"], e["state"]) == (False, "failed"), e
    if how == "no-route":
        assert e["reason"] == "agent-exited", e
        assert "call back" in (e["diagnostic"] or ""), e
    else:
        # The agent knows the deadline too (from the job line, counted from its banner), but
        # its own runs a margin longer: the launcher's decides.
        assert e["reason"] == "start-timeout", e
    assert not lab.ran(cut_off)
    assert_exited(result, site.hosts[:2])
    assert all(lab.ran(h) for h in site.hosts[:2])
    assert site.leftovers(grace=2) == {}, "the agent was not stopped on its host"


def test_spawn_failed_on_the_remote_side(lab):
    site = lab.site(2)
    l = lab.launch(site, [*lab.netns_agent(), *common(), "-H", names_arg(site.hosts)],
                   ["/nonexistent/tend-test-command", "x"])
    assert l.finish() == 2, l.text()
    for h in site.hosts:
        e = l.hosts()[h.name]
        assert (e["started"], e["state"], e["reason"]) == (False, "failed", "spawn-failed"), e
        assert "No such file or directory" in (e["message"] or ""), e


def test_precheck_refusal_is_refused_not_failed(lab):
    site = lab.site(3)
    no = site.hosts[1]
    pre = (f'h=$({IP} netns identify); echo checked "$h"; '
           f'if [ "$h" = {no.name} ]; then echo "no room on $h" >&2; exit 3; fi')
    l = lab.launch(site, [*lab.netns_agent(), *common(), "--precheck", pre,
                          "-H", names_arg(site.hosts)], lab.marker_command())
    assert l.finish() == 2, l.text()
    result = l.hosts()
    e = result[no.name]
    assert (e["started"], e["state"]) == (False, "refused"), e
    # The precheck's exit code: in exit_code, or (exit_code being the command's) in the
    # message.
    assert e["exit_code"] == 3 or "code 3" in (e["message"] or ""), e
    # The precheck's output comes home with the refusal.
    assert f"no room on {no.name}" in json.dumps(e) + l.text(2), l.text()
    assert not lab.ran(no)
    assert_exited(result, [site.hosts[0], site.hosts[2]])
    assert sorted(l.lines[1]) == sorted(f"{h.name}: {h.name}"
                                        for h in (site.hosts[0], site.hosts[2])), l.text()


def test_precheck_output_is_bounded(lab):
    """A precheck that writes 200,000 bytes and fails: refused, its output kept up to the
    frame's bound (64 KiB), not more, and the launcher is fine."""
    site = lab.site(1)
    l = lab.launch(site, [*lab.netns_agent(), *common(), "-H", site.names[0], "--precheck",
                          "head -c 200000 /dev/zero | tr '\\0' y; exit 1"],
                   lab.marker_command())
    assert l.finish() == 2, l.text()[:2000]
    e = l.hosts()[site.names[0]]
    assert (e["started"], e["state"]) == (False, "refused"), {k: str(v)[:80] for k, v in e.items()}
    kept = (e["diagnostic"] or "").count("y")
    assert 1000 < kept <= 65536, kept
    assert not lab.ran(site.hosts[0])


# ---- callbacks that must not be trusted ----------------------------------------------------------

def test_forged_callbacks_are_refused(lab):
    """A callback that cannot prove its token is dropped and reported, and does not spoil
    the host it claims: wrong MAC, unknown host index, a second callback for a host that
    has called back already, a frame that is not HELLO. Then the right proof for the same
    host is still accepted (START is answered GO)."""
    site = lab.site(3)
    h0, h1, h2 = site.hosts
    fd = lab.expect_pids(h2)
    l = lab.launch(site, [*lab.netns_agent({h2: "capture"}), *common(), "--start-timeout", "10s",
                          "-H", names_arg(site.hosts)], lab.gate_command())
    lab.read_pids(fd)
    l.ready_pids([h0, h1])
    job = lab.job_line(h2)
    assert job["host"] == h2.name and job["index"] == 2, job
    token = base64.b64decode(job["token"])
    assert len(token) == 32
    # The token is on no process's command line and in no environment (issue 5).
    exposed = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            for what in ("cmdline", "environ"):
                try:
                    if job["token"].encode() in Path(f"/proc/{name}/{what}").read_bytes():
                        exposed.append(f"{what} of {describe(int(name))}")
                except OSError:
                    pass
    assert not exposed, exposed
    refused = r"^tend: launch: callback from \S+:\d+ refused: "
    # Each refusal must be prompt: 3s, well below the launcher's 10s handshake deadline,
    # which would close the connection too.

    # 1. Wrong MAC: the launcher's challenge is right, our proof is made with another token.
    with connect(job, timeout=3) as s:
        na, nl = hello(s, 2, token)
        wrong = bytes([token[0] ^ 1]) + token[1:]
        s.sendall(frame(PROOF, 2, mac(wrong, b"A", 2, na, nl)))
        assert recv_until_closed(s) == []
    l.wait_line(refused, stream=2, count=1)

    # 2. An index no host has.
    with connect(job, timeout=3) as s:
        if hello(s, 99, None) is not None:
            s.sendall(frame(PROOF, 99, os.urandom(32)))
        assert recv_until_closed(s) == []
    l.wait_line(refused, stream=2, count=2)

    # 3. Host 0 has called back already (its command is running).
    with connect(job, timeout=3) as s:
        if hello(s, 0, None) is not None:
            s.sendall(frame(PROOF, 0, os.urandom(32)))
        assert recv_until_closed(s) == []
    l.wait_line(refused, stream=2, count=3)

    # 4. Not a handshake at all: START first, with a payload above the 64-byte bound.
    with connect(job, timeout=3) as s:
        s.sendall(frame(START, 2, b"x" * 100))
        assert recv_until_closed(s) == []
    l.wait_line(refused, stream=2, count=4)

    # The true proof for host 2 still works: START is answered GO.
    with connect(job) as s:
        na, nl = hello(s, 2, token)
        s.sendall(frame(PROOF, 2, mac(token, b"A", 2, na, nl)))
        s.sendall(frame(START, 2))
        f = recv_frame(s)
        while f is not None and f[0] != GO:
            f = recv_frame(s)  # heartbeats may come first
        assert f is not None and f[:2] == (GO, 2), f
    # Closing after GO: host 2 is gone; the others finish normally.
    lab.open_gate(h0)
    lab.open_gate(h1)
    assert l.finish() == 2, l.text()
    obj = l.result()
    assert obj["refused_callbacks"] == 4, obj
    result = l.hosts()
    assert_exited(result, [h0, h1])
    assert result[h2.name]["state"] in ("lost", "failed"), result[h2.name]
    assert not [m for m in l.lines[1] if m.startswith(h2.name + ":")], l.text()


def test_agent_with_a_forged_token_never_runs_the_command(lab):
    """The job line reaches host 1's real agent with one bit of its token flipped: the
    handshake cannot succeed either way, the host never starts, its command never runs."""
    site = lab.site(2)
    bad = site.hosts[1]
    l = lab.launch(site, [*lab.netns_agent({bad: "forge"}), *common(), "--start-timeout", "3s",
                          "-H", names_arg(site.hosts)], lab.marker_command())
    assert l.finish() == 2, l.text()
    result = l.hosts()
    e = result[bad.name]
    assert (e["started"], e["state"]) == (False, "failed"), e
    assert not lab.ran(bad)
    assert_exited(result, [site.hosts[0]])


def test_late_callback_gets_abort(lab):
    """Host 1's agent writes its banner and keeps quiet past the start deadline; the launcher
    gives up on it (start-timeout) and kills it. A callback for host 1 after that, with the
    right token, is answered ABORT: a late starter is never told GO."""
    site = lab.site(2)
    h0, late = site.hosts
    fd = lab.expect_pids(late)
    l = lab.launch(site, [*lab.netns_agent({late: "capture"}), *common(),
                          "--start-timeout", "500ms", "-H", names_arg(site.hosts)],
                   lab.gate_command())
    lab.read_pids(fd)
    l.ready_pids([h0])
    job = lab.job_line(late)
    token = base64.b64decode(job["token"])
    assert lab.wait_writers_gone(fd, 5), "the launcher did not stop the agent at its deadline"
    with connect(job) as s:
        got = hello(s, 1, token)
        frames = []
        if got is not None:
            na, nl = got
            s.sendall(frame(PROOF, 1, mac(token, b"A", 1, na, nl)))
            frames = recv_until_closed(s)
        kinds = [f[0] for f in frames]
        assert ABORT in kinds and GO not in kinds, f"frames after a late proof: {frames}"
    lab.open_gate(h0)
    assert l.finish() == 2, l.text()
    e = l.hosts()[late.name]
    assert (e["started"], e["state"], e["reason"]) == (False, "failed", "start-timeout"), e
    assert_exited(l.hosts(), [h0])


def test_a_started_host_may_not_speak_for_another(lab):
    """The test plays host 2's agent (with the token its job line carried): after GO, its
    output is printed under its name; output it sends in the name of host 0 (which is not
    below it: no tree) is not printed as host 0's; an unknown frame type ends the connection
    at once (heartbeat 30s: nothing else would end it within the socket's 10s timeout)
    without harming the launcher or the other hosts."""
    site = lab.site(3)
    h0, h1, h2 = site.hosts
    fd = lab.expect_pids(h2)
    l = lab.launch(site, [*lab.netns_agent({h2: "capture"}), *common(hb=30),
                          "--start-timeout", "10s", "-H", names_arg(site.hosts)],
                   lab.gate_command())
    lab.read_pids(fd)
    l.ready_pids([h0, h1])
    job = lab.job_line(h2)
    token = base64.b64decode(job["token"])
    with authenticated(job, 2, token) as s:
        s.sendall(frame(START, 2))
        assert until_frame(s, GO) is not None, "no GO"
        s.sendall(frame(STARTED, 2, b'{"pid":1}'))
        s.sendall(frame(OUT, 2, b"mine\n", stream=1))
        l.wait_line(rf"^{re.escape(h2.name)}: mine$")
        s.sendall(frame(OUT, 0, b"forged for host 0\n", stream=1))
        s.sendall(frame(99, 2, b""))
        expect_closed(s, "a frame of unknown type 99")
    lab.open_gate(h0)
    lab.open_gate(h1)
    assert l.finish() == 2, l.text()
    assert not any("forged" in x for x in l.lines[1] + l.lines[2]), l.text()
    result = l.hosts()
    assert_exited(result, [h0, h1])
    assert result[h2.name]["state"] in ("lost", "failed"), result[h2.name]


def test_bad_exit_frame_is_reported_not_believed(lab):
    """An EXIT whose JSON is not JSON ends the connection at once (the heartbeat is 30s: the
    fake agent sends none, so only the bad frame can end it within the socket's 10s
    timeout); the host is not 'exited'."""
    site = lab.site(2)
    h0, h1 = site.hosts
    fd = lab.expect_pids(h1)
    l = lab.launch(site, [*lab.netns_agent({h1: "capture"}), *common(hb=30),
                          "--start-timeout", "10s", "-H", names_arg(site.hosts)],
                   lab.gate_command())
    lab.read_pids(fd)
    l.ready_pids([h0])
    job = lab.job_line(h1)
    token = base64.b64decode(job["token"])
    with authenticated(job, 1, token) as s:
        s.sendall(frame(START, 1))
        assert until_frame(s, GO) is not None, "no GO"
        s.sendall(frame(STARTED, 1, b'{"pid":1}'))
        s.sendall(frame(EXIT, 1, b'{"exit_code":0,'))
        expect_closed(s, "an EXIT frame whose payload is not JSON")
    lab.open_gate(h0)
    assert l.finish() == 2, l.text()
    result = l.hosts()
    assert result[h1.name]["state"] in ("lost", "failed"), result[h1.name]
    assert_exited(result, [h0])


# ---- the lifeline --------------------------------------------------------------------------------

@pytest.mark.parametrize("agent", ["netns", "ssh", "netns-tree"])
def test_launcher_killed_leaves_nothing_running(lab, helper, agent):
    """SIGKILL to tend launch mid-run: on every host the command (which ignores SIGTERM) is
    gone within the lifeline's bound, and every agent with it (in tree mode too: 5 hosts,
    width 2, so the lifeline is relayed down two levels)."""
    site = lab.site(5 if agent == "netns-tree" else 3, sshd=(agent == "ssh"))
    args = [*common(hb=HEARTBEAT), "-H", names_arg(site.hosts)]
    if agent.startswith("netns"):
        args = lab.netns_agent() + args
    if agent == "netns-tree":
        args += ["--tree", "2"]
    l = lab.launch(site, args, ["/usr/bin/env", "HELPER_READY_FD=1", helper, "ignore-term"])
    pids = l.ready_pids(site.hosts, timeout=10)
    l.proc.send_signal(signal.SIGKILL)
    t0 = time.monotonic()
    pids_gone(list(pids.values()), LIFELINE_BOUND)
    took = time.monotonic() - t0
    assert site.leftovers(grace=2) == {}
    assert took < LIFELINE_BOUND


@pytest.mark.parametrize("agent", ["netns", "nsenter"])
def test_agent_killed_its_guard_stops_the_command(lab, agent):
    """SIGKILL to host 0's agent: the guard kills the command at once; the launcher reports
    host 0 lost; host 1 goes on. `ip netns exec` mounts a sysfs of its own (no cgroup2 there),
    so its agents use process groups; `nsenter --net` keeps the machine's mounts, so there the
    agent makes a cgroup, which the guard must also remove once it is empty."""
    site = lab.site(2)
    h0, h1 = site.hosts
    if agent == "nsenter":
        if not shutil.which("nsenter"):
            pytest.skip("needs nsenter (Debian package util-linux)")
        agent_args = ["--agent", f"{shutil.which('nsenter')} --net=/run/netns/%h"]
    else:
        agent_args = lab.netns_agent()
    l = lab.launch(site, [*agent_args, *common(hb=2.0), "-H", names_arg(site.hosts)],
                   lab.gate_command())
    pids = l.ready_pids(site.hosts)
    guards = guard_argvs(site, h0)
    assert len(guards) == 1, guards
    guard_pid, guard_argv = guards[0]
    kind = guard_argv[guard_argv.index(b"--guard") + 1]
    if agent == "nsenter" and cgroup2_writable():
        assert kind == b"cgroup", guard_argv
    guard_fd = os.pidfd_open(guard_pid)
    try:
        os.kill(agent_pid(site, h0), signal.SIGKILL)
        # Heartbeat 2s: gone well before a heartbeat could have been missed.
        pids_gone([pids[h0.name]], 2.0)
        assert select.select([guard_fd], [], [], TIMEOUT)[0], "the guard did not exit"
    finally:
        os.close(guard_fd)
    if kind == b"cgroup":
        path = guard_argv[guard_argv.index(b"--guard") + 2].decode()
        assert not os.path.exists(path), f"the guard left the cgroup {path}"
    lab.open_gate(h1)
    assert l.finish() == 2, l.text()
    result = l.hosts()
    assert (result[h0.name]["started"], result[h0.name]["state"]) == (True, "lost"), result
    assert_exited(result, [h1])


def test_link_cut_mid_run(lab):
    """Host 1's link goes down while its command runs: no EOF anywhere (the agent's stdin is
    a local pipe), only missed heartbeats. The command is stopped on that host, the host is
    reported lost, the others finish."""
    site = lab.site(3)
    h0, h1, h2 = site.hosts
    l = lab.launch(site, [*lab.netns_agent(), *common(hb=HEARTBEAT),
                          "-H", names_arg(site.hosts)],
                   lab.gate_command())
    pids = l.ready_pids(site.hosts)
    site.cut(h1)
    pids_gone([pids[h1.name]], LIFELINE_BOUND)
    lab.open_gate(h0)
    lab.open_gate(h2)
    assert l.finish() == 2, l.text()
    result = l.hosts()
    assert (result[h1.name]["started"], result[h1.name]["state"]) == (True, "lost"), result
    assert_exited(result, [h0, h2])


def test_remote_timeout(lab, helper):
    """--timeout is enforced by the agent: the command ignores TERM, the ladder's KILL ends
    it; timed-out; exit 1."""
    site = lab.site(2)
    l = lab.launch(site, [*lab.netns_agent(), *common(), "--timeout", "400ms",
                          "-H", names_arg(site.hosts)],
                   ["/usr/bin/env", "HELPER_READY_FD=1", helper, "ignore-term"])
    pids = l.ready_pids(site.hosts)
    assert l.finish() == 1, l.text()
    for h in site.hosts:
        e = l.hosts()[h.name]
        assert (e["started"], e["state"]) == (True, "timed-out"), e
    pids_gone(list(pids.values()), 1)
    assert l.elapsed < 0.4 + LADDER_SECONDS + 8


# ---- signals -------------------------------------------------------------------------------------

@pytest.mark.parametrize("sig", ["INT", "TERM", "HUP", "USR1", "USR2"])
def test_signals_are_forwarded_to_every_command(lab, helper, sig):
    site = lab.site(3)
    l = lab.launch(site, [*lab.netns_agent(), *common(), "-H", names_arg(site.hosts)],
                   ["/usr/bin/env", "HELPER_READY_FD=1", helper, "catch", sig])
    l.ready_pids(site.hosts)
    l.proc.send_signal(getattr(signal, "SIG" + sig))
    alt = "|".join(re.escape(h.name) for h in site.hosts)
    got = l.wait_line(rf"^({alt}): got {sig} from \d+$", count=3)
    assert sorted(m.group(1) for m in got) == sorted(site.names)
    assert l.finish() == 0, l.text()
    assert_exited(l.hosts(), site.hosts)


def test_signals_in_tree_mode_reach_every_host(lab, helper):
    """Tree mode, width 2 over 7 hosts: a signal to the launcher is relayed down two levels
    and reaches the command on every host, and their output comes back up."""
    site = lab.site(7)
    l = lab.launch(site, [*lab.netns_agent(), *common(), "--tree", "2",
                          "-H", names_arg(site.hosts)],
                   ["/usr/bin/env", "HELPER_READY_FD=1", helper, "catch", "USR2"])
    l.ready_pids(site.hosts)
    l.proc.send_signal(signal.SIGUSR2)
    alt = "|".join(re.escape(h.name) for h in site.hosts)
    got = l.wait_line(rf"^({alt}): got USR2 from \d+$", count=7)
    assert sorted(m.group(1) for m in got) == sorted(site.names)
    assert l.finish() == 0, l.text()
    assert_exited(l.hosts(), site.hosts)


@pytest.mark.parametrize("sig", ["INT", "TERM", "HUP"])
def test_int_term_hup_cancel_hosts_not_started_yet(lab, helper, sig):
    """INT (TERM, HUP) while host 2 has not started (its agent is up but has not called
    back): the started commands get the signal and go on; host 2's agent is stopped, it is
    reported cancelled, and a callback for it afterwards, with the right token, is answered
    ABORT."""
    site = lab.site(3)
    h0, h1, h2 = site.hosts
    fd = lab.expect_pids(h2)
    l = lab.launch(site, [*lab.netns_agent({h2: "capture"}), *common(), "--start-timeout", "20s",
                          "-H", names_arg(site.hosts)],
                   ["/usr/bin/env", "HELPER_READY_FD=1", helper, "catch", sig, "USR1"])
    lab.read_pids(fd)
    l.ready_pids([h0, h1])
    job = lab.job_line(h2)
    token = base64.b64decode(job["token"])
    l.proc.send_signal(getattr(signal, "SIG" + sig))
    l.wait_line(rf"^({re.escape(h0.name)}|{re.escape(h1.name)}): got {sig} from \d+$", count=2)
    assert lab.wait_writers_gone(fd, 5), "the agent of the host not started was not stopped"
    with connect(job) as s:
        got = hello(s, 2, token)
        frames = []
        if got is not None:
            na, nl = got
            s.sendall(frame(PROOF, 2, mac(token, b"A", 2, na, nl)))
            s.sendall(frame(START, 2))
            frames = recv_until_closed(s)
        kinds = [f[0] for f in frames]
        assert ABORT in kinds and GO not in kinds, f"frames after cancellation: {frames}"
    # The started commands are still there, waiting for USR1.
    l.proc.send_signal(signal.SIGUSR1)
    assert l.finish() == 2, l.text()
    result = l.hosts()
    assert (result[h2.name]["started"], result[h2.name]["state"]) == (False, "cancelled"), result
    assert_exited(result, [h0, h1])


def test_second_int_is_forwarded_again(lab, helper):
    """A second INT while the launcher waits for the started commands is forwarded too."""
    site = lab.site(2)
    l = lab.launch(site, [*lab.netns_agent(), *common(), "-H", names_arg(site.hosts)],
                   ["/usr/bin/env", "HELPER_READY_FD=1", helper, "catch", "INT", "USR1"])
    l.ready_pids(site.hosts)
    alt = "|".join(re.escape(h.name) for h in site.hosts)
    l.proc.send_signal(signal.SIGINT)
    l.wait_line(rf"^({alt}): got INT from \d+$", count=2)
    l.proc.send_signal(signal.SIGINT)
    l.wait_line(rf"^({alt}): got INT from \d+$", count=4)
    l.proc.send_signal(signal.SIGUSR1)
    assert l.finish() == 0, l.text()
    assert_exited(l.hosts(), site.hosts)


# ---- output --------------------------------------------------------------------------------------

def test_output_of_8_hosts_interleaved_nothing_lost(lab, helper):
    site = lab.site(8)
    n = 3000
    l = lab.launch(site, [*lab.netns_agent(), *common(), "-q", "-H", names_arg(site.hosts)],
                   [helper, "numbered", n])
    assert l.finish() == 0, l.text()[-3000:]
    for stream, tag in ((1, "out"), (2, "err")):
        per_host = {h.name: [] for h in site.hosts}
        for line in l.lines[stream]:
            if stream == 2 and line.startswith("tend: "):
                continue
            host, sep, rest = line.partition(": ")
            assert sep and host in per_host, f"stream {stream}: unexpected line {line!r}"
            per_host[host].append(rest)
        want = [f"{tag} {i}" for i in range(n)] + [f"{tag} end"]
        for host, got in per_host.items():
            if got != want:
                first = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b),
                             min(len(got), len(want)))
                pytest.fail(f"{host} {tag}: {len(got)} lines, expected {len(want)}; first "
                            f"difference at {first}: {got[first:first + 3]} vs "
                            f"{want[first:first + 3]}", pytrace=False)
    assert not any(x.startswith("HOST ") for x in l.lines[2]), "-q prints no table"
    assert_exited(l.hosts(), site.hosts)


def test_slow_reader_slows_the_hosts_nothing_lost(lab, helper):
    """Two hosts each write 4.2 MB on both streams in chunks of up to 64 KiB, far more than
    every pipe, socket and queue between them and us holds, and our reading of tend's
    standard output stops for 3.5 heartbeat intervals after the first 256 KiB (a terminal
    that does not keep up). Backpressure, not dropping and not losing: the hosts wait, the
    pause is not a missed heartbeat on either side, and every byte arrives, in order, with
    its host's prefix, on its stream."""
    site = lab.site(2)
    lines = 350000
    size = 12 * lines  # the helper's pattern: 12-byte lines "O 000000001\n"
    l = lab.launch(site, [*lab.netns_agent(), *common(hb=HEARTBEAT), "-q",
                          "-H", names_arg(site.hosts)],
                   [helper, "flood", size], stall=(256 * 1024, 3.5 * HEARTBEAT))
    rc = l.finish(timeout=60)
    assert rc == 0, (json.dumps(l.result()) if l.json_path.exists() else "") + l.text()[-2000:]
    for stream, tag in ((1, "O"), (2, "E")):
        text = "\n".join(l.lines[stream]) + "\n"
        want = "".join(f"{tag} {i:09d}\n" for i in range(1, lines + 1))
        for h in site.hosts:
            got = "".join(re.findall(rf"^{re.escape(h.name)}: (.*\n)", text, re.M))
            if got != want:
                i = next((k for k, (a, b) in enumerate(zip(got, want)) if a != b),
                         min(len(got), len(want)))
                pytest.fail(f"{h.name} stream {stream}: {len(got)} bytes, expected {len(want)};"
                            f" first difference at byte {i}: {got[i:i + 40]!r} vs "
                            f"{want[i:i + 40]!r}", pytrace=False)
        others = [x for x in l.lines[stream]
                  if not any(x.startswith(h.name + ": ") for h in site.hosts)]
        assert others == [], others[:5]
    assert_exited(l.hosts(), site.hosts)


def test_long_line_is_cut_into_prefixed_pieces(lab):
    """A 200,000-byte line (no newline at the end either): printed in pieces of at most
    64 KiB, each with the host's prefix, nothing lost, a newline added at the end."""
    site = lab.site(1)
    name = site.names[0]
    l = lab.launch(site, [*lab.netns_agent(), *common(), "-q", "-H", name],
                   ["/bin/sh", "-c", "head -c 200000 /dev/zero | tr '\\0' x"])
    assert l.finish() == 0, l.text()[:500]
    assert l.lines[1] and all(x.startswith(name + ": ") for x in l.lines[1]), \
        [x[:80] for x in l.lines[1]]
    pieces = [x[len(name) + 2:] for x in l.lines[1]]
    assert "".join(pieces) == "x" * 200000
    assert len(pieces) >= 4 and max(map(len, pieces)) <= 65536, list(map(len, pieces))


def test_gather_groups_identical_outputs(lab):
    site = lab.site(6)
    h = site.hosts
    script = (f'case $({IP} netns identify) in '
              f'{h[3].name}) echo different; echo different-err >&2;; '
              f'{h[5].name}) ;; '
              f'*) echo same; echo same-err >&2;; esac')
    l = lab.launch(site, [*lab.netns_agent(), *common(), "--gather", "-q",
                          "-H", names_arg(h)], ["/bin/sh", "-c", script])
    assert l.finish() == 0, l.text()
    tag = f"tend-{site.id:03x}-h"
    assert l.lines[1] == [f"==== {tag}[0-2,4] (4 hosts) ====", "same",
                          f"==== {tag}3 (1 host) ====", "different"], l.text()
    err = [x for x in l.lines[2] if not x.startswith("tend: ")]
    assert err.count("same-err") == 1 and err.count("different-err") == 1, l.text()
    assert not any(x.startswith(tag) and ": " in x for x in err), l.text()


def test_gather_keeps_at_most_16_mib_per_stream_and_says_so(lab):
    site = lab.site(1)
    name = site.names[0]
    size = 16 * 1024 * 1024 + 100000
    l = lab.launch(site, [*lab.netns_agent(), *common(), "--gather", "-q", "-H", name],
                   ["/bin/sh", "-c", f"head -c {size} /dev/zero | tr '\\0' z"])
    assert l.finish(timeout=60) == 0, l.text()[:2000]
    assert l.lines[1][0] == f"==== {name} (1 host) (truncated) ====", l.lines[1][0][:200]
    body = "".join(l.lines[1][1:])
    assert set(body) == {"z"} and len(body) == 16 * 1024 * 1024, len(body)


# ---- result and exit codes -----------------------------------------------------------------------

@pytest.mark.parametrize("case,rc", [("all-zero", 0), ("one-nonzero", 1), ("one-killed", 1),
                                     ("one-never-started", 2)])
def test_json_result_and_exit_code(lab, case, rc):
    site = lab.site(3)
    odd = site.hosts[1]
    what = {"all-zero": "exit 0", "one-nonzero": "exit 3", "one-killed": "kill -KILL $$",
            "one-never-started": "exit 0"}[case]
    script = f'[ "$({IP} netns identify)" = {odd.name} ] && {what}; exit 0'
    hosts = site.hosts
    args = [*lab.netns_agent(), *common(), "-H", names_arg(hosts)]
    if case == "one-never-started":
        args = [*lab.netns_agent({odd: "silent"}), *common(), "--connect-timeout", "300ms",
                "-H", names_arg(hosts)]
    l = lab.launch(site, args, ["/bin/sh", "-c", script])
    assert l.finish() == rc, l.text()
    result = l.hosts()
    assert [result[h.name]["index"] for h in hosts] == [0, 1, 2]
    others = [hosts[0], hosts[2]]
    assert_exited(result, others)
    e = result[odd.name]
    if case == "all-zero":
        assert_exited(result, [odd])
    elif case == "one-nonzero":
        assert_exited(result, [odd], code=3)
    elif case == "one-killed":
        assert (e["started"], e["state"]) == (True, "killed"), e
        assert e["signal"] in ("KILL", "SIGKILL", 9), e
    else:
        assert (e["started"], e["state"], e["reason"]) == (False, "failed", "connect-timeout"), e
    for h in hosts:
        w = result[h.name]["wall_seconds"]
        if result[h.name]["started"]:
            assert isinstance(w, (int, float)) and 0 <= w < TIMEOUT, result[h.name]
        else:
            assert w is None or isinstance(w, (int, float)), result[h.name]


@pytest.mark.parametrize("args,message", [
    (["--", "true"], r"host"),
    (["-H", "n[1-", "--", "true"], r"n\[1-.*unterminated|unterminated.*n\[1-"),
    (["-H", "a,b", "-H", "a", "--", "true"], r"duplicate host 'a'"),
    (["-H", "-oProxyCommand=x", "--", "true"], r"starts with '-'"),
    (["-H", "a"], r"command"),
    (["-H", "a", "--no-such-option", "--", "true"], r"no-such-option"),
    (["-H", "a", "--fanout", "0", "--", "true"], r"fanout"),
    (["-H", "a", "--heartbeat", "soon", "--", "true"], r"soon"),
    (["-H", "a", "--listen", "203.0.113.7", "--", "true"], r"listen|203\.0\.113\.7"),
    (["-H", "n[1-65537]", "--", "true"], r"more than 65536 hosts"),
])
def test_usage_errors_exit_125(tend, tmp, args, message):
    """No hosts, a bad list, a duplicate, no command, bad options, an address to listen on
    that is not this machine's: 125 with a message, before any agent is started (the agent
    template would fail if it ran; no root needed)."""
    json_path = Path(tmp) / "r.json"
    r = subprocess.run([str(tend), "launch", "--agent", "/bin/false %h", "--json",
                        str(json_path), *args], capture_output=True, text=True,
                       timeout=TIMEOUT, env=child_env(), stdin=subprocess.DEVNULL)
    assert r.returncode == 125, (r.returncode, r.stdout, r.stderr)
    assert r.stderr.startswith("tend: "), r.stderr
    assert re.search(message, r.stderr), r.stderr
    assert r.stdout == ""


def test_json_on_stderr(lab):
    """--json -: the object on standard error, on a line of its own, after the table."""
    site = lab.site(2)
    l = lab.launch(site, [*lab.netns_agent(), *common(), "--json", "-",
                          "-H", names_arg(site.hosts)], ["/bin/sh", "-c", "echo x >&2"],
                   json=False)
    assert l.finish() == 0, l.text()
    last = l.lines[2][-1]
    obj = json.loads(last)
    assert [h["host"] for h in obj["hosts"]] == site.names
    assert all(h["state"] == "exited" for h in obj["hosts"]), obj
    assert sorted(x for x in l.lines[2] if x.endswith(": x")) == \
        sorted(f"{h.name}: x" for h in site.hosts), l.text()


def test_hostfile_error_names_file_and_line(tend, tmp):
    path = Path(tmp) / "hosts"
    path.write_text("# cluster\nok1\nbad host\n")
    r = subprocess.run([str(tend), "launch", "--hostfile", str(path), "--", "true"],
                       capture_output=True, text=True, timeout=TIMEOUT, env=child_env(),
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 125, (r.returncode, r.stderr)
    assert f"--hostfile {path}:3: " in r.stderr, r.stderr


# ---- tree mode -----------------------------------------------------------------------------------

def tree_parent(k, width):
    """The heap layout of doc/launch.md: host k's parent, or None for the launcher's own."""
    return None if k < width else k // width - 1


def test_tree_width_2_over_7_hosts(lab):
    site = lab.site(7)
    l = lab.launch(site, [*lab.netns_agent(), *common(), "--tree", "2",
                          "-H", names_arg(site.hosts)], lab.gate_command("echo bye"))
    l.ready_pids(site.hosts, timeout=10)
    # The agents form the tree: each agent's parent process is in its parent host's namespace
    # (host 0's agent started the agents of hosts 2 and 3, and so on).
    ns_of = {}
    for h in site.hosts:
        for pid in site.pids(h):
            ns_of[pid] = h.index
    for h in site.hosts:
        parent = tree_parent(h.index, 2)
        pp = ppid(agent_pid(site, h))
        if parent is None:
            assert pp not in ns_of, f"{h.name}'s agent was not started by the launcher"
        else:
            assert ns_of.get(pp) == parent, \
                f"{h.name}'s agent has parent {describe(pp)}, expected host {parent}'s agent"
    for h in site.hosts:
        lab.open_gate(h)
    assert l.finish() == 0, l.text()
    assert sorted(x for x in l.lines[1] if x.endswith(": bye")) == \
        sorted(f"{h.name}: bye" for h in site.hosts), l.text()
    assert_exited(l.hosts(), site.hosts)


def test_tree_interior_agent_killed_its_subtree_is_lost(lab):
    """Width 2 over 7 hosts: host 0 is the parent of 2 and 3, host 2 of 6. Host 0's agent
    killed: the commands of 0, 2, 3 and 6 are gone, those hosts are lost; 1, 4 and 5 go on."""
    site = lab.site(7)
    h = site.hosts
    l = lab.launch(site, [*lab.netns_agent(), *common(hb=HEARTBEAT), "--tree", "2",
                          "-H", names_arg(h)], lab.gate_command())
    pids = l.ready_pids(h, timeout=10)
    os.kill(agent_pid(site, h[0]), signal.SIGKILL)
    subtree = [h[0], h[2], h[3], h[6]]
    rest = [h[1], h[4], h[5]]
    pids_gone([pids[x.name] for x in subtree], LIFELINE_BOUND)
    outside = [pids[x.name] for x in rest]
    assert sorted(wait_gone(outside, 0)) == sorted(outside), "a host outside the subtree ended"
    for x in rest:
        lab.open_gate(x)
    assert l.finish() == 2, l.text()
    result = l.hosts()
    for x in subtree:
        assert (result[x.name]["started"], result[x.name]["state"]) == (True, "lost"), \
            result[x.name]
    assert_exited(result, rest)


# ---- the manual ----------------------------------------------------------------------------------

def _man_options():
    """The long options tagged in the OPTIONS section of man/tend-launch.1 (the line after
    each .TP)."""
    text = (REPO / "man" / "tend-launch.1").read_text()
    section = text[text.index(".SH OPTIONS"):]
    section = section[:section.index("\n.SH ", 1)]
    lines = section.splitlines()
    tags = [lines[i + 1] for i, line in enumerate(lines[:-1]) if line.startswith(".TP")]
    opts = {o.replace("\\-", "-") for t in tags
            for o in re.findall(r"\\-\\-([a-z](?:[a-z]|\\-)*)", t)}
    return sorted(opts)


def test_help_lists_every_option_of_the_manual_and_the_design(tend):
    """--help comes from man/tend-launch.1; the page covers every option of doc/launch.md."""
    r = subprocess.run([str(tend), "launch", "--help"], capture_output=True, text=True,
                       timeout=TIMEOUT, env=child_env(), stdin=subprocess.DEVNULL)
    assert r.returncode == 0 and r.stderr == "", r
    opts = _man_options()
    assert {"hosts", "user", "fanout", "quiet", "verbose", "tree"} <= set(opts), opts
    design = (REPO / "doc" / "launch.md").read_text()
    block = design[design.index("tend launch [OPTIONS]"):design.index("Durations as")]
    wanted = sorted(set(re.findall(r"--([a-z][a-z-]*)", block)))
    assert "gather" in wanted and "remote-tend" in wanted
    for o in wanted:
        assert o in opts, f"--{o} (doc/launch.md) is not an option of man/tend-launch.1"
    for o in opts:
        assert f"--{o}" in r.stdout, f"--{o} is missing from `tend launch --help`"
    for short in ("-H, --hosts", "-l, --user", "-f, --fanout", "-q, --quiet", "-v, --verbose"):
        assert short in r.stdout, short


def test_tree_over_ssh(lab):
    """Tree mode through the default ssh template: interior hosts run ssh to their children
    (the sshds see the same client configuration), and the children call back to them."""
    site = lab.site(5, sshd=True)
    l = lab.launch(site, [*common(), "--tree", "2", "-H", names_arg(site.hosts)],
                   [IP, "netns", "identify"])
    assert l.finish() == 0, l.text() + "\n" + site.sshd_logs()
    assert sorted(l.lines[1]) == sorted(f"{h.name}: {h.name}" for h in site.hosts), l.text()
    assert_exited(l.hosts(), site.hosts)
