"""bench/supervision.py — benchmarks 4, 6 and 7 of bench/run: tend supervise against s6, runit
and supervisord (Debian packages), each in a cgroup of its own that the driver kills and
removes at the end.

Every service is bench/svc (static, configured through its environment; for s6 and runit the
service directory's `run` is a symlink to it); benchmark 6 uses bench/stamp, the same without
the C library, so that its start timestamp follows the exec closely. Services report to a FIFO the driver reads, so
the driver waits for events, never for a guessed time; the supervisor's own view is then
checked by its own means (tend ctl status, s6-svwait, runit's supervise/stat, supervisorctl).
Output of the services goes nowhere for every design: tend `log = none` (no pipe), s6 and runit
without a log service (the services inherit the supervisor's /dev/null), supervisord
`stdout_logfile = NONE` (it still holds a pipe per stream; that is its design). A second tend
contender, `log = inherit`, holds two pipes per service as supervisord does.
"""
import ctypes
import os
import re
import resource
import select
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time

# The fd limit every supervisor (and its services) is given: the hard limit, as high as an
# unprivileged raise goes (raising the hard limit needs CAP_SYS_RESOURCE; the driver does not
# assume it).
NOFILE = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
SVSCAN = "/usr/bin/s6-svscan"
RUNSVDIR = "/usr/bin/runsvdir"
SUPERVISORD = "/usr/bin/supervisord"
SUPERVISORCTL = "/usr/bin/supervisorctl"


def log(msg):
    print(f"  {msg}", file=sys.stderr, flush=True)


# ---- cgroup box: every process of one contender, killed and removed at the end -----------

def cgroup2_base():
    mnt = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            p = line.split()
            i = p.index("-")
            if p[i + 1] == "cgroup2":
                mnt = p[4]
                break
    if not mnt:
        return None
    with open("/proc/self/cgroup") as f:
        own = next((l.strip()[3:] for l in f if l.startswith("0::")), None)
    if own is None:
        return None
    base = os.path.normpath(mnt + "/" + own)
    if not os.access(base, os.W_OK):
        return None
    return base


_libc = ctypes.CDLL(None, use_errno=True)


def become_subreaper():
    # Orphans of a killed supervisor come back to the driver, which reaps them (reap_all).
    _libc.prctl(36, 1, 0, 0, 0)        # PR_SET_CHILD_SUBREAPER


def reap_all():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


class Box:
    """A cgroup v2 directory below the driver's: the supervisor starts in it, so everything
    it starts is in it or below it (tend makes its per-service leaves there)."""
    n = 0

    def __init__(self, base, label):
        Box.n += 1
        self.path = os.path.join(base, f"tendbench-{os.getpid()}-{Box.n}-{label}")
        os.mkdir(self.path)
        self.procs = []

    def spawn(self, argv, env=None, cwd=None, stdout=subprocess.DEVNULL, stderr=None):
        procs_file = os.path.join(self.path, "cgroup.procs")

        def pre():
            with open(procs_file, "w") as f:
                f.write("0")
            resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))
            os.setsid()
        p = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=stdout,
                             stderr=stderr if stderr is not None else subprocess.DEVNULL,
                             preexec_fn=pre)
        self.procs.append(p)
        return p

    def pids(self):
        """Every process in the box and below."""
        out = []
        for d, _, _ in os.walk(self.path):
            try:
                with open(os.path.join(d, "cgroup.procs")) as f:
                    out += [int(x) for x in f.read().split()]
            except OSError:
                pass
        return out

    def populated(self):
        with open(os.path.join(self.path, "cgroup.events")) as f:
            return "populated 1" in f.read()

    def destroy(self):
        """cgroup.kill, wait for `populated 0` (POLLPRI on cgroup.events), remove the tree."""
        try:
            with open(os.path.join(self.path, "cgroup.kill"), "w") as f:
                f.write("1")
        except OSError:
            for pid in self.pids():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        fd = os.open(os.path.join(self.path, "cgroup.events"), os.O_RDONLY | os.O_CLOEXEC)
        try:
            pl = select.poll()
            pl.register(fd, select.POLLPRI)
            deadline = time.monotonic() + 60
            while True:
                data = os.pread(fd, 4096, 0).decode()
                if "populated 0" in data or time.monotonic() > deadline:
                    break
                pl.poll(1000)
        finally:
            os.close(fd)
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        reap_all()
        for d, _, _ in sorted(os.walk(self.path), key=lambda t: -len(t[0])):
            try:
                os.rmdir(d)
            except OSError as e:
                log(f"cannot remove {d}: {e}")


# ---- the FIFO the services report to ----------------------------------------------------

class Fifo:
    def __init__(self, path):
        self.path = path
        os.mkfifo(path, 0o666)
        self.rfd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        # A writer of our own: the FIFO never reads as end-of-file between services.
        self.wfd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        self.buf = b""

    def lines(self, count, timeout, stop=None):
        """Up to `count` lines, waiting at most `timeout` seconds in all (an event wait);
        `stop(line)` may end early. Returns (lines, seconds waited)."""
        out = []
        t0 = time.monotonic()
        deadline = t0 + timeout
        pl = select.poll()
        pl.register(self.rfd, select.POLLIN)
        while len(out) < count:
            while b"\n" in self.buf and len(out) < count:
                line, self.buf = self.buf.split(b"\n", 1)
                out.append((time.monotonic(), line.decode()))
                if stop and stop(out[-1][1]):
                    return out, time.monotonic() - t0
            if len(out) >= count:
                break
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if pl.poll(left * 1000):
                try:
                    self.buf += os.read(self.rfd, 1 << 16)
                except BlockingIOError:
                    pass
        return out, time.monotonic() - t0

    def close(self):
        os.close(self.rfd)
        os.close(self.wfd)
        os.unlink(self.path)


# ---- inotify, to wait for runit's supervise/stat files (ctypes: no module for it) ---------

IN_CLOSE_WRITE, IN_MOVED_TO, IN_CREATE = 0x8, 0x80, 0x100


def wait_files(paths, ok, timeout):
    """Wait until ok(content) holds for every file in paths: each file's directory is watched
    with inotify and the files of a directory are read again when it has an event. Returns the
    paths for which it never held."""
    def check(p):
        try:
            with open(p) as f:
                return ok(f.read())
        except OSError:
            return False
    left = {p for p in paths if not check(p)}
    if not left:
        return []
    fd = _libc.inotify_init1(os.O_CLOEXEC | os.O_NONBLOCK)
    if fd < 0:
        raise OSError(ctypes.get_errno(), "inotify_init1")
    try:
        by_wd = {}
        for p in left:
            wd = _libc.inotify_add_watch(fd, os.path.dirname(p).encode(),
                                         IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE)
            if wd < 0:
                raise OSError(ctypes.get_errno(), f"inotify_add_watch {p}")
            by_wd.setdefault(wd, set()).add(p)
        left = {p for p in left if not check(p)}      # a change before the watch
        pl = select.poll()
        pl.register(fd, select.POLLIN)
        deadline = time.monotonic() + timeout
        while left and time.monotonic() < deadline:
            if not pl.poll(max(0, deadline - time.monotonic()) * 1000):
                continue
            try:
                data = os.read(fd, 1 << 16)
            except BlockingIOError:
                continue
            i, wds = 0, set()
            while i + 16 <= len(data):
                wd, _, _, ln = struct.unpack_from("iIII", data, i)
                wds.add(wd)
                i += 16 + ln
            for wd in wds:
                for p in list(by_wd.get(wd, ())):
                    if p in left and check(p):
                        left.discard(p)
        return sorted(left)
    finally:
        os.close(fd)


# ---- the designs ------------------------------------------------------------------------

def names(n):
    return [f"s{i:05d}" for i in range(n)]


class Design:
    """One supervisor design running `n` services of bench/svc in `mode`."""
    label = ""
    has_readiness = False

    def __init__(self, a, tmp, box, n, mode, extra_env):
        self.a, self.tmp, self.box, self.n, self.mode = a, tmp, box, n, mode
        self.svc = os.path.join(a.bench_dir, "svc")
        self.env = dict(os.environ, BENCH_SVC_MODE=mode, **extra_env)
        self.env.pop("NOTIFY_SOCKET", None)
        self.proc = None

    def start(self):
        raise NotImplementedError

    def confirm_up(self, timeout):
        """After every service reported: does the supervisor see them all up? Returns the
        number it does not (0 = all)."""
        return 0

    def wait_ready(self, timeout):
        """benchmark 7: return when the supervisor knows every service is ready."""
        raise NotImplementedError


class Tend(Design):
    label = "tend"
    has_readiness = True
    log_kind = "none"

    def write_conf(self, restart=False):
        conf = os.path.join(self.tmp, "tend.conf")
        with open(conf, "w") as f:
            for nm in names(self.n):
                f.write(f"[service {nm}]\ncommand = {self.svc}\nlog = {self.log_kind}\n")
                if restart:
                    f.write("restart = always\nrestart-delay = 0\nstart-limit = none\n")
                if self.mode == "ready":
                    f.write("ready = notify\n")
                f.write("\n")
        return conf

    def start(self, restart=False):
        conf = self.write_conf(restart)
        self.rt = os.path.join(self.tmp, "rt")
        os.mkdir(self.rt)
        self.ctl = os.path.join(self.rt, "control")
        self.stderr_path = os.path.join(self.tmp, "tend.stderr")
        argv = [os.path.join(self.a.build, "tend"), "supervise", "--runtime-dir", self.rt] + \
               (["--no-cgroup"] if getattr(self, "no_cgroup", False) else []) + [conf]
        if self.mode == "ready":
            # Readiness is read from tend's own report of each transition, as it happens.
            self.proc = self.box.spawn(argv, env=self.env, stderr=subprocess.PIPE)
        else:
            self.errf = open(self.stderr_path, "wb")
            self.proc = self.box.spawn(argv, env=self.env, stderr=self.errf)
            self.errf.close()

    def confirm_up(self, timeout):
        # tend's own report of each transition (its stderr), then `tend ctl wait` for any
        # service not reported running yet (answered on the change, no polling). Not `tend ctl
        # status`: with --no-cgroup it lists each service's processes from /proc, which took
        # over 120 s for 1,000 services here.
        pat = re.compile(r"^tend: svc '([^']+)': \S+ -> (\S+)")
        state = {}
        with open(self.stderr_path, errors="replace") as f:
            for line in f:
                m = pat.match(line)
                if m:
                    state[m.group(1)] = m.group(2)
        not_up = [nm for nm in names(self.n) if state.get(nm) != "running"]
        failed = 0
        for nm in not_up:
            r = subprocess.run([os.path.join(self.a.build, "tend"), "ctl", "--control", self.ctl,
                                "wait", "--timeout", f"{int(timeout)}s", nm, "running"],
                               stdout=subprocess.DEVNULL, timeout=timeout + 10)
            failed += r.returncode != 0
        return failed

    def wait_ready(self, timeout):
        pat = re.compile(rb"^tend: svc '([^']+)': \S+ -> running")
        seen = set()
        fd = self.proc.stderr.fileno()
        buf = b""
        deadline = time.monotonic() + timeout
        pl = select.poll()
        pl.register(fd, select.POLLIN)
        while len(seen) < self.n and time.monotonic() < deadline:
            if not pl.poll(max(0, deadline - time.monotonic()) * 1000):
                continue
            d = os.read(fd, 1 << 16)
            if not d:
                break
            buf += d
            *lines, buf = buf.split(b"\n")
            for line in lines:
                m = pat.match(line)
                if m:
                    seen.add(m.group(1))
        return len(seen) == self.n


class TendInherit(Tend):
    label = "tend (log = inherit)"
    log_kind = "inherit"


class TendNoCgroup(Tend):
    """tend supervise --no-cgroup: a process group per service, one fd (the pidfd) each."""
    label = "tend --no-cgroup"
    no_cgroup = True


class S6(Design):
    label = "s6"
    has_readiness = True
    binary = SVSCAN

    def start(self, restart=False):
        self.scan = os.path.join(self.tmp, "scan")
        os.mkdir(self.scan)
        self.dirs = []
        for nm in names(self.n):
            d = os.path.join(self.scan, nm)
            os.mkdir(d)
            os.symlink(self.svc, os.path.join(d, "run"))
            if self.mode == "ready":
                with open(os.path.join(d, "notification-fd"), "w") as f:
                    f.write("3\n")
            self.dirs.append(d)
        env = dict(self.env)
        if self.mode == "ready":
            env["BENCH_READY_FD"] = "3"
        # -t0: no periodic rescan (the default of 2.11 too); -c: room for every service.
        self.proc = self.box.spawn([SVSCAN, "-t0", f"-c{max(1000, 2 * self.n)}", self.scan],
                                   env=env)

    # One s6-svwait subscribes to at most 1,000 services (seen: "unable to subscribe to events
    # for .../s01000: Too many open files in system" for 10,000); the states waited for hold
    # once reached, so groups of 1,000 one after another wait for all of them.
    SVWAIT_MAX = 1000

    def svwait(self, flag, timeout):
        deadline = time.monotonic() + timeout
        for i in range(0, len(self.dirs), self.SVWAIT_MAX):
            left = max(1, int((deadline - time.monotonic()) * 1000))
            r = subprocess.run(["s6-svwait", flag, "-a", "-t", str(left)] +
                               self.dirs[i:i + self.SVWAIT_MAX], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE,
                               preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE,
                                                                     (NOFILE, NOFILE)))
            if r.returncode != 0:
                log(f"s6-svwait {flag}: exit {r.returncode}: {r.stderr.decode()[:200]}")
                return False
        return True

    def confirm_up(self, timeout):
        return 0 if self.svwait("-u", timeout) else self.n

    def wait_ready_after_reports(self, timeout):
        return self.svwait("-U", timeout)


class Runit(Design):
    label = "runit"

    def start(self, restart=False):
        self.scan = os.path.join(self.tmp, "service")
        os.mkdir(self.scan)
        for nm in names(self.n):
            d = os.path.join(self.scan, nm)
            os.mkdir(d)
            os.symlink(self.svc, os.path.join(d, "run"))
        self.proc = self.box.spawn([RUNSVDIR, "-P", self.scan], env=self.env)

    def confirm_up(self, timeout):
        stats = [os.path.join(self.scan, nm, "supervise", "stat") for nm in names(self.n)]
        return len(wait_files(stats, lambda s: s.startswith("run"), timeout))


class Supervisord(Design):
    label = "supervisord"

    def start(self, restart=False):
        self.conf = os.path.join(self.tmp, "supervisord.conf")
        sock = os.path.join(self.tmp, "supervisor.sock")
        with open(self.conf, "w") as f:
            f.write(f"[supervisord]\nnodaemon = true\nlogfile = {self.tmp}/supervisord.log\n"
                    f"pidfile = {self.tmp}/supervisord.pid\nchildlogdir = {self.tmp}\n"
                    f"minfds = {min(NOFILE, 6 * self.n + 1024)}\nminprocs = 200\n"
                    f"[unix_http_server]\nfile = {sock}\n"
                    "[rpcinterface:supervisor]\nsupervisor.rpcinterface_factory = "
                    "supervisor.rpcinterface:make_main_rpcinterface\n"
                    f"[supervisorctl]\nserverurl = unix://{sock}\n")
            for nm in names(self.n):
                f.write(f"[program:{nm}]\ncommand = {self.svc}\nautostart = true\n"
                        f"autorestart = true\nstartsecs = {1 if restart else 0}\n"
                        "stdout_logfile = NONE\nstderr_logfile = NONE\n")
        self.proc = self.box.spawn([SUPERVISORD, "-c", self.conf], env=self.env)

    def confirm_up(self, timeout):
        # supervisord moves a program to RUNNING in its main loop; each request wakes that
        # loop, so asking again is paced by supervisord itself (no sleep here).
        deadline = time.monotonic() + timeout
        running = 0
        while time.monotonic() < deadline:
            r = subprocess.run([SUPERVISORCTL, "-c", self.conf, "status"],
                               stdout=subprocess.PIPE, text=True, timeout=timeout)
            running = sum(1 for l in r.stdout.splitlines() if " RUNNING " in l)
            if running == self.n:
                return 0
        return self.n - running


DESIGNS = {"tend": Tend, "tend-inherit": TendInherit, "tend-nocg": TendNoCgroup, "s6": S6,
           "runit": Runit, "supervisord": Supervisord}

# File descriptors tend holds per idle service: the pidfd (with a cgroup too: its directory is
# opened for the spawn only, cgroup.events only while leftovers are waited for); with
# log = inherit both ends of two pipes more (seen: 5 per service). Above the fd limit tend
# cannot start every service (seen, when a cgroup cost two fds more: EMFILE at clone for
# 10,000 services under a 20,000 limit).
TEND_FDS_PER_SERVICE = {"tend": 1, "tend-inherit": 5, "tend-nocg": 1}


# supervisord holds three pipe ends per program (stdin, stdout, stderr; also with
# stdout_logfile = NONE): seen 305 fds for 100 programs.
FDS_PER_SERVICE = dict(TEND_FDS_PER_SERVICE, supervisord=3)
# runsvdir starts at most 1000 runsv (seen: 1000 of 1100 service directories).
RUNSVDIR_MAX = 1000


def cannot_run(design, n):
    per = FDS_PER_SERVICE.get(design)
    if per and per * n + 100 > NOFILE:
        return (f"needs about {per * n} fds ({per} per service), RLIMIT_NOFILE hard limit is "
                f"{NOFILE} (raising it needs CAP_SYS_RESOURCE, which this root lacks)")
    if design == "runit" and n > RUNSVDIR_MAX:
        return f"runsvdir runs at most {RUNSVDIR_MAX} services (seen: 1000 of 1100 started)"
    return None
PEER_BINARIES = {"s6": SVSCAN, "runit": RUNSVDIR, "supervisord": SUPERVISORD}


def available(names_):
    out = []
    for d in names_:
        b = PEER_BINARIES.get(d)
        if b and not os.path.exists(b):
            log(f"{d}: {b} missing (apt-get install -y "
                f"{ {'s6': 's6', 'runit': 'runit', 'supervisord': 'supervisor'}[d]}): skipped")
            continue
        out.append(d)
    return out


# ---- /proc readings ---------------------------------------------------------------------

def smaps(pid):
    out = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                k, _, v = line.partition(":")
                if v.strip().endswith("kB"):
                    out[k] = int(v.split()[0])
    except OSError:
        return None
    return out


def ctxt(pid):
    v = n = None
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("voluntary_ctxt_switches:"):
                    v = int(line.split()[1])
                elif line.startswith("nonvoluntary_ctxt_switches:"):
                    n = int(line.split()[1])
    except OSError:
        return None
    return (v or 0) + (n or 0)


def comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


# ---- 4. supervision at scale ------------------------------------------------------------

def scale_once(a, base, design, n, window):
    tmp = tempfile.mkdtemp(prefix="bench-sup-")
    box = Box(base, design)
    fifo = Fifo(os.path.join(tmp, "reports"))
    d = DESIGNS[design](a, tmp, box, n, "idle", {"BENCH_FIFO": fifo.path})
    row = {"design": design, "n": n}
    try:
        t0 = time.monotonic()
        d.start()
        timeout = 60 + n * 0.03
        got, _ = fifo.lines(n, timeout)
        svc_pids = {int(l.split()[1]) for _, l in got}
        row["services_reported"] = len(svc_pids)
        row["start_seconds"] = round(time.monotonic() - t0, 3)
        if len(svc_pids) < n:
            row["error"] = f"only {len(svc_pids)} of {n} services started within {timeout:.0f} s"
            log(f"{design} n={n}: {row['error']}")
            return row
        missing = d.confirm_up(120)
        if missing:
            row["error"] = f"{missing} of {n} services not up as the supervisor sees them"
            log(f"{design} n={n}: {row['error']}")
            return row
        row["confirm_seconds"] = round(time.monotonic() - t0, 3)
        pids = [p for p in box.pids() if p not in svc_pids]
        row["processes"] = len(pids)
        row["process_names"] = sorted({comm(p) for p in pids})
        mem = {"Rss": 0, "Pss": 0, "Private": 0}
        for p in pids:
            m = smaps(p) or {}
            mem["Rss"] += m.get("Rss", 0)
            mem["Pss"] += m.get("Pss", 0)
            mem["Private"] += m.get("Private_Clean", 0) + m.get("Private_Dirty", 0)
        row["kib"] = mem
        before = {p: ctxt(p) for p in pids}
        tw = time.monotonic()
        time.sleep(window)                  # the idle window itself
        secs = time.monotonic() - tw
        after = {p: ctxt(p) for p in pids}
        gone = [p for p in pids if after[p] is None]
        woke = sum(after[p] - before[p] for p in pids if after[p] is not None)
        more, _ = fifo.lines(1 << 30, 0)
        row.update(window_s=round(secs, 1), wakeups=woke,
                   wakeups_per_min=woke * 60 / secs,
                   woken_processes=sum(1 for p in pids if after[p] is not None and
                                       after[p] != before[p]),
                   exited_in_window=len(gone), restarts_in_window=len(more))
        return row
    finally:
        box.destroy()
        fifo.close()
        shutil.rmtree(tmp, ignore_errors=True)


def bench_scale(a, res, h):
    base = cgroup2_base()
    if os.geteuid() != 0 or not base:
        print("\n4. supervision at scale: skipped (needs root and a writable cgroup v2 "
              "hierarchy to contain and clean up every peer)")
        return
    become_subreaper()
    sizes = [int(x) for x in a.scale_sizes.split(",")]
    designs = available(a.scale_designs.split(","))
    window = a.idle_window
    rows = []
    for rnd in range(a.scale_rounds):
        for n in sizes:
            for design in h.rotate(designs, rnd):
                why = cannot_run(design, n)
                if why:
                    log(f"scale: {design} at {n} services skipped: {why}")
                    rows.append({"design": design, "n": n, "round": rnd, "error": why})
                    continue
                log(f"scale round {rnd + 1}/{a.scale_rounds}: {design}, {n} services, "
                    f"{window:.0f} s idle window")
                try:
                    row = scale_once(a, base, design, n, window)
                except Exception as e:          # one design's failure does not end the run
                    row = {"design": design, "n": n, "error": f"{type(e).__name__}: {e}"}
                    log(f"{design} n={n}: {row['error']}")
                row["round"] = rnd
                rows.append(row)
    res["scale"] = {"sizes": sizes, "window_s": window, "rounds": a.scale_rounds,
                    "logs": "tend log=none (and log=inherit as tend-inherit); s6, runit "
                            "without a logger; supervisord stdout/stderr_logfile=NONE",
                    "rows": rows}
    print(f"\n4. supervision at scale — idle services (bench/svc); memory of every process "
          f"the design needs (not the services), from smaps_rollup; wake-ups = voluntary + "
          f"involuntary context switches of those processes over a {window:.0f} s idle "
          f"window, per minute; median over {a.scale_rounds} round(s)")
    head = ["design", "services", "procs", "Pss KiB/svc", "Private KiB/svc", "Pss total MiB",
            "wake-ups/min", "woken procs", "start s", "Pss/svc vs tend"]
    body = []
    for n in sizes:
        tend_pss = None
        by = {}
        for design in designs:
            rs = [r for r in rows if r["design"] == design and r["n"] == n]
            ok = [r for r in rs if "error" not in r]
            if not ok:
                by[design] = None
                continue
            med = lambda f: statistics.median(f(r) for r in ok)
            by[design] = {"procs": med(lambda r: r["processes"]),
                          "pss": med(lambda r: r["kib"]["Pss"] / n),
                          "priv": med(lambda r: r["kib"]["Private"] / n),
                          "pss_total": med(lambda r: r["kib"]["Pss"] / 1024),
                          "wake": med(lambda r: r["wakeups_per_min"]),
                          "woken": med(lambda r: r["woken_processes"]),
                          "start": med(lambda r: r["start_seconds"])}
        if by.get("tend"):
            tend_pss = by["tend"]["pss"]
        for design in designs:
            b = by.get(design)
            if b is None:
                err = next((r.get("error") for r in rows if r["design"] == design and
                            r["n"] == n), "")
                body.append([design, n, "—", "—", "—", "—", "—", "—", "—", err])
                continue
            body.append([design, n, f"{b['procs']:.0f}", f"{b['pss']:.1f}", f"{b['priv']:.1f}",
                         f"{b['pss_total']:.1f}", f"{b['wake']:.1f}", f"{b['woken']:.0f}",
                         f"{b['start']:.2f}",
                         f"{b['pss'] / tend_pss:.1f}x" if tend_pss else ""])
        res["scale"].setdefault("summary", {})[str(n)] = by
    h.print_rows(head, body)
    summ = res["scale"]["summary"]
    parts = []
    for design in designs:
        ran = [n for n in sizes if summ.get(str(n), {}).get(design)]
        if len(ran) >= 2:
            lo, hi = min(ran), max(ran)
            m = (summ[str(hi)][design]["pss_total"] - summ[str(lo)][design]["pss_total"]) * \
                1024 / (hi - lo)
            res["scale"].setdefault("marginal_pss_kib", {})[design] = \
                {"from": lo, "to": hi, "kib": m}
            parts.append(f"{design} {m:.1f} ({lo}->{hi})")
    if parts:
        print("  marginal Pss per added service, KiB: " + ", ".join(parts))
    for design in ("tend", "tend-nocg"):
        ran = [n for n in sizes if summ.get(str(n), {}).get(design)]
        if not ran:
            continue
        t = summ[str(max(ran))][design]
        h.target(res["scale"], f"4. supervision at scale ({design})",
                 "10,000 services: <= 1 KiB of tend's memory per service, 0 wake-ups/min at idle",
                 t['pss'] <= 1 and t['wake'] == 0 and max(ran) >= 10000,
                 f"{design} at {max(ran)} services: Pss {t['pss']:.1f} KiB/svc "
                 f"(private {t['priv']:.1f}), {t['wake']:.1f} wake-ups/min")


# ---- 6. restart latency -----------------------------------------------------------------

class Bare(Design):
    label = "bare"

    def start(self, restart=True):
        self.proc = self.box.spawn([os.path.join(self.a.bench_dir, "svc"), "loop", self.svc],
                                   env=self.env)


def restart_once(a, base, design, restarts, run_ms):
    tmp = tempfile.mkdtemp(prefix="bench-rst-")
    box = Box(base, design)
    fifo = Fifo(os.path.join(tmp, "reports"))
    cls = Bare if design == "bare" else DESIGNS[design]
    d = cls(a, tmp, box, 1, "restart", {"BENCH_FIFO": fifo.path, "BENCH_RUN_MS": str(run_ms)})
    d.svc = os.path.join(a.bench_dir, "stamp")       # no libc start-up before the timestamp
    try:
        d.start(restart=True)
        # start, exit, start, exit, ..., start: 2 * restarts + 1 reports.
        got, _ = fifo.lines(2 * restarts + 1, 30 + restarts * (run_ms / 1000 + 5))
        ev = [l.split() for _, l in got]
        lat = []
        for i in range(len(ev) - 1):
            if ev[i][0] == "exit" and ev[i + 1][0] == "start" and ev[i][2] != ev[i + 1][2]:
                lat.append((int(ev[i + 1][1]) - int(ev[i][1])) / 1e6)
        if len(lat) < restarts:
            log(f"{design}: {len(lat)} of {restarts} restarts seen")
        return lat
    finally:
        box.destroy()
        fifo.close()
        shutil.rmtree(tmp, ignore_errors=True)


def bench_restart(a, res, h):
    base = cgroup2_base()
    if os.geteuid() != 0 or not base:
        print("\n6. restart latency: skipped (needs root and a writable cgroup v2 hierarchy)")
        return
    become_subreaper()
    designs = ["bare"] + available(["tend", "s6", "runit", "supervisord"])
    restarts = a.restarts
    run_ms = 1100
    out = {d: [] for d in designs}
    for rnd in range(a.rounds):
        for d in h.rotate(designs, rnd):
            out[d] += restart_once(a, base, d, restarts, run_ms)
        log(f"restart round {rnd + 1}/{a.rounds} done")
    rows = []
    for d in designs:
        if not out[d]:
            continue
        s = h.summarize(out[d])
        rows.append((d if d != "bare" else "bare (waitpid + posix_spawn)", s, {}))
    # Not paired sample by sample (the restarts of one round are not simultaneous): the ratio
    # is of medians.
    for _, s, _ in rows:
        s["samples_paired"] = False
    h.table(f"6. restart latency — service runs {run_ms} ms then exits 0; ms from its exit "
            f"(timestamp just before exit) to the next start (bench/stamp: timestamp first thing "
            f"in _start, no libc); "
            f"{a.rounds} rounds x {restarts} restarts", "ms", rows,
            "bare (waitpid + posix_spawn)", unpaired=True)
    res["restart"] = {"unit": "ms", "run_ms": run_ms, "restarts_per_round": restarts,
                      "ref": "bare (waitpid + posix_spawn)",
                      "contenders": {n: s for n, s, _ in rows}}
    t = next((s for n, s, _ in rows if n == "tend"), None)
    if t:
        h.target(res["restart"], "6. restart latency",
                 "exit -> next exec below 1 ms at zero restart delay", t["median"] < 1,
                 f"median {t['median']:.3f} ms")


# ---- 7. startup of many services with readiness -----------------------------------------

def startup_once(a, base, design, n):
    tmp = tempfile.mkdtemp(prefix="bench-up-")
    box = Box(base, design)
    fifo = Fifo(os.path.join(tmp, "reports"))
    d = DESIGNS[design](a, tmp, box, n, "ready", {"BENCH_FIFO": fifo.path})
    try:
        t0 = time.monotonic()
        d.start()
        if design == "tend":
            ok = d.wait_ready(60 + n * 0.05)
            t_sup = time.monotonic() - t0
            got, _ = fifo.lines(n, 30)
        else:
            got, _ = fifo.lines(n, 60 + n * 0.05)
            ok = len(got) == n and d.wait_ready_after_reports(60)
            t_sup = time.monotonic() - t0
        t_svc = (got[-1][0] - t0) if len(got) == n else None
        return {"ok": ok and len(got) == n, "supervisor_s": t_sup, "services_s": t_svc}
    finally:
        box.destroy()
        fifo.close()
        shutil.rmtree(tmp, ignore_errors=True)


def bench_startup(a, res, h):
    base = cgroup2_base()
    if os.geteuid() != 0 or not base:
        print("\n7. startup: skipped (needs root and a writable cgroup v2 hierarchy)")
        return
    become_subreaper()
    n = a.startup_n
    designs = available(["tend", "s6"])
    out = {d: [] for d in designs}
    for rnd in range(a.rounds):
        for d in h.rotate(designs, rnd):
            r = startup_once(a, base, d, n)
            if not r["ok"]:
                log(f"{d}: not every service became ready: {r}")
                continue
            out[d].append(r)
        log(f"startup round {rnd + 1}/{a.rounds} done")
    rows = []
    for d in designs:
        if not out[d]:
            continue
        s = h.summarize([r["supervisor_s"] for r in out[d]])
        s["services_signalled"] = h.summarize([r["services_s"] for r in out[d]])
        rows.append((d, s, {"all services signalled s":
                            f"{s['services_signalled']['median']:.3f}"}))
    h.table(f"7. startup of {n} services with readiness — seconds from starting the "
            f"supervisor until it knows every service is ready (tend: sd_notify READY=1, its "
            f"'-> running' lines; s6: notification-fd 3, then s6-svwait -U -a); "
            f"{a.rounds} rounds", "s", rows, "tend", ("all services signalled s",))
    print("  not compared: runit and supervisord have no readiness protocol (runit's ./check "
          "is polled by sv; supervisord's startsecs is a timer); dinit is not in Debian 12")
    res["startup"] = {"unit": "s", "n": n, "ref": "tend",
                      "contenders": {nm: s for nm, s, _ in rows},
                      "not_compared": ["runit (no readiness)", "supervisord (no readiness)",
                                       "dinit (not packaged in Debian 12)"]}
