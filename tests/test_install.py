"""The build installs what a user of the library needs: headers, static and shared library,
a pkg-config file, the program and its man pages; a program built against the installed copy
through pkg-config links and runs, statically and dynamically."""
import os
import subprocess
import textwrap

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PROGRAM = textwrap.dedent("""
    #include <tend.h>
    #include <stdio.h>
    int main(void) {
        tend_loop *loop;
        tend_proc *p;
        enum tend_spawn_step step;
        if (tend_loop_new(&loop) < 0) return 2;
        const char *argv[] = { "sh", "-c", "exit 7", NULL };
        struct tend_spawn_opts o = { .argv = argv };
        int r = tend_spawn(loop, &o, &p, &step);
        if (r < 0) { printf("spawn: %s\\n", tend_strerror(r)); return 3; }
        struct tend_exit ex;
        if (tend_proc_wait(p, &ex) < 0) return 4;
        printf("exit %d\\n", ex.code);
        tend_proc_free(p);
        tend_loop_free(loop);
        return 0;
    }
""")


def test_install_and_link_through_pkg_config(tmp, build_dir):
    tmp, build_dir = str(tmp), str(build_dir)
    dest = os.path.join(tmp, "root")
    prefix = "/usr/local"
    subprocess.run(["make", "-s", "install", "BUILD=" + build_dir, "DESTDIR=" + dest,
                    "PREFIX=" + prefix], cwd=REPO, check=True, timeout=300)
    root = dest + prefix
    for rel in ["bin/tend", "include/tend.h", "lib/libtend.a", "lib/libtend.so",
                "lib/pkgconfig/tend.pc", "share/man/man1/tend.1", "share/man/man1/tend-run.1",
                "share/man/man1/tend-record.1"]:
        assert os.path.exists(os.path.join(root, rel)), rel
    assert any(n.startswith("libtend.so.") for n in os.listdir(os.path.join(root, "lib")))

    src = os.path.join(tmp, "use.c")
    with open(src, "w") as f:
        f.write(PROGRAM)
    env = dict(os.environ, PKG_CONFIG_PATH=os.path.join(root, "lib/pkgconfig"),
               PKG_CONFIG_SYSROOT_DIR=dest)
    cflags = subprocess.run(["pkg-config", "--cflags", "tend"], env=env, check=True,
                            capture_output=True, text=True).stdout.split()
    libs = subprocess.run(["pkg-config", "--libs", "--static", "tend"], env=env, check=True,
                          capture_output=True, text=True).stdout.split()
    assert any(a.startswith("-I") and a.endswith("/include") for a in cflags), cflags

    # A sanitizer build's library needs the sanitizer runtime in whatever links it.
    san = ["-fsanitize=address,undefined"] if os.environ.get("SAN") == "1" else []

    # Against the static library.
    exe = os.path.join(tmp, "use-static")
    libdir = os.path.join(root, "lib")
    subprocess.run(["cc", "-std=c11", "-Wall", "-Werror", *san, *cflags, src, "-o", exe,
                    os.path.join(libdir, "libtend.a"),
                    *[a for a in libs if a != "-ltend" and not a.startswith("-L")]],
                   check=True, timeout=120)
    out = subprocess.run([exe], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out
    assert out.stdout == "exit 7\n"

    # Against the shared library.
    exe = os.path.join(tmp, "use-shared")
    subprocess.run(["cc", "-std=c11", "-Wall", "-Werror", *san, *cflags, src, "-o", exe, *libs],
                   check=True, timeout=120)
    out = subprocess.run([exe], capture_output=True, text=True, timeout=30,
                         env=dict(os.environ, LD_LIBRARY_PATH=libdir))
    assert out.returncode == 0, out
    assert out.stdout == "exit 7\n"
    # Only the API is exported from the shared library.
    syms = subprocess.run(["nm", "-D", "--defined-only", os.path.join(libdir, "libtend.so")],
                          capture_output=True, text=True, check=True).stdout.split("\n")
    names = [line.split()[-1] for line in syms if line.strip()]
    assert names and all(n.startswith("tend_") for n in names), [n for n in names if not n.startswith("tend_")]
