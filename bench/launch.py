"""bench/launch.py — benchmark 8 of bench/run: starting a command on many hosts.

The hosts are network namespaces on a bridge, made by the tests' own tests/netns_hosts.py
(Site): one per host, each with its own address and, for the ssh rows, its own sshd. Each
contender runs `true` on every host and is timed from its start to its exit (every host has
started, run and reported):

    tend-exec    tend launch --agent 'ip netns exec %h' -f 64 -q -- true
    tend-tree    the same with --tree 4
    pdsh-exec    pdsh -R exec -f 64 -w HOSTS ip netns exec %h true       (the peer)
    tend-ssh     tend launch -f 64 -q -- true      (its default ssh agent template)
    tend-ssh-tree  the same with --tree 4
    pdsh-ssh     pdsh -R ssh -f 64 -w HOSTS true                          (the peer)

The ssh rows run inside Site.wrap (a private mount namespace where root's ~/.ssh is the
site's), for pdsh as for tend. pdsh only reports what ssh says; tend waits for each host's
authenticated callback and for its command's exit status through it, so it does more per host
than pdsh — the ratio says what that costs.
"""
import os
import shutil
import subprocess
import sys
import tempfile
import time

PDSH = "/usr/bin/pdsh"


def _contenders(a, site, n):
    tend = os.path.join(a.build, "tend")
    hosts = ",".join(site.names[:n])
    base = [tend, "launch", "-H", hosts, "-f", "64", "-q", "--connect-timeout", "30s",
            "--start-timeout", "30s"]
    exec_agent = ["--agent", "ip netns exec %h"]
    rows = [("tend-exec", base + exec_agent + ["--", "true"]),
            ("tend-tree", base + exec_agent + ["--tree", "4", "--", "true"])]
    if os.access(PDSH, os.X_OK):
        rows.append(("pdsh-exec", [PDSH, "-R", "exec", "-f", "64", "-w", hosts,
                                   "ip", "netns", "exec", "%h", "true"]))
    if site.ssh:
        rows += [("tend-ssh", site.wrap(base + ["--", "true"])),
                 ("tend-ssh-tree", site.wrap(base + ["--tree", "4", "--", "true"]))]
        if os.access(PDSH, os.X_OK):
            rows.append(("pdsh-ssh", site.wrap([PDSH, "-R", "ssh", "-f", "64", "-w", hosts,
                                                "true"])))
    return rows


def _time(argv):
    t = time.monotonic()
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True)
    dt = time.monotonic() - t
    if r.returncode != 0:
        raise RuntimeError(f"{argv[0]} ... exited {r.returncode}: {r.stderr.strip()[-400:]}")
    return dt


def bench_launch(a, res, h):
    print("\n8. launch: `true` on N namespaced hosts, start to exit of the launcher")
    if os.geteuid() != 0:
        print("  skipped: needs root to make network namespaces")
        res["launch"] = {"skipped": "needs root"}
        return
    if not shutil.which("ip"):
        print("  skipped: needs ip (Debian package iproute2)")
        res["launch"] = {"skipped": "no ip"}
        return
    if not os.access(PDSH, os.X_OK):
        print("  note: pdsh missing (apt-get install -y pdsh): no peer row")
    tests_dir = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                             "tests")
    sys.path.insert(0, tests_dir)
    os.environ.setdefault("TEND_BUILD", a.build)
    tmp = tempfile.mkdtemp(prefix="bench-launch-")
    # The tests' hosts mark what they start with a session variable (their leak check's);
    # here the benchmark's own directory stands for it.
    os.environ.setdefault("TEND_TEST_SESSION", tmp)
    import netns_hosts
    sizes = [int(x) for x in a.launch_sizes.split(",")]
    with_ssh = os.access(netns_hosts.SSHD, os.X_OK) and shutil.which("ssh")
    if not with_ssh:
        print("  note: no sshd (apt-get install -y openssh-server): ssh rows skipped")
    out = res.setdefault("launch", {})
    site = None
    try:
        site = netns_hosts.Site(tmp, max(sizes), sshd=bool(with_ssh))
        for n in sizes:
            rows = _contenders(a, site, n)
            samples = {name: [] for name, _ in rows}
            for rnd in range(a.rounds):
                for name, argv in h.rotate(rows, rnd):
                    samples[name].append(_time(argv))
            summ = [(name, h.summarize([s * 1000 for s in samples[name]]), {})
                    for name, _ in rows]
            ref = "pdsh-exec" if "pdsh-exec" in samples else "tend-exec"
            h.table(f"8. launch on {n} hosts (ms, lower is better)", "ms", summ, ref)
            out[str(n)] = {name: s for name, s, _ in summ}
    except Exception as e:  # a failing contender is recorded, the other benchmarks go on
        print(f"  failed: {e}")
        out["error"] = str(e)
    finally:
        if site:
            site.close(check=False)
        shutil.rmtree(tmp, ignore_errors=True)
