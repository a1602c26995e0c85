"""The fuzz targets (fuzz/, fuzz/README.md) run by their plain driver: every seed of the
corpus, then deterministic mutations of them, under a time bound. A crash, a sanitizer report
(SAN=1 builds) or a broken invariant of a target fails the test and leaves the input behind.
Real coverage-guided fuzzing is `make fuzz` (clang's libFuzzer)."""
import os
import subprocess

import pytest

from conftest import BUILD_DIR, REPO, _built

TARGETS = ["config", "control", "notify", "launch"]
MUTATIONS = int(os.environ.get("TEND_FUZZ_MUTATIONS", "20000"))
SECONDS = float(os.environ.get("TEND_FUZZ_SECONDS", "60"))


def run_driver(target, tmp, *paths, mutations=MUTATIONS, seed=1):
    prog = _built(BUILD_DIR / "fuzz" / f"fuzz_{target}")
    env = dict(os.environ)
    env.setdefault("ASAN_OPTIONS", "abort_on_error=1:detect_leaks=1")
    env.setdefault("UBSAN_OPTIONS", "halt_on_error=1:print_stacktrace=1")
    env["TMPDIR"] = str(tmp)  # the targets' scratch files, left behind only by a crash
    cmd = [str(prog), "--random", str(mutations), str(seed), "--seconds", str(SECONDS),
           "--save", str(tmp)] + [str(p) for p in paths]
    r = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, errors="replace",
                       timeout=SECONDS + 120, env=env)
    crashes = sorted(p.name for p in tmp.iterdir() if p.name.startswith("crash-"))
    leftovers = sorted(p.name for p in tmp.iterdir() if p.name.startswith("tend-fuzz-"))
    assert r.returncode == 0 and not crashes, (
        f"{' '.join(cmd)}: exit {r.returncode}, saved {crashes}\n{r.stderr[-6000:]}")
    assert "runtime error" not in r.stderr and "Sanitizer" not in r.stderr, r.stderr[-6000:]
    assert "no crash" in r.stdout
    assert not leftovers, f"scratch files left: {leftovers}"
    return r


@pytest.mark.parametrize("target", TARGETS)
def test_fuzz_corpus_and_mutations(target, tmp):
    run_driver(target, tmp, REPO / "fuzz" / "corpus" / target)


@pytest.mark.parametrize("target", TARGETS)
def test_fuzz_another_seed(target, tmp):
    run_driver(target, tmp, REPO / "fuzz" / "corpus" / target, mutations=MUTATIONS // 4,
               seed=20261123)


def test_fuzz_oversized_inputs(tmp):
    # What mutations of small seeds hardly reach: a control line over the 64 KiB limit (with
    # a request after it), a datagram over the 4096-byte limit, a huge configuration line,
    # frames of tend launch at and above their bound.
    big = tmp / "big"
    big.mkdir()
    (big / "control").write_bytes(b'{"verb":"status","x":"' + b"a" * 70000 + b'"}\n'
                                  b'{"verb":"status"}\n')
    (big / "control-exact").write_bytes(b'{"verb":"status","x":"' + b"b" * (65536 - 26) +
                                        b'"}\n{"verb":"status"}\n')
    (big / "notify").write_bytes(b"STATUS=" + b"x" * 5000)
    (big / "config").write_bytes(b"[service a]\ncommand = " + b"y " * 40000 + b"\n"
                                 b"environment = " + b"K=v " * 20000 + b"\n")
    # tend launch's wire: an OUT frame of exactly the 64 KiB bound, then one above it.
    def frame(ftype, length, fill):
        return (bytes([ftype, 1, 0, 0]) + (0).to_bytes(4, "big") + length.to_bytes(4, "big")
                + fill * length)
    (big / "launch").write_bytes(frame(9, 65536, b"o") + frame(9, 70000, b"p"))
    for target in TARGETS:
        run_driver(target, tmp, big / target, *[p for p in [big / "control-exact"]
                                                   if target == "control"], mutations=200)


def test_fuzz_driver_usage(tmp):
    # The driver refuses what it cannot run rather than passing with nothing done.
    prog = _built(BUILD_DIR / "fuzz" / "fuzz_notify")
    r = subprocess.run([str(prog), str(tmp / "missing")], capture_output=True, text=True)
    assert r.returncode == 2 and "missing" in r.stderr
    r = subprocess.run([str(prog)], capture_output=True, text=True)
    assert r.returncode == 2 and "usage" in r.stderr


def test_include_loop_is_reported_at_once(tend, tmp):
    # Found by libFuzzer: a file that includes itself was read again at every level down to
    # the depth limit, once per include line at each: 4 such lines made 4^8 reads (minutes).
    # Now the loop is an error the moment it closes.
    conf = tmp / "tend.conf"
    conf.write_text("include = *.conf\n" * 4 + "include = sub/*.conf\n"
                    "[service a]\ncommand = /bin/true\n")
    (tmp / "sub").mkdir()
    (tmp / "sub" / "b.conf").write_text("include = ../*.conf\n[service b]\ncommand = x\n")
    r = subprocess.run([str(tend), "supervise", "--check", str(conf)], capture_output=True,
                       text=True, timeout=20)
    assert r.returncode != 0
    assert "include loop" in r.stderr, r.stderr
    assert r.stderr.count("\n") < 20, r.stderr
