"""Hosts for the tests of `tend launch`, made on this machine out of network namespaces.

A Site is N "hosts": network namespaces joined by veth pairs to a bridge in the root
namespace, each with its own IPv4 address; the bridge holds the launcher's address. Optionally
each namespace runs its own sshd on its address, so the default ssh agent template of `tend
launch` is used for real.

    site = Site(tmp, 4, sshd=True)          # needs root, ip (iproute2), sshd for sshd=True
    site.names                              # ["tend-1a2-h0", ...]: also the -H host names
    site.cut(1)                             # the link of host 1 goes down (its veth)
    site.wrap(argv)                         # argv run with the site's ssh configuration
    site.close()                            # always (the `site` fixture does it)

Names. Everything a Site makes starts with "tend-" and carries the site's id, three hex
digits: bridge tend-bID, root-side veths tend-IDhI, namespaces tend-ID-hI (inside, the veth
is eth0). The id is claimed by creating the bridge (atomic: a second session trying the same
id fails with EEXIST and picks another), so several sites, in one session or in sessions run
side by side, never share names. Leftovers of a dead run with the same id are removed when the
id is claimed (nobody else can hold it then). conftest.py's leak check reports any tend-*
namespace or link a session leaves, and any sshd it started.

Addresses. 198.18.0.0/15 (RFC 2544, benchmarking: unlikely to be in use) holds 512 /24s; site
id ID gets 198.18.0.0 + ID*256 /24: .1 on the bridge (the launcher), .10+I for host I.

"Cannot call back": a host made with `isolated` has a namespace with only loopback up, no
veth: an agent started in it with `ip netns exec` starts, but nothing it tries reaches the
launcher.

ssh. With sshd=True each host's namespace runs `sshd -D -e` on its address (port 22), with its
own host key, a config in the site's directory (UsePAM no, StrictModes no, PidFile none, an
authorized_keys file of the site's own key). OpenSSH's client finds ~/.ssh through the
password database, not $HOME, so the client side cannot be pointed at a temporary home by the
environment: site.wrap(argv) runs argv in a private mount namespace where root's home
directory is the site's home (`unshare --mount`, then a bind mount), holding .ssh/config (each
host name -> its address, user root), the client key and known_hosts with every host's key.
The sshds run under the same bind mount, so an agent that runs ssh on a "remote" host (tree
mode) finds the same configuration. The true default agent template of `tend launch` is
then used unchanged.

Nothing here sleeps: sshd is ready when it logs "Server listening", read from its stderr by a
thread; processes are waited for through pidfds with a deadline.
"""

import ipaddress
import os
import pwd
import random
import select
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import child_env

PREFIX = "tend-"
NET_BASE = ipaddress.IPv4Address("198.18.0.0")
SITE_IDS = 512
IP = shutil.which("ip") or "/usr/sbin/ip"
SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
TIMEOUT = 20


def require_ip():
    if os.geteuid() != 0:
        pytest.skip(f"needs root to make network namespaces (running as uid {os.geteuid()})")
    if not os.access(IP, os.X_OK):
        pytest.skip("needs ip (Debian package iproute2)")
    for tool in ("unshare",):
        if not shutil.which(tool):
            pytest.skip(f"needs {tool} (Debian package util-linux)")


def require_sshd():
    require_ip()
    if not os.access(SSHD, os.X_OK):
        pytest.skip("needs sshd (Debian package openssh-server; scripts/deps.sh installs it)")
    for tool in ("ssh", "ssh-keygen"):
        if not shutil.which(tool):
            pytest.skip(f"needs {tool} (Debian package openssh-client)")


def _ip_batch(commands, netns=None, check=True):
    """Run ip commands in one process (`ip -batch -`); -force goes on after an error."""
    argv = [IP]
    if netns:
        argv += ["-n", netns]
    argv += ["-force", "-batch", "-"] if not check else ["-batch", "-"]
    r = subprocess.run(argv, input="\n".join(commands) + "\n", capture_output=True, text=True,
                       timeout=TIMEOUT)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr.strip()}\n"
                           + "\n".join(commands))
    return r


def netns_inode(name):
    try:
        st = os.stat(f"/run/netns/{name}")
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def pids_in_netns(inodes):
    """{inode: [pid, ...]} of every process whose network namespace is one of `inodes` (what
    `ip netns pids` does, for many namespaces in one scan of /proc)."""
    found = {i: [] for i in inodes}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            st = os.stat(f"/proc/{name}/ns/net")
        except OSError:
            continue
        key = (st.st_dev, st.st_ino)
        if key in found:
            found[key].append(int(name))
    return found


def describe(pid):
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return f"pid {pid} (gone)"
    return f"pid {pid}: " + raw.rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")


def wait_gone(pids, timeout):
    """Wait until every pid has exited or timeout seconds passed (pidfds, no polling).
    Returns the pids still alive."""
    fds = {}
    for pid in pids:
        try:
            fds[os.pidfd_open(pid)] = pid
        except OSError:
            pass
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    pending = set(fds)
    deadline = time.monotonic() + timeout
    while pending:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        for fd, _ in poller.poll(left * 1000):
            poller.unregister(fd)
            pending.discard(fd)
    alive = [fds[fd] for fd in pending]
    for fd in fds:
        os.close(fd)
    return alive


def kill_pids(pids):
    for pid in pids:
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            continue
        try:
            signal.pidfd_send_signal(fd, signal.SIGKILL)
        except OSError:
            pass
        os.close(fd)


class Host:
    def __init__(self, site, index, isolated):
        self.site = site
        self.index = index
        self.isolated = isolated
        self.name = f"{PREFIX}{site.id:03x}-h{index}"     # namespace and -H name
        self.veth = f"{PREFIX}{site.id:03x}h{index}"      # root side (<= 15 bytes)
        self.addr = None if isolated else str(site.net.network_address + 10 + index)
        self.sshd = None

    def __repr__(self):
        return f"Host({self.name}, {self.addr})"


class Sshd:
    """One sshd -D -e in a host's namespace; ready once it logs 'Server listening'."""

    def __init__(self, host, argv):
        self.host = host
        self.lines = []
        self.cond = threading.Condition()
        self.eof = False
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, env=child_env())
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for line in self.proc.stderr:
            with self.cond:
                self.lines.append(line.decode(errors="replace").rstrip("\n"))
                self.cond.notify_all()
        with self.cond:
            self.eof = True
            self.cond.notify_all()

    def wait_listening(self, timeout=TIMEOUT):
        deadline = time.monotonic() + timeout
        with self.cond:
            while not any("Server listening" in l for l in self.lines):
                left = deadline - time.monotonic()
                if self.eof or left <= 0:
                    raise RuntimeError(f"sshd for {self.host.name} did not start "
                                       f"(exit {self.proc.poll()}):\n" + "\n".join(self.lines))
                self.cond.wait(left)

    def log(self):
        with self.cond:
            return "\n".join(self.lines)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.thread.join(5)
        self.proc.stderr.close()


class Site:
    def __init__(self, tmp, n, *, sshd=False, isolated=()):
        require_sshd() if sshd else require_ip()
        self.dir = Path(tmp) / "site"
        self.dir.mkdir()
        self.ssh = sshd
        self.hosts = []
        self.bridge = None
        self.closed = False
        self._claim_id()
        try:
            self.hosts = [Host(self, i, i in isolated) for i in range(n)]
            self._make_network()
            if sshd:
                self._start_sshds()
        except BaseException:
            self.close(check=False)
            raise

    # -- set-up --------------------------------------------------------------------------------

    def _claim_id(self):
        ids = list(range(SITE_IDS))
        random.SystemRandom().shuffle(ids)
        for site_id in ids:
            name = f"{PREFIX}b{site_id:03x}"
            r = subprocess.run([IP, "link", "add", name, "type", "bridge"],
                               capture_output=True, text=True, timeout=TIMEOUT)
            if r.returncode == 0:
                self.id, self.bridge = site_id, name
                self.net = ipaddress.IPv4Network(f"{NET_BASE + site_id * 256}/24")
                self.gateway = str(self.net.network_address + 1)
                self._remove_stale()
                return
            if "exists" not in r.stderr:
                raise RuntimeError(f"ip link add {name} type bridge: {r.stderr.strip()}")
        raise RuntimeError("no free site id: 512 tend-b* bridges exist")

    def _remove_stale(self):
        """Namespaces and links with our id left by a dead run (we hold the id now)."""
        tag = f"{PREFIX}{self.id:03x}"
        cmds = []
        for name in os.listdir("/sys/class/net"):
            if name.startswith(tag + "h"):
                cmds.append(f"link del {name}")
        for name in (os.listdir("/run/netns") if os.path.isdir("/run/netns") else []):
            if name.startswith(tag + "-"):
                kill_pids(pids_in_netns([netns_inode(name)]).get(netns_inode(name), []))
                cmds.append(f"netns del {name}")
        if cmds:
            _ip_batch(cmds, check=False)

    def _make_network(self):
        root = [f"addr add {self.gateway}/24 dev {self.bridge}", f"link set {self.bridge} up"]
        for h in self.hosts:
            root.append(f"netns add {h.name}")
            if not h.isolated:
                root += [f"link add {h.veth} type veth peer name eth0 netns {h.name}",
                         f"link set {h.veth} master {self.bridge}",
                         f"link set {h.veth} up"]
        _ip_batch(root)
        for h in self.hosts:
            cmds = ["link set lo up"]
            if not h.isolated:
                cmds += [f"addr add {h.addr}/24 dev eth0", "link set eth0 up"]
            _ip_batch(cmds, netns=h.name)
        self.inodes = {h.name: netns_inode(h.name) for h in self.hosts}

    def _start_sshds(self):
        self.home = self.dir / "home"
        ssh_dir = self.home / ".ssh"
        ssh_dir.mkdir(parents=True)
        os.chmod(self.home, 0o700)
        os.chmod(ssh_dir, 0o700)
        keygens = [subprocess.Popen(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C",
                                     "tend-tests", "-f", str(ssh_dir / "id_ed25519")],
                                    stdin=subprocess.DEVNULL)]
        for h in self.hosts:
            keygens.append(subprocess.Popen(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", h.name,
                 "-f", str(self.dir / f"hostkey-{h.index}")], stdin=subprocess.DEVNULL))
        for k in keygens:
            if k.wait(TIMEOUT) != 0:
                raise RuntimeError(f"ssh-keygen failed: {k.args}")
        shutil.copy(ssh_dir / "id_ed25519.pub", self.dir / "authorized_keys")
        known, config = [], ["Host *", "  User root", "  GlobalKnownHostsFile /dev/null",
                             "  LogLevel ERROR", ""]
        for h in self.hosts:
            if h.isolated:
                continue
            pub = (self.dir / f"hostkey-{h.index}.pub").read_text().split()
            known.append(f"{h.addr} {pub[0]} {pub[1]}")
            config += [f"Host {h.name}", f"  HostName {h.addr}", ""]
        (ssh_dir / "known_hosts").write_text("\n".join(known) + "\n")
        (ssh_dir / "config").write_text("\n".join(config))
        # sshd refuses to start without its privilege separation directory, which the
        # package's tmpfiles.d entry makes at boot (not at installation without systemd).
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        for h in self.hosts:
            if h.isolated:
                continue
            cfg = self.dir / f"sshd_config-{h.index}"
            cfg.write_text("\n".join([
                f"ListenAddress {h.addr}", "Port 22",
                f"HostKey {self.dir}/hostkey-{h.index}",
                f"AuthorizedKeysFile {self.dir}/authorized_keys",
                "UsePAM no", "StrictModes no", "PidFile none", "PermitRootLogin yes",
                "PasswordAuthentication no", "KbdInteractiveAuthentication no",
                "UseDNS no", "PrintMotd no", "PrintLastLog no", "X11Forwarding no",
                "MaxStartups 100", "MaxSessions 100", "LogLevel INFO", ""]))
            h.sshd = Sshd(h, self.wrap([IP, "netns", "exec", h.name, SSHD, "-D", "-e",
                                        "-f", str(cfg)]))
        for h in self.hosts:
            if h.sshd:
                h.sshd.wait_listening()

    # -- use -----------------------------------------------------------------------------------

    @property
    def names(self):
        return [h.name for h in self.hosts]

    def hosts_arg(self, hosts=None):
        return ",".join(h.name for h in (hosts or self.hosts))

    def wrap(self, argv):
        """argv run where root's home is the site's home (for ssh: config, key, known
        hosts). Without sshd, argv unchanged."""
        argv = [str(a) for a in argv]
        if not self.ssh:
            return argv
        home = pwd.getpwuid(os.geteuid()).pw_dir
        return ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c",
                'mount --bind "$1" "$2" && shift 2 && exec "$@"', "sh",
                str(self.home), home, *argv]

    def cut(self, host):
        """Take host's link down (root side of its veth): packets to and from it are lost."""
        h = self.hosts[host] if isinstance(host, int) else host
        subprocess.run([IP, "link", "set", h.veth, "down"], check=True, timeout=TIMEOUT)

    def pids(self, host=None, include_sshd=False):
        """{host name: [pid, ...]} of the processes in each host's namespace (or one host's
        list), the sshd listeners left out unless include_sshd."""
        by_inode = pids_in_netns([i for i in self.inodes.values() if i])
        out = {}
        for h in self.hosts:
            pids = by_inode.get(self.inodes.get(h.name), [])
            if h.sshd and not include_sshd:
                pids = [p for p in pids if p != h.sshd.proc.pid]
            out[h.name] = pids
        if host is not None:
            h = self.hosts[host] if isinstance(host, int) else host
            return out[h.name]
        return out

    def leftovers(self, grace=3.0):
        """Processes still in any host's namespace (sshd listeners aside) after up to grace
        seconds for those that are ending: {host: [description, ...]}, empty when clean."""
        pids = [p for ps in self.pids().values() for p in ps]
        alive = set(wait_gone(pids, grace)) if pids else set()
        if not alive:
            return {}
        described = {}
        for name, ps in self.pids().items():
            left = [describe(p) for p in ps if p in alive]
            if left:
                described[name] = left
        return described

    # -- tear-down -----------------------------------------------------------------------------

    def close(self, check=True):
        """Stop the sshds, check that nothing else remains in the namespaces (kill it if it
        does), delete namespaces, veths and the bridge. Raises AssertionError after cleaning
        up if something was left (when check)."""
        if self.closed:
            return
        self.closed = True
        left = {}
        try:
            if self.hosts and getattr(self, "inodes", None):
                left = self.leftovers(grace=3.0 if check else 0.0)
                for ps in self.pids().values():
                    kill_pids(ps)
        finally:
            for h in self.hosts:
                if h.sshd:
                    h.sshd.stop()
            inodes = [i for i in getattr(self, "inodes", {}).values() if i]
            if inodes:
                rest = [p for ps in pids_in_netns(inodes).values() for p in ps]
                kill_pids(rest)
                wait_gone(rest, 5)
            cmds = []
            for h in self.hosts:
                if not h.isolated:
                    cmds.append(f"link del {h.veth}")
                cmds.append(f"netns del {h.name}")
            if self.bridge:
                cmds.append(f"link del {self.bridge}")
            if cmds:
                _ip_batch(cmds, check=False)
        if check and left:
            raise AssertionError("left running in the hosts' namespaces: " + "; ".join(
                f"{name}: {', '.join(ps)}" for name, ps in left.items()))

    def sshd_logs(self):
        return "\n".join(f"--- sshd {h.name}\n{h.sshd.log()}" for h in self.hosts if h.sshd)


# ---- for conftest's leak check ----------------------------------------------------------------

def our_netns():
    try:
        return {n for n in os.listdir("/run/netns") if n.startswith(PREFIX)}
    except OSError:
        return set()


def our_links():
    try:
        return {n for n in os.listdir("/sys/class/net") if n.startswith(PREFIX)}
    except OSError:
        return set()


def remove_net(netns, links):
    cmds = [f"link del {l}" for l in sorted(links)] + [f"netns del {n}" for n in sorted(netns)]
    if cmds and os.access(IP, os.X_OK):
        for n in netns:
            i = netns_inode(n)
            if i:
                kill_pids(pids_in_netns([i])[i])
        _ip_batch(cmds, check=False)
