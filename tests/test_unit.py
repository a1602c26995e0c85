"""The C unit tests (cmocka), one pytest test per C test.

Every executable $TEND_BUILD/tests/test_* is asked for its tests with `--list` when pytest
collects, and each test is then run alone as `BIN NAME` (see tests/unit/harness.h), in its own
process group, with a time limit. Ids look like `test_record::vector_parses`; select with
`-k vector_parses` or `-k test_record`.

Outcome: exit 0 is a pass, unless cmocka reported the test as skipped, which becomes a pytest
skip with the reason the test printed ("SKIP: reason"); anything else fails with the output.
"""

import os
import signal
import subprocess
import tempfile

import pytest

from conftest import BUILD_DIR, REPO, SESSION_VAR, child_env

TIMEOUT = 60
LIST_TIMEOUT = 30


def _binaries():
    tests_dir = BUILD_DIR / "tests"
    if not tests_dir.is_dir():
        return []
    return sorted(p for p in tests_dir.glob("test_*")
                  if p.is_file() and os.access(p, os.X_OK))


def _params():
    params = []
    if not _binaries():
        return [pytest.param(None, None, None, id="no-unit-test-programs", marks=pytest.mark.skip(
            reason=f"no test_* programs in {BUILD_DIR}/tests (make tests-build BUILD=...)"))]
    for binary in _binaries():
        listing_id = f"{binary.name}::--list"
        try:
            r = subprocess.run([binary, "--list"], capture_output=True, text=True,
                               timeout=LIST_TIMEOUT, env=child_env(), cwd=REPO)
        except (OSError, subprocess.TimeoutExpired) as e:
            params.append(pytest.param(binary, None, f"{binary} --list: {e}", id=listing_id))
            continue
        names = r.stdout.split()
        if r.returncode != 0 or not names:
            params.append(pytest.param(
                binary, None,
                f"{binary} --list: exit {r.returncode}, {len(names)} test(s)\n{r.stdout}{r.stderr}",
                id=listing_id))
            continue
        params += [pytest.param(binary, name, None, id=f"{binary.name}::{name}")
                   for name in names]
    return params


def _outcome_text(returncode):
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name}"
    return f"exit {returncode}"


@pytest.mark.parametrize("binary,name,error", _params())
def test_unit(binary, name, error):
    if error:
        pytest.fail(error, pytrace=False)
    env = child_env(CMOCKA_MESSAGE_OUTPUT="STDOUT")
    timed_out = False
    # Output goes to a file, not a pipe: a descendant the test leaked while holding the pipe
    # must not make us wait (the leak check reports it instead).
    with tempfile.TemporaryFile(dir=os.environ[SESSION_VAR]) as f:
        # Its own process group, so that on a time-out nothing it started is left running.
        proc = subprocess.Popen([binary, name], stdout=f, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, cwd=REPO,
                                start_new_session=True)
        try:
            proc.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        f.seek(0)
        out = f.read()
    out = out.decode(errors="replace")
    cmd = f"{binary} {name}"
    if timed_out:
        pytest.fail(f"{cmd}: no result after {TIMEOUT} s, killed\n{out}", pytrace=False)
    if proc.returncode != 0:
        pytest.fail(f"{cmd}: {_outcome_text(proc.returncode)}\n{out}", pytrace=False)
    if f"[  SKIPPED ] {name}" in out:
        reasons = [line[len("SKIP: "):] for line in out.splitlines() if line.startswith("SKIP: ")]
        pytest.skip(reasons[0] if reasons else "skipped (the test printed no SKIP: reason)")
    if f"[       OK ] {name}" not in out:
        pytest.fail(f"{cmd}: exit 0 but cmocka did not report the test as passed\n{out}",
                    pytrace=False)
