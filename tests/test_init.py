"""`tend init`: a container's PID 1 (or a subreaper), and the tini drop-in.

Most behaviours run twice: as PID 1 of a new PID namespace (`unshare --pid --fork
--mount-proc`, needs root) and as a child subreaper (plain `tend init`, which makes itself
one). Every wait is for an event — a line on a pipe, a pidfd, a stop reported by waitpid —
and bounded by TIMEOUT; nothing sleeps. Whatever a failing test leaves running is killed.
"""
import fcntl
import os
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from conftest import cgroup2_mount, child_env, require_cgroup2, require_root, settled_syscall

TIMEOUT = 20.0
MODES = ["subreaper", "pid1"]
TINI_VERSION_RE = re.compile(r"^tini version 0\.19\.0 - git\.tend-[0-9A-Za-z_-]+$")

# What init forwards: every catchable signal but SIGCHLD, the fault signals and TTIN/TTOU
# (and glibc's reserved 32 and 33).
NOT_FORWARDED = {signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD, signal.SIGFPE, signal.SIGILL,
                 signal.SIGSEGV, signal.SIGBUS, signal.SIGABRT, signal.SIGTRAP, signal.SIGSYS,
                 signal.SIGTTIN, signal.SIGTTOU}
FORWARDED = [s for s in range(1, signal.SIGRTMAX + 1)
             if s not in NOT_FORWARDED and not (31 < s < signal.SIGRTMIN)]


# ---- running init ------------------------------------------------------------------------

def init_argv(mode, argv):
    if mode == "pid1":
        require_root()
        unshare = shutil.which("unshare")
        if not unshare:
            pytest.skip("needs unshare(1) for a new PID namespace")
        return [unshare, "--pid", "--fork", "--mount-proc", *argv]
    return list(argv)


def descendants(pid):
    """Pids below pid (a snapshot of /proc, by parent links)."""
    parent = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    text = f.read()
            except OSError:
                continue
            parent[int(name)] = int(text[text.rindex(")") + 2:].split()[1])
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        out += kids
        todo += kids
    return out


def kill_tree(pid):
    """SIGKILL pid and everything below it, wait until they are gone (via pidfds), and remove
    the cgroups of init's that had no chance to remove them."""
    fds, cgroups = [], set()
    tree = [pid, *descendants(pid)]
    for p in tree:
        try:
            with open(f"/proc/{p}/cgroup") as f:
                for line in f:
                    if line.startswith("0::") and "/tend-init-" in line:
                        cgroups.add(line[3:].strip())
        except OSError:
            pass
    for p in tree:
        try:
            fd = os.pidfd_open(p)
        except OSError:
            continue
        try:
            signal.pidfd_send_signal(fd, signal.SIGKILL)
        except OSError:
            pass
        fds.append(fd)
    for fd in fds:
        select.select([fd], [], [], TIMEOUT)
        os.close(fd)
    mount = cgroup2_mount()
    for cg in cgroups:
        try:
            os.rmdir(mount + cg)
        except OSError:
            pass


class Init:
    """An init under test, with its stdout and stderr read line by line under a deadline."""

    def __init__(self, argv, mode="subreaper", env=None, stdin=subprocess.PIPE, **kw):
        self.mode = mode
        self.p = subprocess.Popen(init_argv(mode, argv), stdin=stdin, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, env=env or child_env(), **kw)
        self.buf = {self.p.stdout.fileno(): b"", self.p.stderr.fileno(): b""}
        self.open = set(self.buf)
        for fd in self.buf:
            os.set_blocking(fd, False)
        self.rc = None

    @property
    def out(self):
        return self.buf[self.p.stdout.fileno()].decode(errors="replace")

    @property
    def err(self):
        return self.buf[self.p.stderr.fileno()].decode(errors="replace")

    def _read_some(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0 or not self.open:
            return False
        ready, _, _ = select.select(list(self.open), [], [], left)
        for fd in ready:
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                continue
            if data:
                self.buf[fd] += data
            else:
                self.open.discard(fd)
        return True

    def expect(self, pattern, stream="out", count=1, timeout=TIMEOUT):
        """Read until `pattern` matches `count` times in the stream; return the matches."""
        rx = re.compile(pattern, re.M)
        deadline = time.monotonic() + timeout
        while True:
            text = self.out if stream == "out" else self.err
            found = rx.findall(text[:text.rfind("\n") + 1])  # whole lines only
            if len(found) >= count:
                return found
            if not self._read_some(deadline):
                pytest.fail(f"no {count} x {pattern!r} on std{stream} within {timeout}s; "
                            f"stdout: {self.out!r} stderr: {self.err!r}")

    def send(self, text):
        self.p.stdin.write(text.encode())
        self.p.stdin.flush()

    def finish(self, timeout=TIMEOUT):
        """Read both streams to their end and return the exit status."""
        if self.p.stdin:
            self.p.stdin.close()
        deadline = time.monotonic() + timeout
        while self.open:
            if not self._read_some(deadline):
                pytest.fail(f"init did not finish within {timeout}s; stdout: {self.out!r} "
                            f"stderr: {self.err!r}")
        self.rc = self.p.wait(max(0.1, deadline - time.monotonic()))
        return self.rc

    def init_pid(self):
        """The init process itself (for pid1: unshare's child)."""
        if self.mode != "pid1":
            return self.p.pid
        with open(f"/proc/{self.p.pid}/task/{self.p.pid}/children") as f:
            kids = f.read().split()
        assert len(kids) == 1, kids
        return int(kids[0])

    def close(self):
        if self.p.poll() is None:
            kill_tree(self.p.pid)
            self.p.wait(TIMEOUT)
        for f in (self.p.stdin, self.p.stdout, self.p.stderr):
            if f:
                f.close()


@pytest.fixture
def run():
    started = []

    def start(*args, **kw):
        i = Init(*args, **kw)
        started.append(i)
        return i
    yield start
    for i in started:
        i.close()


@pytest.fixture
def tini(tend, tmp):
    """The program under tini's name: a symlink called tini."""
    link = tmp / "tini"
    link.symlink_to(tend)
    return link


def ready_pids(text):
    return [int(x) for x in re.findall(r"^ready (\d+)", text, re.M)]


# ---- command line ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["tini", "tini-static", "docker-init"])
def test_version_under_tini_names(tend, tmp, name):
    link = tmp / name
    link.symlink_to(tend)
    r = subprocess.run([link, "--version"], capture_output=True, text=True, env=child_env())
    assert r.returncode == 0
    line = r.stdout.strip()
    assert TINI_VERSION_RE.match(line), line
    # As docker's parseInitVersion reads it: "tini version V - git.COMMIT", one dot.
    head, tail = line.split(" - ")
    assert head == "tini version 0.19.0"
    assert len(tail.split(".")) == 2 and tail.split(".")[1].startswith("tend")


def test_version_only_alone(tend, tini):
    assert TINI_VERSION_RE.match(subprocess.run([tend, "init", "--version"], capture_output=True,
                                                text=True).stdout.strip())
    r = subprocess.run([tini, "--version", "true"], capture_output=True, text=True,
                       env=child_env())
    assert r.returncode == 1 and "--version" in r.stderr


@pytest.mark.parametrize("args,tini_rc,tend_rc", [
    ([], 1, 125),
    (["--"], 1, 125),
    (["-x", "true"], 1, 125),
    (["-e"], 1, 125),
    (["-e", "256", "true"], 1, 125),
    (["-e", "x", "true"], 1, 125),
    (["-p", "SIGNOPE", "true"], 1, 125),
    (["-r", "TERM", "true"], 1, 125),
    (["--grace", "soon", "true"], 1, 125),
])
def test_usage_errors(tend, tini, args, tini_rc, tend_rc):
    r = subprocess.run([tini, *args], capture_output=True, text=True, env=child_env())
    assert r.returncode == tini_rc, r.stderr
    assert r.stderr.startswith("tend: ")
    r = subprocess.run([tend, "init", *args], capture_output=True, text=True, env=child_env())
    assert r.returncode == tend_rc, r.stderr


def test_help_and_license(tend, tini):
    for argv in ([tend, "init", "-h"], [tend, "init", "--help"], [tini, "-h"]):
        r = subprocess.run(argv, capture_output=True, text=True, env=child_env())
        assert r.returncode == 0
        assert "SYNOPSIS" in r.stdout and "-e CODE" in r.stdout and "EXIT STATUS" in r.stdout
    r = subprocess.run([tini, "-l"], capture_output=True, text=True, env=child_env())
    assert r.returncode == 0 and r.stdout.startswith("MIT License")


def test_options_end_at_first_operand(tend, tini, helper):
    for argv in ([tend, "init"], [tini]):
        r = subprocess.run([*argv, helper, "echo", "-s", "-g", "-e", "1", "--version"],
                           capture_output=True, text=True, env=child_env())
        assert r.returncode == 0, r.stderr
        assert r.stdout == "-s -g -e 1 --version\n"


# ---- exit status ---------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_exit_status(tend, helper, mode, run):
    cases = [(["exit", "0"], [], 0), (["exit", "3"], [], 3), (["exit", "255"], [], 255),
             (["signal", "TERM"], [], 128 + 15), (["signal", "KILL"], [], 128 + 9),
             (["exit", "3"], ["-e", "3"], 0), (["exit", "4"], ["-e", "3"], 4),
             (["exit", "4"], ["-e", "3", "-e", "4"], 0),
             (["signal", "TERM"], ["-e", "143"], 0)]
    for child, opts, want in cases:
        i = run([tend, "init", *opts, "--", helper, *child], mode)
        assert i.finish() == want, (child, opts, i.err)


def test_exit_status_under_tini(tini, helper):
    # tini's own "exclusive" check: every other code remapped, this one kept.
    others = [a for c in range(256) if c != 7 for a in ("-e", str(c))]
    r = subprocess.run([tini, *others, helper, "exit", "7"], env=child_env(),
                       capture_output=True)
    assert r.returncode == 7
    r = subprocess.run([tini, "-e", "7", "--", helper, "exit", "7"], env=child_env(),
                       capture_output=True)
    assert r.returncode == 0


@pytest.mark.parametrize("mode", MODES)
def test_exec_failures(tend, tini, tmp, mode, run):
    plain = tmp / "not-executable"
    plain.write_text("#!/bin/sh\nexit 0\n")
    plain.chmod(0o644)
    for argv in ([tend, "init", "--"], [tini, "--"]):
        for cmd, want in ((["no-such-command-tend"], 127), ([str(tmp / "missing")], 127),
                          ([str(plain)], 126), ([str(tmp)], 126)):
            i = run([*argv, *cmd], mode)
            assert i.finish() == want, (argv, cmd, i.err)
            assert f"cannot exec '{cmd[0]}'" in i.err


# ---- reaping --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["tend", "tini"])
@pytest.mark.parametrize("mode", MODES)
def test_hundred_orphans_reaped(tend, tini, helper, mode, name, run):
    argv = [tend, "init"] if name == "tend" else [tini, "-s"]
    # The main child waits for us after the orphans are gone, so every reap is seen before
    # init could exit.
    i = run([*argv, "-w", "--", "sh", "-c", '"$0" orphans 100 && read x', helper], mode)
    orphans = [int(x) for x in i.expect(r"^orphans:((?: \d+)+)$")[0].split()]
    assert len(orphans) == 100
    reaped = i.expect(r"^tend: Reaped zombie process with pid=(\d+)$", "err", count=100)
    assert sorted(map(int, reaped)) == sorted(orphans)
    i.send("\n")
    assert i.finish() == 0, i.err
    assert "zombie reaping won't work" not in i.err


@pytest.mark.parametrize("mode", MODES)
def test_coalesced_exit_is_seen(tend, mode, run):
    # The main child exits at the instant 200 children of its own do (they wake up when its
    # exit closes their pipe), so its SIGCHLD merges with theirs; its pidfd still tells.
    script = ("import os\nr, w = os.pipe()\n"
              "for i in range(200):\n"
              "    if os.fork() == 0:\n"
              "        os.close(w); os.read(r, 1); os._exit(i % 7)\n"
              "os._exit(7)\n")
    for _ in range(3):
        i = run([tend, "init", "-w", "--", sys.executable, "-c", script], mode)
        assert i.finish() == 7, i.err


def test_warning_when_reaping_cannot_work(tend, tini, helper):
    def stderr(argv, **extra):
        r = subprocess.run([*argv, helper, "exit", "0"], capture_output=True, text=True,
                           env=child_env(**extra))
        assert r.returncode == 0
        return r.stderr
    assert "zombie reaping won't work" in stderr([tini])
    assert "zombie reaping won't work" in stderr([tini, "-w"])
    assert "zombie reaping won't work" not in stderr([tini, "-s"])
    assert "zombie reaping won't work" not in stderr([tini], TINI_SUBREAPER="")
    assert "zombie reaping won't work" not in stderr([tini], TINI_VERBOSITY="0")
    assert "zombie reaping won't work" not in stderr([tend, "init"])
    # tini's own check: an environment holding nothing but TINI_VERBOSITY=1.
    r = subprocess.run([tini, helper, "exit", "0"], capture_output=True, text=True,
                       env={"TINI_VERBOSITY": "1", "TEND_TEST_SESSION":
                            os.environ["TEND_TEST_SESSION"]})
    assert r.returncode == 0 and "zombie reaping won't work" in r.stderr


def test_no_warning_as_pid1(tini, helper, run):
    i = run([tini, "--", helper, "exit", "0"], "pid1")
    assert i.finish() == 0
    assert "zombie reaping won't work" not in i.err


# ---- signals -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["tend", "tini"])
@pytest.mark.parametrize("mode", MODES)
def test_every_catchable_signal_forwarded(tend, tini, helper, mode, name, run):
    argv = [tend, "init"] if name == "tend" else [tini, "-s"]
    i = run([*argv, "--", helper, "catch", *map(str, FORWARDED)], mode,
            env=child_env(HELPER_READY_FD="1"))
    i.expect(r"^ready \d+")
    init = i.init_pid()
    # The kernel drops a pending SIGCONT when a stop signal (TSTP) is sent, and the other way
    # round: CONT goes alone, once the rest has arrived.
    for s in FORWARDED:
        if s != signal.SIGCONT:
            os.kill(init, s)
    i.expect(r"^got (\S+) from (\d+)$", count=len(FORWARDED) - 1)
    os.kill(init, signal.SIGCONT)
    got = i.expect(r"^got (\S+) from (\d+)$", count=len(FORWARDED))
    assert i.finish() == 0, i.err
    sender = 1 if mode == "pid1" else init
    assert {int(pid) for _, pid in got} == {sender}


@pytest.mark.parametrize("mode", MODES)
def test_group_signal_reaches_grandchild(tend, tini, helper, mode, run):
    # The child ignores SIGUSR1; its child does not. Only -g (or TINI_KILL_PROCESS_GROUP)
    # gets the signal to the grandchild, which then dies of it.
    script = 'trap "" USR1; (trap - USR1; exec "$0" sleep-forever) & wait $!; echo "grandchild: $?"'
    for argv, extra in (([tend, "init", "-g"], {}), ([tini, "-s", "-g"], {}),
                        ([tini, "-s"], {"TINI_KILL_PROCESS_GROUP": "1"})):
        i = run([*argv, "--", "sh", "-c", script, helper], mode,
                env=child_env(HELPER_READY_FD="1", **extra))
        i.expect(r"^ready \d+")
        os.kill(i.init_pid(), signal.SIGUSR1)
        i.expect(r"^grandchild: (\d+)$")
        assert f"grandchild: {128 + signal.SIGUSR1}" in i.out
        assert i.finish() == 0, i.err


def test_rewrite(tend, helper, run):
    # TERM arrives as USR1; USR2 is dropped (were it forwarded, the helper would die of it
    # before it saw TERM, which is sent after it and has a higher number).
    i = run([tend, "init", "-r", "TERM:USR1", "--rewrite", "12:0", "--", helper, "catch",
             "USR1"], env=child_env(HELPER_READY_FD="1"))
    i.expect(r"^ready \d+")
    os.kill(i.p.pid, signal.SIGUSR2)
    os.kill(i.p.pid, signal.SIGTERM)
    assert i.finish() == 0, i.err
    assert f"got USR1 from {i.p.pid}" in i.out and "USR2" not in i.out


def sig_bits(status, key):
    word = int(re.search(rf"^{key}:\s*([0-9a-f]+)$", status, re.M).group(1), 16)
    return {n + 1 for n in range(64) if word >> n & 1}


@pytest.mark.parametrize("mode", MODES)
def test_caller_mask_and_ignores_handed_on(tend, tini, helper, mode, run):
    # tini's sigconf check: what the caller blocks and ignores, the program gets — and
    # nothing of what init blocks or ignores for itself.
    blocked = {signal.SIGTTIN, signal.SIGILL, signal.SIGTERM, signal.SIGUSR1}
    # (SIGSYS where tini's check has SIGSEGV, which a sanitizer build of the helper catches.)
    ignored = {signal.SIGTTOU, signal.SIGSYS, signal.SIGINT, signal.SIGHUP}

    def caller():
        signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
        for s in ignored:
            signal.signal(s, signal.SIG_IGN)

    def status(argv):
        i = run([*argv, helper, "status"], mode, preexec_fn=caller)
        assert i.finish() == 0, i.err
        return sig_bits(i.out, "SigBlk"), sig_bits(i.out, "SigIgn")

    direct_blk, direct_ign = status([])
    assert blocked <= direct_blk and ignored <= direct_ign
    for argv in ([tend, "init", "--"], [tini, "-s", "--"]):
        assert status(argv) == (direct_blk, direct_ign), argv
    # A caller that blocks and ignores nothing hands on nothing (init's TTIN/TTOU stay its own).
    i = run([tend, "init", "--", helper, "status"], mode)
    assert i.finish() == 0
    assert sig_bits(i.out, "SigBlk") == set()
    assert not {signal.SIGTTIN, signal.SIGTTOU} & sig_bits(i.out, "SigIgn")


def test_ignored_sigchld_is_not_inherited(tend, helper, run):
    # A caller that ignores SIGCHLD would have the kernel discard every exit status.
    def caller():
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    i = run([tend, "init", "-w", "--", "sh", "-c", '"$0" status; "$0" orphans 3 && read x',
             helper], preexec_fn=caller)
    i.expect(r"^tend: Reaped zombie process with pid=\d+$", "err", count=3)
    i.send("\n")
    assert i.finish() == 0, i.err
    assert signal.SIGCHLD not in sig_bits(i.out, "SigIgn")
    i = run([tend, "init", "--", helper, "exit", "3"], preexec_fn=caller)
    assert i.finish() == 3


def test_parent_death_signal(tend, tini, helper, run):
    # init's parent (sh) exits once the child is ready; init gets SIGUSR1 from the kernel
    # and forwards it like any other.
    for argv in ([tend, "init", "-p", "SIGUSR1"], [tini, "-p", "SIGUSR1"]):
        i = run(["sh", "-c", '"$@" </dev/null & read x', "sh", *argv, "--", helper,
                 "catch", "USR1"], env=child_env(HELPER_READY_FD="1"))
        i.expect(r"^ready \d+")
        i.send("go\n")
        i.expect(r"^got USR1 from \d+$")
        assert i.finish() == 0, i.err  # sh; init is gone too: it held stdout


# ---- the graceful end ------------------------------------------------------------------------

@pytest.mark.parametrize("cgroup", ["cgroup", "no-cgroup"])
@pytest.mark.parametrize("mode", MODES)
def test_graceful_end(tend, helper, mode, cgroup, run):
    if cgroup == "cgroup":
        require_cgroup2()
    # The child leaves a process that traps TERM and one that escaped with setsid(); init
    # stops both before exiting with the child's status.
    # (In a sanitizer build the leak check that runs at the helper's exit forks a tracer into
    # the group; signalled by the ladder, it wedges the exit. That is not what this tests.)
    i = run([tend, "init", "-v", *(["--no-cgroup"] if cgroup == "no-cgroup" else []), "--",
             "sh", "-c", '"$0" escape; "$0" catch TERM & read x; exit 3', helper], mode,
            env=child_env(HELPER_READY_FD="1", ASAN_OPTIONS="detect_leaks=0"))
    i.expect(r"^ready \d+", count=2)
    escaped = None
    if mode == "subreaper":
        pids = ready_pids(i.out)
        escaped = [os.pidfd_open(p) for p in pids]
    i.send("\n")
    assert i.finish() == 3, i.err
    sender = 1 if mode == "pid1" else i.p.pid
    assert f"got TERM from {sender}" in i.out
    assert "2 processes left behind" in i.err and "gone (after TERM)" in i.err
    for fd in escaped or []:
        assert select.select([fd], [], [], 0)[0] == [fd]  # exited
        os.close(fd)


@pytest.mark.parametrize("mode", MODES)
def test_graceful_end_ladder(tend, helper, mode, run):
    start = time.monotonic()
    i = run([tend, "init", "-v", "--stop", "TERM/300ms,KILL", "--", "sh", "-c",
             '"$0" ignore-term & read x; exit 4', helper], mode,
            env=child_env(HELPER_READY_FD="1"))
    i.expect(r"^ready \d+")
    i.send("\n")
    assert i.finish() == 4, i.err
    assert "gone (after KILL)" in i.err
    assert time.monotonic() - start >= 0.3


def test_no_graceful_end_under_tini_unless_asked(tini, helper, run):
    # The leftover must not hold init's output pipes, or reading them to the end would wait
    # for it: it reports on fd 3, a copy of stdout that it closes after the report.
    script = 'HELPER_READY_FD=3 "$0" sleep-forever 3>&1 >/dev/null 2>&1 & read x; exit 5'
    i = run([tini, "-s", "--", "sh", "-c", script, helper])
    left = os.pidfd_open(int(i.expect(r"^ready (\d+)")[0]))
    try:
        i.send("\n")
        assert i.finish() == 5
        assert select.select([left], [], [], 0)[0] == []  # still running: tini's way
        signal.pidfd_send_signal(left, signal.SIGKILL)
        assert select.select([left], [], [], TIMEOUT)[0] == [left]
    finally:
        os.close(left)
    i = run([tini, "-s", "--grace", "2s", "--", "sh", "-c", script, helper])
    left = os.pidfd_open(int(i.expect(r"^ready (\d+)")[0]))
    try:
        i.send("\n")
        assert i.finish() == 5
        assert select.select([left], [], [], 0)[0] == [left]
    finally:
        os.close(left)


def test_cgroup_containment(tend, run):
    require_cgroup2()
    i = run([tend, "init", "--", "cat", "/proc/self/cgroup"])
    assert i.finish() == 0
    assert re.search(r"^0::.*/tend-init-\d+-\d+$", i.out, re.M), i.out
    i = run([tend, "init", "--no-cgroup", "--", "cat", "/proc/self/cgroup"])
    assert i.finish() == 0
    assert "tend-init" not in i.out


# ---- what the child inherits ---------------------------------------------------------------

def test_cwd_and_fds(tend, tini, helper, tmp, run):
    r, w = os.pipe()  # an inheritable fd: tini hands it on, tend init does not
    os.set_inheritable(r, True)
    try:
        i = run([tend, "init", "--", "sh", "-c", '"$0" cwd; "$0" fds; "$0" sleep-forever',
                 helper], env=child_env(HELPER_READY_FD="2"), cwd=tmp, pass_fds=(r,))
        i.expect(r"^ready \d+", "err")
        i.expect(r"^fds: .*$")
        assert os.readlink(f"/proc/{i.p.pid}/cwd") == "/"
        assert i.out.splitlines() == [str(tmp), "fds: 0 1 2"]
        os.kill(i.p.pid, signal.SIGTERM)  # to sh, then the graceful end for the sleeper
        assert i.finish() == 128 + signal.SIGTERM, i.err
        i = run([tini, "--", helper, "fds"], cwd=tmp, pass_fds=(r,))
        assert i.finish() == 0
        assert str(r) in i.out.split()
    finally:
        os.close(r)
        os.close(w)


# ---- terminals ------------------------------------------------------------------------------

def on_pty(argv, env):
    """Start argv as a session leader with a new pty as its controlling terminal."""
    master, slave = os.openpty()

    def ctty():
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    p = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env,
                         start_new_session=True, preexec_fn=ctty)
    os.close(slave)
    return p, master


def pty_read_until(master, pattern, buf, timeout=TIMEOUT):
    deadline = time.monotonic() + timeout
    rx = re.compile(pattern, re.M)
    while not rx.search(buf[0]):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([master], [], [], left)[0]:
            pytest.fail(f"no {pattern!r} on the terminal: {buf[0]!r}")
        try:
            data = os.read(master, 4096)
        except OSError:  # EIO: every slave is closed
            data = b""
        if not data:
            pytest.fail(f"terminal closed before {pattern!r}: {buf[0]!r}")
        buf[0] += data.decode(errors="replace")
    return rx.search(buf[0])


@pytest.mark.parametrize("name", ["tend", "tini"])
def test_tty_child_is_foreground_group_leader(tend, tini, helper, name):
    argv = [tend, "init"] if name == "tend" else [tini, "-s"]
    p, master = on_pty([*argv, "--", helper, "tty"], child_env())
    try:
        buf = [""]
        m = pty_read_until(master, r"stdin=1 stdout=1 ctty=1 fg=(\d+) pgid=(\d+) sid=(\d+)", buf)
        fg, pgid, sid = map(int, m.groups())
        assert fg == pgid and pgid != p.pid and sid == p.pid
        assert p.wait(TIMEOUT) == 0
    finally:
        if p.poll() is None:
            kill_tree(p.pid)
            p.wait()
        os.close(master)


def test_tty_job_control(tend, helper):
    # Ctrl-Z on the terminal reaches init (the child is off the terminal, in a session of its
    # own); init stops the child and, once the child has stopped, itself — so when we see init
    # stopped, the child is stopped too. SIGCONT to init continues both.
    p, master = on_pty([tend, "init", "--job-control", "--", helper, "catch", "CONT"],
                       child_env(HELPER_READY_FD="1"))
    try:
        buf = [""]
        child = int(pty_read_until(master, r"^ready (\d+)", buf).group(1))
        os.write(master, b"\x1a")  # Ctrl-Z
        pid, st = os.waitpid(p.pid, os.WUNTRACED)
        assert os.WIFSTOPPED(st) and os.WSTOPSIG(st) == signal.SIGSTOP
        with open(f"/proc/{child}/stat") as f:
            text = f.read()
        assert text[text.rindex(")") + 2] == "T", text
        os.kill(p.pid, signal.SIGCONT)
        pty_read_until(master, rf"got CONT from {p.pid}", buf)
        assert p.wait(TIMEOUT) == 0
    finally:
        if p.poll() is None:
            kill_tree(p.pid)
            p.wait()
        os.close(master)


# ---- no polling ----------------------------------------------------------------------------

@pytest.mark.skipif(os.uname().machine != "x86_64", reason="system call numbers are x86-64's")
def test_idle_init_sleeps_without_timeout(tend, helper, run):
    i = run([tend, "init", "--", helper, "sleep-forever"], env=child_env(HELPER_READY_FD="1"))
    i.expect(r"^ready \d+")
    fields = settled_syscall(i.p.pid)
    assert int(fields[0]) in {232, 281, 441}, fields  # epoll_wait, epoll_pwait, epoll_pwait2
    assert int(fields[4], 16) & 0xffffffff == 0xffffffff  # timeout -1: only an event wakes it


# ---- the static build --------------------------------------------------------------------

def elf_needs_loader(path):
    """True if the ELF file has an interpreter or a dynamic section (needs ld.so and libs)."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[:4] == b"\x7fELF" and data[4] == 2, "not a 64-bit ELF"
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    types = {struct.unpack_from("<I", data, phoff + i * phentsize)[0] for i in range(phnum)}
    return bool(types & {2, 3})  # PT_DYNAMIC, PT_INTERP


def test_static_build_runs_alone(build_dir, tmp):
    # `make static BUILD=X` builds X-static/tend. Copied alone into an empty root — no libc,
    # no NSS, no /proc — it still works as an init and as tini.
    prog = Path(str(build_dir) + "-static") / "tend"
    if not prog.is_file():
        pytest.skip(f"no static build at {prog} (make static BUILD={build_dir})")
    assert not elf_needs_loader(prog)
    require_root()
    root = tmp / "root"
    root.mkdir()
    shutil.copy(prog, root / "tend")
    (root / "tini").symlink_to("tend")
    r = subprocess.run(["chroot", root, "/tini", "-s", "-w", "--", "/tend", "init", "--",
                        "/tini", "--version"], capture_output=True, text=True, env=child_env(),
                       timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr
    assert TINI_VERSION_RE.match(r.stdout.strip())
    r = subprocess.run(["chroot", root, "/tend", "init", "--", "/missing"], capture_output=True,
                       text=True, env=child_env(), timeout=TIMEOUT)
    assert r.returncode == 127
