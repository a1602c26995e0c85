"""Shared pytest set-up for tend's tests: paths, skips, and a leak check at the end.

Run with Debian's interpreter (the one that has python3-pytest):

    TEND_BUILD=$PWD/build /usr/bin/python3 -m pytest tests [-n 2]

Fixtures: build_dir, tend, helper (paths), tend_static (the static build of `make static`,
BUILD-static/tend; the test is skipped without it), tmp (a fresh directory per test, removed
with the session). Helpers for process-level tests, importable with `from conftest import ...`:
require_root(), cgroup2_mount(), own_cgroup(), cgroup2_writable(), require_cgroup2(),
child_env().

The leak check. Every process started by the tests inherits TEND_TEST_SESSION (the session's
temporary root) from pytest's environment. At the end of the run the check fails the run
(exit status non-zero) and says what was left behind if it finds:
  - a live process carrying this session's TEND_TEST_SESSION, or one whose executable or
    command line is in the build directory that was not there when the session started (the
    latter only when no other test session is running, since a process whose environment a
    test replaced cannot be told apart from another session's);
  - a zombie whose parent is a pytest process of this session (controller or xdist worker);
  - a cgroup directory named tend-* below our own cgroup (cgroup v2) that did not exist at
    the start;
  - a new entry in /tmp whose name starts with "tend", other than the session root and the
    roots of other live sessions;
  - a network namespace or a network link (bridge, veth) named tend-* that did not exist at
    the start (made by the test hosts of tests/netns_hosts.py); they are removed after being
    reported, unless another test session is running (then they may be its own: a note);
  - an sshd whose command line names this session's root (the per-host sshds of
    tests/netns_hosts.py); killed after being reported.
Processes of this session that are still alive are killed after being reported, so one bad
run does not spoil the next. A process that is already dying gets up to LEAK_GRACE seconds
(waited for through a pidfd, not by polling) before it counts. "leak check: clean" is
printed when nothing is found. Tests need not clean their `tmp` directories: the session root
is removed at the end.
"""

import os
import re
import select
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BUILD_DIR = Path(os.environ.get("TEND_BUILD") or REPO / "build").resolve()
SESSION_VAR = "TEND_TEST_SESSION"
ROOT_PREFIX = "tend-tests-"
LEAK_GRACE = 2.0

_state = {}  # what the session recorded at its start (controller only)


# ---- paths and environment ---------------------------------------------------------------

@pytest.fixture(scope="session")
def build_dir():
    return BUILD_DIR


def _built(path):
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(f"{path} is not built (run `make tests-build BUILD=...` first)", pytrace=False)
    return path


@pytest.fixture(scope="session")
def tend():
    return _built(BUILD_DIR / "tend")


@pytest.fixture(scope="session")
def tend_static():
    prog = Path(str(BUILD_DIR) + "-static") / "tend"
    if not prog.is_file():
        pytest.skip(f"no static build at {prog} (make static BUILD={BUILD_DIR})")
    return prog


@pytest.fixture(scope="session")
def helper():
    return _built(BUILD_DIR / "tests" / "helper")


@pytest.fixture
def tmp(request):
    """A new empty directory for this test, below the session root."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)[:60]
    return Path(tempfile.mkdtemp(prefix=name + "-", dir=os.environ[SESSION_VAR]))


def public_helper_path():
    """The helper, copied where any user can run it. The build directory may sit below a
    directory only we can enter (a clone in a private temporary directory), and a test that
    switches to another user needs that user to reach the program it starts. One copy per
    test process, inside the session root (made traversable, not listable)."""
    root = Path(os.environ[SESSION_VAR])
    public = root / f"public-{os.getpid()}"
    exe = public / "helper"
    if not exe.exists():
        os.chmod(root, 0o711)
        public.mkdir(exist_ok=True)
        os.chmod(public, 0o755)
        part = public / ".helper.part"
        shutil.copy2(BUILD_DIR / "tests" / "helper", part)
        os.chmod(part, 0o755)
        os.replace(part, exe)
    return exe


@pytest.fixture
def public_helper():
    return public_helper_path()


def child_env(*, clear=False, **extra):
    """An environment for a child process: ours (or, with clear=True, only PATH), always with
    the session marker so the leak check can attribute the child, plus `extra`."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")} if clear else dict(os.environ)
    env[SESSION_VAR] = os.environ[SESSION_VAR]
    env["TEND_BUILD"] = str(BUILD_DIR)
    if (BUILD_DIR / "tests" / "helper").exists():
        env["TEND_HELPER_PUBLIC"] = str(public_helper_path())
    env.update({k: str(v) for k, v in extra.items()})
    return env


# ---- skips: privilege and kernel features --------------------------------------------------

# x86-64: clone, vfork, clone3. A vfork parent sleeps in one of them until its child has
# exec'd, and is woken some time after: the child may already have said it is ready.
_SPAWN_SYSCALLS = {"56", "58", "435"}


def settled_syscall(pid):
    """The fields of /proc/PID/syscall once the process is blocked in something other than
    its spawn. "running" only while it is on a CPU; in clone3 only between its child's exec
    and its own wake-up: a few thousand reads cover both."""
    for _ in range(100000):
        with open(f"/proc/{pid}/syscall") as f:
            fields = f.read().split()
        if fields[0] != "running" and fields[0] not in _SPAWN_SYSCALLS:
            return fields
        os.sched_yield()
    pytest.fail(f"process {pid} never settled: {fields}")


def require_root():
    if os.geteuid() != 0:
        pytest.skip(f"needs root (running as uid {os.geteuid()})")


def _unescape_mountinfo(field):
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def cgroup2_mount():
    """Where cgroup v2 is mounted (e.g. /sys/fs/cgroup or /sys/fs/cgroup/unified), or None."""
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                if right.split(" ", 1)[0] == "cgroup2":
                    return _unescape_mountinfo(left.split(" ")[4])
    except OSError:
        pass
    return None


def own_cgroup():
    """This process's cgroup v2 path ("/" or "/user.slice/..."), from the "0::" line."""
    try:
        with open("/proc/self/cgroup") as f:
            for line in f:
                if line.startswith("0::"):
                    return line[3:].rstrip("\n")
    except OSError:
        pass
    return None


def own_cgroup_dir():
    mount, own = cgroup2_mount(), own_cgroup()
    if mount is None or own is None:
        return None
    return Path(mount + own.rstrip("/")) if own != "/" else Path(mount)


_cgroup2_writable = None


def cgroup2_writable():
    """True if a child cgroup can be made below our own cgroup (what tend's groups need)."""
    global _cgroup2_writable
    if _cgroup2_writable is None:
        base = own_cgroup_dir()
        _cgroup2_writable = False
        if base is not None:
            # Not named tend-*: the leak check must never see the probe.
            probe = base / f"tendprobe-{os.getpid()}"
            try:
                probe.mkdir()
                probe.rmdir()
                _cgroup2_writable = True
            except OSError:
                pass
    return _cgroup2_writable


def require_cgroup2():
    if not cgroup2_writable():
        where = own_cgroup_dir()
        pytest.skip("needs a writable cgroup v2 hierarchy"
                    + (f" (cannot create a child of {where})" if where else " (none mounted)"))


# ---- pytest hooks --------------------------------------------------------------------------

def _is_worker(config):
    return hasattr(config, "workerinput")


def pytest_configure(config):
    config.addinivalue_line("markers", "root: the test needs root privileges (skipped otherwise)")
    if _is_worker(config):
        root = config.workerinput.get("tend_test_root") or os.environ.get(SESSION_VAR)
        os.environ[SESSION_VAR] = root
        return
    _remove_dead_roots()
    root = tempfile.mkdtemp(prefix=ROOT_PREFIX + f"{os.getpid()}-", dir="/tmp")
    tend_cgroups, other_cgroups = _cgroup_dirs()
    # mkdtemp adds a random suffix; the name must still say which pid owns it.
    os.environ[SESSION_VAR] = root
    os.environ["TEND_BUILD"] = str(BUILD_DIR)
    _state.update(
        root=root,
        tmp_entries=set(os.listdir("/tmp")),
        cgroups=tend_cgroups,
        other_cgroups=other_cgroups,
        build_procs={(p.pid, p.start) for p in _scan_procs() if p.in_build},
        leaks_from_workers=[],
        netns=_netns_hosts().our_netns(),
        links=_netns_hosts().our_links(),
    )


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    # xdist: hand the controller's session root to each worker.
    node.workerinput["tend_test_root"] = os.environ[SESSION_VAR]


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    # xdist: zombies found by a worker at its end come back in its workeroutput.
    output = getattr(node, "workeroutput", {})
    _state.setdefault("leaks_from_workers", []).extend(
        f"[{node.gateway.id}] {line}" for line in output.get("tend_leaks", []))
    # The worker itself carries the session marker and may still be alive at our end.
    if "tend_pid" in output:
        _state.setdefault("workers", set()).add(output["tend_pid"])


def pytest_runtest_setup(item):
    if item.get_closest_marker("root") is not None:
        require_root()


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session, exitstatus):
    config = session.config
    zombies = _own_zombies()
    if _is_worker(config):
        # The controller reports; a worker only knows its own zombie children.
        config.workeroutput["tend_leaks"] = zombies
        config.workeroutput["tend_pid"] = os.getpid()
        return
    problems = zombies + _state.get("leaks_from_workers", [])
    notes = []
    problems += _check_sshd()
    problems += _check_processes(notes)
    problems += _check_cgroups(notes)
    problems += _check_net(notes)
    problems += _check_tmp(notes)
    root = _state.get("root")
    if root:
        shutil.rmtree(root, ignore_errors=True)
        if os.path.exists(root):
            problems.append(f"could not remove the session root {root}")
    _report(config, problems, notes)
    if problems and session.exitstatus == 0:
        session.exitstatus = 1


def pytest_unconfigure(config):
    # Runs even when no session did (--help, usage errors): never leave the root behind.
    root = _state.get("root")
    if root and not _is_worker(config):
        shutil.rmtree(root, ignore_errors=True)


def _report(config, problems, notes):
    lines = [(f"leak check: note: {n}", {}) for n in notes]
    if problems:
        lines.append((f"leak check: FAILED, {len(problems)} thing(s) left behind:", {"red": True}))
        lines += [(f"  {p}", {"red": True}) for p in problems]
    else:
        lines.append(("leak check: clean", {"green": True}))
    if config.pluginmanager.get_plugin("terminalreporter") is not None:
        _state["report"] = lines  # printed by pytest_terminal_summary, next to the results
    else:
        for text, _ in lines:
            print(text, file=sys.stderr)


def pytest_terminal_summary(terminalreporter):
    lines = _state.pop("report", None)
    if lines:
        terminalreporter.write_sep("-", "leak check")
        for text, markup in lines:
            terminalreporter.write_line(text, **markup)


# ---- /proc scanning ------------------------------------------------------------------------

class _Proc:
    __slots__ = ("pid", "ppid", "state", "start", "exe", "cmdline", "session", "in_build")

    def describe(self):
        cmd = self.cmdline or "?"
        return f"pid {self.pid} ppid {self.ppid} state {self.state} exe {self.exe or '?'}: {cmd}"


def _read(path, mode="r"):
    try:
        with open(path, mode) as f:
            return f.read()
    except OSError:
        return None


def _stat(pid):
    """(state, ppid, starttime) from /proc/PID/stat, or None if gone."""
    text = _read(f"/proc/{pid}/stat")
    if not text:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return fields[0], int(fields[1]), int(fields[19])


def _scan_procs():
    build = str(BUILD_DIR) + "/"
    mentions_build = re.compile(re.escape(str(BUILD_DIR)) + r"(/|\s|$)")
    marker = (SESSION_VAR + "=").encode()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        pid = int(name)
        st = _stat(pid)
        if st is None:
            continue
        p = _Proc()
        p.pid, (p.state, p.ppid, p.start) = pid, st
        try:
            p.exe = os.readlink(f"/proc/{pid}/exe")
        except OSError:
            p.exe = None
        raw = _read(f"/proc/{pid}/cmdline", "rb") or b""
        p.cmdline = raw.rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")
        env = _read(f"/proc/{pid}/environ", "rb") or b""
        p.session = None
        for entry in env.split(b"\0"):
            if entry.startswith(marker):
                p.session = entry[len(marker):].decode(errors="replace")
        p.in_build = bool((p.exe and p.exe.startswith(build))
                          or mentions_build.search(p.cmdline))
        yield p


def _ancestors():
    pids, pid = set(), os.getpid()
    while pid > 0 and pid not in pids:
        pids.add(pid)
        st = _stat(pid)
        pid = st[1] if st else 0
    return pids


def _own_zombies():
    me = os.getpid()
    found = []
    for p in _scan_procs():
        if p.ppid == me and p.state == "Z":
            found.append(f"zombie: pid {p.pid} (never waited for by pytest pid {me})")
            try:
                os.waitpid(p.pid, os.WNOHANG)  # reap it, now that it is reported
            except ChildProcessError:
                pass
    return found


def _unmarked(line, notes, problems):
    """Something left that carries no session marker: ours, unless another test session runs
    beside this one (a second checkout tested at the same time), when it may be theirs."""
    if _state.get("others_alive") is None:
        _state["others_alive"] = _other_sessions_alive()
    if _state["others_alive"]:
        notes.append(line + "; another test session is running, it may be theirs")
    else:
        problems.append(line)


def _other_sessions_alive():
    for name in os.listdir("/tmp"):
        m = re.fullmatch(ROOT_PREFIX + r"(\d+)-.*", name)
        if m and int(m.group(1)) != os.getpid() and os.path.exists(f"/proc/{m.group(1)}"):
            return True
    return False


def _wait_for_exit(procs, timeout):
    """Wait until each process has exited or `timeout` seconds have passed, through pidfds
    (they poll readable at exit), so a recycled pid is never mistaken for the process.
    Returns [(pidfd, proc)] for those still alive; the caller closes those fds."""
    fds = {}
    for p in procs:
        try:
            fd = os.pidfd_open(p.pid)
        except OSError:
            continue  # already gone
        st = _stat(p.pid)
        if st is None or st[2] != p.start:
            os.close(fd)  # the pid was reused between the scan and pidfd_open
            continue
        fds[fd] = p
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    pending = set(fds)
    deadline = time.monotonic() + timeout
    while pending:
        for fd, _ in poller.poll(max(0.0, deadline - time.monotonic()) * 1000):
            poller.unregister(fd)
            pending.discard(fd)
        if time.monotonic() >= deadline:
            break
    alive = []
    for fd, p in fds.items():
        if fd in pending:
            alive.append((fd, p))
        else:
            os.close(fd)
    return alive


def _check_processes(notes):
    root = _state.get("root")
    skip = _ancestors() | _state.get("workers", set())
    start = _state.get("build_procs", set())
    candidates = []
    for p in _scan_procs():
        if p.pid in skip or p.state == "Z":
            continue
        if p.session == root or (p.session is None and p.in_build
                                 and (p.pid, p.start) not in start):
            candidates.append(p)
    problems = []
    for fd, p in _wait_for_exit(candidates, LEAK_GRACE):
        if p.session == root:
            problems.append(f"process: {p.describe()} (killed)")
            try:
                signal.pidfd_send_signal(fd, signal.SIGKILL)
            except ProcessLookupError:
                pass
        else:
            _unmarked(f"process: {p.describe()} (no {SESSION_VAR}, so not killed)", notes,
                      problems)
        os.close(fd)
    return problems


# ---- the test hosts of tend launch: sshds, namespaces, links ----------------------------------

def _netns_hosts():
    # Imported when needed: tests/netns_hosts.py imports this module.
    import netns_hosts
    return netns_hosts


def _check_sshd():
    """sshds started for this session (their config is below the session root)."""
    root = _state.get("root")
    if not root:
        return []
    found = [p for p in _scan_procs()
             if p.state != "Z" and p.exe and os.path.basename(p.exe) == "sshd"
             and root + "/" in p.cmdline]
    problems = []
    for fd, p in _wait_for_exit(found, LEAK_GRACE):
        problems.append(f"sshd: {p.describe()} (killed)")
        try:
            signal.pidfd_send_signal(fd, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.close(fd)
    return problems


def _check_net(notes):
    netns = _netns_hosts().our_netns() - _state.get("netns", set())
    links = _netns_hosts().our_links() - _state.get("links", set())
    if not netns and not links:
        return []
    lines = [f"network namespace: {n}" for n in sorted(netns)]
    lines += [f"network link: {l}" for l in sorted(links)]
    if _other_sessions_alive():
        notes.extend(l + "; another test session is running, it may be theirs" for l in lines)
        return []
    _netns_hosts().remove_net(netns, links)
    return [l + " (removed)" for l in lines]


# ---- cgroups and /tmp ----------------------------------------------------------------------

def _cgroup_dirs():
    """(tend-* cgroups, other cgroups) below our own cgroup. Below a cgroup that is not
    tend's and was made after the session started (a benchmark's box, another tool's), the
    walk does not go: what a tend started there is not ours, and the tests make no cgroup
    other than through tend."""
    tend, other = set(), set()
    base = own_cgroup_dir()
    if base is None or not base.is_dir():
        return tend, other
    known = _state.get("other_cgroups")
    for dirpath, dirnames, _ in os.walk(base, onerror=lambda e: None):
        keep = []
        for d in dirnames:
            path = os.path.join(dirpath, d)
            if d.startswith("tend-"):
                tend.add(path)
            else:
                other.add(path)
                if known is not None and path not in known:
                    continue
            keep.append(d)
        dirnames[:] = keep
    return tend, other


def _tend_cgroups():
    return _cgroup_dirs()[0]


def _check_cgroups(notes):
    problems = []
    for path in sorted(set(_tend_cgroups()) - _state.get("cgroups", set())):
        procs = (_read(os.path.join(path, "cgroup.procs")) or "").split()
        # A cgroup carries no session marker.
        _unmarked(f"cgroup: {path}" + (f" (processes {' '.join(procs)})" if procs else
                                       " (empty)"), notes, problems)
    return problems


def _remove_dead_roots():
    """Session roots of test runs that died without cleaning up (their pid is gone)."""
    for name in os.listdir("/tmp"):
        m = re.fullmatch(ROOT_PREFIX + r"(\d+)-.*", name)
        if m and not os.path.exists(f"/proc/{m.group(1)}"):
            shutil.rmtree(os.path.join("/tmp", name), ignore_errors=True)


def _check_tmp(notes):
    root = os.path.basename(_state.get("root", ""))
    problems = []
    for name in sorted(os.listdir("/tmp")):
        if not name.startswith("tend") or name == root:
            continue
        m = re.fullmatch(ROOT_PREFIX + r"(\d+)-.*", name)
        if m and os.path.exists(f"/proc/{m.group(1)}"):
            continue  # another live session's root
        if name in _state.get("tmp_entries", set()):
            if name.startswith("tend-test"):
                notes.append(f"/tmp/{name} was already there when the session started")
            continue
        problems.append(f"temporary file: /tmp/{name}")
    return problems
