"""Process-level tests of `tend record cat` (man/tend-record.1, DESIGN.md §4): the
checkbox/plainbox .record.gz format read back. Records are written here with Python's gzip,
independently of tend's writer."""

import gzip
import subprocess
import time

import pytest

from conftest import child_env

TIMEOUT = 30
VECTOR = b'[0.123,"stdout","c29tZQpkYXRh"]\n'  # "some\ndata" (DESIGN §4)


def cat(tend, *args, input=None, timeout=TIMEOUT):
    t0 = time.monotonic()
    cp = subprocess.run([str(tend), "record", "cat", *map(str, args)], input=input,
                        stdin=None if input is not None else subprocess.DEVNULL,
                        capture_output=True, env=child_env(), timeout=timeout)
    cp.elapsed = time.monotonic() - t0
    return cp


def write_record(path, text, compress=True):
    data = text.encode() if isinstance(text, str) else text
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def test_vector(tend, tmp):
    rec = write_record(tmp / "v.record.gz", VECTOR)
    cp = cat(tend, rec)
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout == b"some\ndata"
    assert cp.stderr == b""


def test_vector_without_final_newline(tend, tmp):
    rec = write_record(tmp / "v.record.gz", VECTOR.rstrip(b"\n"))
    cp = cat(tend, rec)
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout == b"some\ndata"


def test_uncompressed_record(tend, tmp):
    rec = write_record(tmp / "v.record", VECTOR, compress=False)
    cp = cat(tend, rec)
    assert cp.returncode == 0
    assert cp.stdout == b"some\ndata"


def test_stdin(tend):
    cp = cat(tend, "-", input=gzip.compress(VECTOR))
    assert cp.returncode == 0
    assert cp.stdout == b"some\ndata"


def test_streams_go_to_their_own_fds(tend, tmp):
    rec = write_record(tmp / "r.gz",
                       '[0.1,"stdout","b3V0MQo="]\n'   # out1
                       '[0.0,"stderr","ZXJyMQo="]\n'   # err1
                       '[0,"stdout","b3V0Mgo="]\n'     # out2
                       '[1e-3,"stderr","ZXJyMgo="]\n'  # err2
                       '[0.0,"stdout",""]\n')          # empty data
    cp = cat(tend, rec)
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout == b"out1\nout2\n"
    assert cp.stderr == b"err1\nerr2\n"


def test_order_between_streams(tend, tmp):
    """Both streams into one pipe: the recorded order is kept."""
    rec = write_record(tmp / "r.gz",
                       '[0.1,"stdout","YQo="]\n[0.0,"stderr","Ygo="]\n[0.0,"stdout","Ywo="]\n')
    cp = subprocess.run([str(tend), "record", "cat", str(rec)], stdin=subprocess.DEVNULL,
                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=child_env(),
                        timeout=TIMEOUT)
    assert cp.returncode == 0
    assert cp.stdout == b"a\nb\nc\n"


def test_delays_are_ignored_without_timing(tend, tmp):
    """Without --timing the delays are not waited for: a record claiming a minute of delay
    comes back well within the subprocess bound."""
    rec = write_record(tmp / "r.gz", '[60.0,"stdout","YQo="]\n[60.0,"stdout","Ygo="]\n')
    cp = cat(tend, rec, timeout=20)
    assert cp.returncode == 0
    assert cp.stdout == b"a\nb\n"


def test_timing_replays_the_pace(tend, tmp):
    rec = write_record(tmp / "r.gz", '[0.3,"stdout","YQo="]\n[0.3,"stderr","Ygo="]\n')
    cp = cat(tend, "--timing", rec)
    assert cp.returncode == 0
    assert cp.stdout == b"a\n" and cp.stderr == b"b\n"
    assert cp.elapsed >= 0.6
    assert cp.elapsed < 20


def test_record_written_by_tend_run_replays(tend, helper, tmp):
    rec = tmp / "r.gz"
    cp = subprocess.run([str(tend), "run", "--record", str(rec), "--", "/bin/sh", "-c",
                         "echo one; echo two >&2"], stdin=subprocess.DEVNULL,
                        capture_output=True, env=child_env(), timeout=TIMEOUT)
    assert cp.returncode == 0
    back = cat(tend, "--timing", rec)
    assert back.returncode == 0
    assert (back.stdout, back.stderr) == (b"one\n", b"two\n")


@pytest.mark.parametrize("bad", [
    '[0.1,"stdin","YQo="]',            # unknown stream
    '[-1,"stdout","YQo="]',            # negative delay
    '[0.1,"stdout","YQo"]',            # unpadded base64
    '[0.1,"stdout","Y Qo="]',          # stray character in base64
    '["0.1","stdout","YQo="]',         # delay is a string
    '[0.1,"stdout","YQo=",1]',         # four elements
    '[0.1,"stdout"]',                  # two elements
    '{"delay":0.1}',                   # not an array
    'garbage',                         # not JSON
    '',                                # a blank line in the middle
])
def test_malformed_names_the_line(tend, tmp, bad):
    rec = write_record(tmp / "bad.gz", f'[0.5,"stdout","YQo="]\n{bad}\n[0.1,"stdout","YQo="]\n')
    cp = cat(tend, rec)
    assert cp.returncode == 125
    msg = cp.stderr.decode()
    assert "line 2" in msg and str(rec) in msg, msg
    assert cp.stdout in (b"", b"a\n")  # what came before the bad line, at most


def test_truncated_gzip_is_malformed(tend, tmp):
    data = gzip.compress(VECTOR * 1000)
    rec = tmp / "cut.gz"
    rec.write_bytes(data[:len(data) // 2])
    cp = cat(tend, rec)
    assert cp.returncode == 125
    assert cp.stderr.startswith(b"tend: ")


def test_missing_file(tend, tmp):
    missing = tmp / "missing.record.gz"
    cp = cat(tend, missing)
    assert cp.returncode == 125
    assert cp.stdout == b""
    msg = cp.stderr.decode()
    assert str(missing) in msg and "No such file or directory" in msg, msg


@pytest.mark.parametrize("args", [[], ["--bogus", "x"], ["a", "b"]])
def test_usage_errors(tend, args):
    cp = cat(tend, *args)
    assert cp.returncode == 125
    assert cp.stderr.startswith(b"tend: ")


def test_unknown_record_subcommand(tend):
    cp = subprocess.run([str(tend), "record", "play"], stdin=subprocess.DEVNULL,
                        capture_output=True, env=child_env(), timeout=TIMEOUT)
    assert cp.returncode == 125
    assert b"play" in cp.stderr


def test_help(tend):
    cp = cat(tend, "--help")
    assert cp.returncode == 0
    assert b"--timing" in cp.stdout
