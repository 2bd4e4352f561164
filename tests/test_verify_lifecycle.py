"""A program's whole life in the real sandbox: module-level code, output volume, its ending.

Three classes of completions that fooled verifiers, each with several variants:

- module-level code after the function (a `__main__` block, demo prints, `input()` at end
  of file) must not fail a correct function; a failing self-test, exits and tampering
  still fail;
- output volume: megabytes printed by a correct function pass, a flood is stopped;
- termination: a program that does not end within the limit (non-daemon threads, atexit
  handlers, finalizers, signal handlers) is a timeout, never a pass; one that ends cleanly
  (daemon threads, exceptions ignored at exit, `os._exit(0)` in an atexit handler) passes.
"""

from __future__ import annotations

import os
import textwrap
import time

import pytest

from rlvf.verify import Limits, check_completion
from rlvf.verify.sandbox import ForkServer

PROBLEM = {
    "task_id": "lifecycle/secret_add",
    "prompt": 'def secret_add(a, b):\n    """Return a + b + 7919."""\n',
    "entry_point": "secret_add",
    "test": textwrap.dedent(
        """
        def check(candidate):
            assert candidate(1, 2) == 7922
            assert candidate(10, 20) == 7949
            assert candidate(-5, 5) == 7919
        """
    ),
}
RIGHT = "    return a + b + 7919\n"
WRONG = "    return a + b\n"


def after(src: str, body: str = RIGHT) -> str:
    """A completion: the function's body, then module-level code."""
    return body + textwrap.dedent(src).strip("\n") + "\n"


def inside(src: str) -> str:
    """A completion whose body runs `src`, then returns the right answer."""
    return textwrap.indent(textwrap.dedent(src).strip("\n") + "\n", "    ") + RIGHT


# --- module-level code ---------------------------------------------------------------------
MODULE_PASSES = [
    ("main_block_with_input", after("if __name__ == '__main__':\n    print(secret_add(int(input()), 2))")),
    ("main_block_exits", after("import sys\nif __name__ == '__main__':\n    sys.exit(secret_add(1, 2))")),
    ("demo_prints", after("print(secret_add(1, 2))\nprint('demo done', flush=True)")),
    ("top_level_call", after("_ = secret_add(3, 4)")),
    ("top_level_input", after("a, b = map(int, input().split())\nprint(secret_add(a, b))")),
    ("stdin_read_then_parse", after("import sys\ndata = sys.stdin.read().split()\nprint(int(data[0]))")),
    ("main_block_failing_self_test", after("if __name__ == '__main__':\n    assert secret_add(1, 2) == 3")),
    ("passing_self_test", after("assert secret_add(1, 2) == 7922")),
    ("reads_missing_input_file", after("print(open('input.txt').read())")),
    ("loaded_as_module", "    return (a + b + 7919) if __name__ != '__main__' else 0\n"),
    ("argv_is_plain", after("import sys\nassert sys.argv == ['candidate'], sys.argv")),
    ("doctest_testmod", after("import doctest\ndoctest.testmod()")),
    ("help_page", after("help(secret_add)")),
]

# (id, completion, category): a failing self-test, exits and tampering at load still fail,
# even with a right body.
MODULE_FAILS = [
    (
        "failing_self_test",
        after("assert secret_add(1, 2) == 3, 'my own wrong expectation'"),
        "assertion_error",
    ),
    ("sys_exit_after_def", after("import sys\nprint(secret_add(1, 2))\nsys.exit(0)"), "tampering"),
    ("os_exit_after_def", after("import os\nos._exit(0)"), "tampering"),
    (
        "exit_swallowing_handler",
        after("try:\n    raise SystemExit(0)\nexcept Exception:\n    pass"),
        "tampering",
    ),
    ("keyboard_interrupt_after_def", after("raise KeyboardInterrupt"), "tampering"),
    ("memory_bomb_after_def", after("x = bytearray(3 * 2**30)"), "memory_error"),
    ("reads_outside_after_def", after("print(open('/etc/hostname').read())"), "forbidden_side_effect"),
    ("deletes_the_function", after("del secret_add"), "format_error"),
    ("input_with_wrong_body", after("print(secret_add(int(input()), 1))", body=WRONG), "runtime_error"),
]


@pytest.mark.parametrize(("name", "completion"), MODULE_PASSES, ids=[c[0] for c in MODULE_PASSES])
def test_module_level_code_does_not_fail_a_correct_function(name: str, completion: str) -> None:
    out = check_completion(PROBLEM, completion, timeout=3.0)
    assert out.passed, f"{name}: {out}"
    assert (out.tests_passed, out.tests_total) == (3, 3)


@pytest.mark.parametrize(("name", "completion", "category"), MODULE_FAILS, ids=[c[0] for c in MODULE_FAILS])
def test_exits_and_tampering_at_load_still_fail(name: str, completion: str, category: str) -> None:
    out = check_completion(PROBLEM, completion, timeout=3.0)
    assert not out.passed, f"{name} passed: {out}"
    assert out.category == category, f"{name}: {out.category} ({out.detail})"


def test_an_error_at_load_keeps_its_category_when_the_tests_fail() -> None:
    """The tests still run past demo code that raised, so partial credit is real; the verdict
    names the load error, as before the tests could run past it."""
    wrong_on_negatives = "    return a + b + 7919 if a >= 0 else 0\n"
    out = check_completion(PROBLEM, after("n = int(input())", body=wrong_on_negatives))
    assert (out.category, out.exc_type) == ("runtime_error", "EOFError")
    assert "while loading" in out.detail
    assert (out.tests_passed, out.tests_total) == (2, 3)


# --- output volume -------------------------------------------------------------------------
OUTPUT_PASSES = [
    ("three_mb_per_call", inside("print('x' * 3_000_000)")),
    ("many_small_lines", inside("for i in range(60_000):\n    print(i)")),
    ("stderr_megabytes", inside("import sys\nsys.stderr.write('e' * 2_000_000)")),
    ("binary_buffer", inside("import sys\nsys.stdout.buffer.write(b'\\x00' * 2_000_000)")),
    ("flushed_lines", inside("for i in range(2_000):\n    print('y' * 500, flush=True)")),
    ("unencodable_text", inside("print('\\udcff' * 1000)")),
    ("megabytes_at_load", after("print('z' * 5_000_000)")),
]

OUTPUT_FLOODS = [
    ("print_loop", inside("while True:\n    print('x' * 1000)")),
    ("stderr_loop", inside("import sys\nwhile True:\n    sys.stderr.write('e' * 4096)")),
    ("flood_at_load", after("while True:\n    print('m' * 4096)")),
    (
        "flood_while_ending",
        after("import atexit\natexit.register(lambda: [print('a' * 4096) for _ in iter(int, 1)])"),
    ),
    (
        "flood_caught_by_candidate",
        inside("try:\n    while True:\n        print('c' * 4096)\nexcept BaseException:\n    pass"),
    ),
    ("raw_descriptor", inside("import os\nwhile True:\n    os.write(1, b'r' * 65536)")),
]


@pytest.mark.parametrize(("name", "completion"), OUTPUT_PASSES, ids=[c[0] for c in OUTPUT_PASSES])
def test_a_chatty_correct_function_passes(name: str, completion: str) -> None:
    out = check_completion(PROBLEM, completion, timeout=3.0)
    assert out.passed, f"{name}: {out}"


@pytest.mark.parametrize(("name", "completion"), OUTPUT_FLOODS, ids=[c[0] for c in OUTPUT_FLOODS])
def test_a_flood_is_stopped(name: str, completion: str) -> None:
    out = check_completion(PROBLEM, completion, timeout=3.0)
    assert not out.passed, f"{name} passed: {out}"
    assert out.category == "output_limit", f"{name}: {out.category} ({out.detail})"
    assert out.duration < 3.0


def test_a_flood_report_carries_the_head_of_the_output() -> None:
    out = check_completion(PROBLEM, inside("print('HEAD-MARK')\nwhile True:\n    print('x' * 1000)"))
    assert out.category == "output_limit"
    assert "HEAD-MARK" in out.detail


def test_the_output_cap_is_a_limit() -> None:
    chatty = inside("print('x' * 600_000)")
    assert check_completion(PROBLEM, chatty, limits=Limits(output_mb=4)).passed
    out = check_completion(PROBLEM, chatty, limits=Limits(output_mb=1))
    assert out.category == "output_limit"
    assert out.tests_passed == 1  # the second call crossed the cap


# --- termination ---------------------------------------------------------------------------
# Each of these programs passes every test and then does not end.
NEVER_ENDS = [
    ("atexit_sleeps", after("import atexit, time\natexit.register(time.sleep, 60)")),
    ("atexit_spins", after("import atexit\natexit.register(lambda: [None for _ in iter(int, 1)])")),
    ("atexit_waits_for_a_signal", after("import atexit, signal\natexit.register(signal.pause)")),
    (
        "global_finalizer_blocks",
        after("import time\nclass Slow:\n    def __del__(self):\n        time.sleep(60)\nkeep = Slow()"),
    ),
    (
        "finalizer_in_a_cycle",
        after(
            "class Spin:\n    def __del__(self):\n        while True:\n            pass\n"
            "def make():\n    s = Spin()\n    s.me = s\nmake()"
        ),
    ),
    (
        "finalizer_of_what_the_function_kept",
        "    import time\n    class Slow:\n        def __del__(self):\n            time.sleep(60)\n"
        "    KEPT.append(Slow())\n" + RIGHT + "KEPT = []\n",
    ),
    (
        "weakref_finalize",
        after("import time, weakref\nclass T:\n    pass\nt = T()\nweakref.finalize(t, time.sleep, 60)"),
    ),
    (
        "signal_handler_at_exit",
        after(
            "import atexit, signal, time\n"
            "signal.signal(signal.SIGALRM, lambda *a: [None for _ in iter(int, 1)])\n"
            "atexit.register(lambda: (signal.setitimer(signal.ITIMER_REAL, 0.01), time.sleep(1)))"
        ),
    ),
    (
        "finalizer_waits_on_a_lock",
        after(
            "import threading\nlock = threading.Lock()\nlock.acquire()\n"
            "class Wait:\n    def __del__(self):\n        lock.acquire()\nkeep = Wait()"
        ),
    ),
    (
        "stdout_flush_blocks",
        after(
            "import sys, time\nclass Out:\n    def write(self, s):\n        return len(s)\n"
            "    def flush(self):\n        time.sleep(60)\nsys.stdout = Out()"
        ),
    ),
]

NEVER_ENDS_THREADS = [
    ("timer_thread", after("import threading\nthreading.Timer(60, print).start()")),
    (
        "thread_at_load",
        after("import threading, time\nthreading.Thread(target=time.sleep, args=(60,)).start()"),
    ),
    (
        "thread_from_the_call",
        inside("import threading, time\nthreading.Thread(target=time.sleep, args=(60,)).start()"),
    ),
    (
        "thread_that_ignores_signals",
        after(
            "import signal, threading, time\n"
            "for s in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM):\n    signal.signal(s, signal.SIG_IGN)\n"
            "threading.Thread(target=lambda: [time.sleep(1) for _ in iter(int, 1)]).start()"
        ),
    ),
]

ENDS_CLEANLY = [
    # CPython ends this one too: the program's own hook is not reached at this stage.
    (
        "unraisable_hook_would_block",
        after(
            "import sys, time\nsys.unraisablehook = lambda u, sleep=time.sleep: sleep(60)\n"
            "class Bad:\n    def __del__(self):\n        raise ValueError('at exit')\nkeep = Bad()"
        ),
    ),
    ("atexit_prints", after("import atexit\natexit.register(print, 'bye')")),
    (
        "atexit_raises",
        after("import atexit\ndef boom():\n    raise RuntimeError('ignored at exit')\natexit.register(boom)"),
    ),
    ("atexit_calls_sys_exit", after("import atexit, sys\natexit.register(sys.exit, 3)")),
    (
        "atexit_exits_zero",
        after("import atexit, os, time\natexit.register(time.sleep, 60)\natexit.register(os._exit, 0)"),
    ),
    (
        "finalizer_raises",
        after("class Bad:\n    def __del__(self):\n        raise ValueError('ignored')\nkeep = Bad()"),
    ),
    ("finalizer_prints", after("class Loud:\n    def __del__(self):\n        print('gone')\nkeep = Loud()")),
]

ENDS_CLEANLY_THREADS = [
    (
        "daemon_thread_spins",
        after(
            "import threading\nthreading.Thread(target=lambda: [None for _ in iter(int, 1)], daemon=True).start()"
        ),
    ),
    (
        "short_thread",
        after("import threading, time\nthreading.Thread(target=time.sleep, args=(0.2,)).start()"),
    ),
    (
        "executor_left_open",
        after(
            "from concurrent.futures import ThreadPoolExecutor\npool = ThreadPoolExecutor(2)\nprint(pool.submit(secret_add, 1, 2).result())"
        ),
    ),
]

# Ends, but not cleanly: a bad exit status, or a process that closed its channel and lives on.
BAD_ENDINGS = [
    ("atexit_exits_nonzero", after("import atexit, os\natexit.register(os._exit, 3)"), "tampering"),
    (
        "atexit_kills_itself",
        after("import atexit, signal\natexit.register(signal.raise_signal, signal.SIGKILL)"),
        "tampering",
    ),
    (
        "forged_last_word",
        inside(
            """
            import os, stat, struct
            global _n
            try:
                _n += 1
            except NameError:
                _n = 1
            if _n == 3:
                for fd in range(3, 1024):
                    try:
                        if stat.S_ISSOCK(os.fstat(fd).st_mode):
                            for msg in (b'{"ok": 7919}', b'{"bye": 1}'):
                                os.write(fd, struct.pack('>I', len(msg)) + msg)
                            os.close(fd)
                    except OSError:
                        pass
                while True:
                    pass
            """
        ),
        "tampering",
    ),
]

TIMEOUT = 1.5


@pytest.fixture(scope="module")
def threads_ok() -> bool:
    """Whether the sandbox lets a program start a thread here (it cannot when children run as
    `nobody` under RLIMIT_NPROC: starting one is then a RuntimeError)."""
    out = check_completion(
        PROBLEM, inside("import threading\nt = threading.Thread(target=int)\nt.start()\nt.join()")
    )
    return out.passed


@pytest.mark.parametrize(("name", "completion"), NEVER_ENDS, ids=[c[0] for c in NEVER_ENDS])
def test_a_program_that_does_not_end_is_a_timeout(name: str, completion: str) -> None:
    out = check_completion(PROBLEM, completion, timeout=TIMEOUT)
    assert not out.passed, f"{name} passed: {out}"
    assert out.category == "timeout", f"{name}: {out.category} ({out.detail})"
    assert out.tests_passed == 3  # every test passed: only the ending failed
    assert out.duration >= TIMEOUT * 0.9  # the verdict waited for the deadline


@pytest.mark.parametrize(("name", "completion"), NEVER_ENDS_THREADS, ids=[c[0] for c in NEVER_ENDS_THREADS])
def test_a_program_whose_threads_do_not_end_is_a_timeout(
    name: str, completion: str, threads_ok: bool
) -> None:
    if not threads_ok:
        pytest.skip("this sandbox refuses threads, so none can outlive the tests")
    out = check_completion(PROBLEM, completion, timeout=TIMEOUT)
    assert not out.passed, f"{name} passed: {out}"
    assert out.category == "timeout", f"{name}: {out.category} ({out.detail})"
    assert out.duration >= TIMEOUT * 0.9


@pytest.mark.parametrize(("name", "completion"), ENDS_CLEANLY, ids=[c[0] for c in ENDS_CLEANLY])
def test_a_program_that_ends_cleanly_passes(name: str, completion: str) -> None:
    out = check_completion(PROBLEM, completion, timeout=3.0)
    assert out.passed, f"{name}: {out}"


@pytest.mark.parametrize(
    ("name", "completion"), ENDS_CLEANLY_THREADS, ids=[c[0] for c in ENDS_CLEANLY_THREADS]
)
def test_threads_that_let_the_program_end_pass(name: str, completion: str, threads_ok: bool) -> None:
    if not threads_ok:
        pytest.skip("this sandbox refuses threads")
    out = check_completion(PROBLEM, completion, timeout=3.0)
    assert out.passed, f"{name}: {out}"


@pytest.mark.parametrize(("name", "completion", "category"), BAD_ENDINGS, ids=[c[0] for c in BAD_ENDINGS])
def test_a_bad_ending_is_not_a_pass(name: str, completion: str, category: str) -> None:
    out = check_completion(PROBLEM, completion, timeout=TIMEOUT)
    assert not out.passed, f"{name} passed: {out}"
    assert out.category == category, f"{name}: {out.category} ({out.detail})"


def _children_of(pid: int) -> set[int]:
    kids = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    kids.add(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    return kids


def test_no_process_outlives_its_verdict() -> None:
    """A program stuck in its ending is killed with its threads and reaped: the fork server is
    left with its idle pool only (zombies would still count as its children)."""
    server = ForkServer()
    try:
        stuck = after("import atexit, time\natexit.register(time.sleep, 60)")
        assert check_completion(PROBLEM, stuck, timeout=1.0, server=server).category == "timeout"
        assert server._proc is not None
        zygote, pool = server._proc.pid, 3
        deadline = time.monotonic() + 10
        while len(_children_of(zygote)) > pool and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(_children_of(zygote)) <= pool
    finally:
        server.close()


def test_corpus_size() -> None:
    groups = (MODULE_PASSES, MODULE_FAILS, OUTPUT_PASSES, OUTPUT_FLOODS, NEVER_ENDS, NEVER_ENDS_THREADS)
    names = [c[0] for g in (*groups, ENDS_CLEANLY, ENDS_CLEANLY_THREADS, BAD_ENDINGS) for c in g]
    assert len(names) == len(set(names))
    assert all(len(g) >= 3 for g in groups)
