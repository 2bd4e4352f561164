"""The judge's side of the sandbox: a fork server process and the channel to each child.

Untrusted programs never run in the rlvf process. A separate interpreter
(`_zygote.py`) forks one child per sample; each child gets its own session, a private
temporary directory, rlimits (CPU, address space, file size, processes, open files), an
unprivileged uid when rlvf runs as root, an empty network namespace where the kernel
allows it, Landlock file-system/network/signal rules where the kernel has them, and a
PEP 578 audit hook; see `_zygote.py` for the child's side.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

_ZYGOTE = Path(__file__).with_name("_zygote.py")
_MAX_FRAME = 16 * 1024 * 1024
VIOLATION_EXIT = 86
OUTPUT_EXIT = 87  # the child printed past Limits.output_mb
NOBODY = 65534


@dataclass(frozen=True)
class Limits:
    """Per-sample resource limits.

    `timeout` is wall-clock seconds for the whole sample: loading, every test call and the
    program's own ending (threads, atexit handlers, finalizers). `output_mb` caps what it may
    print in all (stdout and stderr together): output is drained and dropped as it comes, so
    a chatty correct function passes, and a flood ends at the cap (or at the timeout).
    `file_mb` caps each file it writes in its directory.
    """

    timeout: float = 3.0
    memory_mb: int = 1024
    file_mb: float = 1.0
    output_mb: float = 32.0
    nproc: int = 1
    max_program_bytes: int = 512 * 1024

    def child(self) -> dict[str, Any]:
        d = asdict(self)
        d["cpu_s"] = int(self.timeout) + 2
        return d


class SandboxError(RuntimeError):
    """The sandbox machinery itself failed (not the candidate)."""


class ChannelClosed(Exception):
    """The child closed its end: it exited, crashed or was killed."""


class ChannelTimeout(Exception):
    """The child did not answer before the sample's deadline."""


class ChannelOversize(Exception):
    """The child sent a message over the size cap (a huge return value)."""


def _frame(obj: Any) -> bytes:
    data = json.dumps(obj, allow_nan=True).encode("utf-8", "surrogatepass")
    return struct.pack(">I", len(data)) + data


class Channel:
    """Framed JSON messages to and from one sandboxed child, with a deadline."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline
        self._buf = bytearray()

    def send(self, obj: Any) -> None:
        """Send one frame without ever blocking past the deadline (a child that stops
        reading must not hang the judge)."""
        view = memoryview(_frame(obj))
        while view:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise ChannelTimeout()
            _, ready, _ = select.select([], [self.sock], [], left)
            if not ready:
                raise ChannelTimeout()
            try:
                n = self.sock.send(view, socket.MSG_DONTWAIT)
            except BlockingIOError:
                continue
            except (BrokenPipeError, ConnectionResetError) as e:
                raise ChannelClosed() from e
            view = view[n:]

    def _fill(self, n: int) -> None:
        while len(self._buf) < n:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise ChannelTimeout()
            ready, _, _ = select.select([self.sock], [], [], left)
            if not ready:
                raise ChannelTimeout()
            try:
                chunk = self.sock.recv(1 << 20)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                raise ChannelClosed()
            self._buf += chunk

    def recv(self) -> Any:
        self._fill(4)
        (size,) = struct.unpack(">I", self._buf[:4])
        if size > _MAX_FRAME:
            raise ChannelOversize()
        self._fill(4 + size)
        body = bytes(self._buf[4 : 4 + size])
        del self._buf[: 4 + size]
        try:
            return json.loads(body.decode("utf-8", "surrogatepass"))
        except (ValueError, UnicodeDecodeError, RecursionError, MemoryError, OverflowError):
            return {"garbled": 1}

    def pending(self) -> bool:
        """Whether the child has sent anything that was not read yet (without waiting)."""
        if self._buf:
            return True
        ready, _, _ = select.select([self.sock], [], [], 0)
        return bool(ready)

    def close(self) -> None:
        self.sock.close()


def _scrubbed_env() -> dict[str, str]:
    # Nothing from the parent's environment (tokens, keys) reaches the sandbox.
    return {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1"}


class ForkServer:
    """One `_zygote.py` interpreter; thread-safe `spawn` and `reap`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._ctl: socket.socket | None = None
        self.landlock_abi = 0
        self.uid_drop = False
        self.starts = 0  # how many fork servers were started: a rise mid-sample means one died
        self.root = os.geteuid() == 0
        self.base = Path(tempfile.mkdtemp(prefix="rlvf-sandbox-"))
        if self.root:
            os.chmod(self.base, 0o711)

    def _start(self) -> None:
        ours, theirs = socket.socketpair()
        self._proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-B", str(_ZYGOTE), str(theirs.fileno()), str(self.base)],
            pass_fds=[theirs.fileno()],
            env=_scrubbed_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=self.base,
        )
        theirs.close()
        self.starts += 1
        ours.settimeout(30)
        self._ctl = ours
        hello = self._read_reply()[0]
        if not hello.get("hello"):
            raise SandboxError("the sandbox fork server did not start")
        self.landlock_abi = int(hello.get("landlock_abi", 0))
        self.uid_drop = bool(hello.get("uid_drop"))

    def _read_reply(self) -> tuple[dict[str, Any], list[int]]:
        assert self._ctl is not None
        msg, fds, _, _ = socket.recv_fds(self._ctl, 1 << 16, 1)
        if len(msg) < 4:
            raise SandboxError("the sandbox fork server went away")
        (size,) = struct.unpack(">I", msg[:4])
        data = bytearray(msg[4:])
        while len(data) < size:
            more = self._ctl.recv(size - len(data))
            if not more:
                raise SandboxError("the sandbox fork server went away")
            data += more
        return json.loads(bytes(data)), list(fds)

    def _ensure_started_locked(self) -> None:
        if self._proc is None or self._proc.poll() is not None:
            self._start()

    def _request(self, req: dict[str, Any]) -> tuple[dict[str, Any], list[int]]:
        with self._lock:
            for attempt in (0, 1):
                self._ensure_started_locked()
                assert self._ctl is not None
                try:
                    self._ctl.sendall(_frame(req))
                    return self._read_reply()
                except (OSError, SandboxError):
                    self._shutdown_locked()
                    if attempt:
                        raise
        raise SandboxError("unreachable")

    def spawn(self, limits: Limits) -> tuple[int, socket.socket]:
        """A confined child waiting for its program (send it `{"program", "entry_point"}`)."""
        reply, fds = self._request({"op": "spawn", "limits": limits.child()})
        if not fds:
            raise SandboxError("the sandbox fork server sent no channel")
        return int(reply["pid"]), socket.socket(fileno=fds[0])

    def finish(self, pid: int, want_status: bool = True) -> int | None:
        """Kill the child's whole process group and have it reaped; its wait status if wanted.

        Without `want_status` the reap is queued and not waited for."""
        try:
            os.killpg(pid, signal.SIGKILL)  # the pid is held (unreaped) until it is reaped
        except (ProcessLookupError, PermissionError):
            pass
        if not want_status:
            with self._lock:
                if self._ctl is not None and self._proc is not None and self._proc.poll() is None:
                    try:
                        self._ctl.sendall(_frame({"op": "reap", "pid": pid, "quiet": 1}))
                        return None
                    except OSError:
                        pass
        reply, _ = self._request({"op": "reap", "pid": pid})
        return reply.get("status")

    def _shutdown_locked(self) -> None:
        if self._ctl is not None:
            self._ctl.close()
            self._ctl = None
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait()
            self._proc = None

    def close(self) -> None:
        with self._lock:
            self._shutdown_locked()
        shutil.rmtree(self.base, ignore_errors=True)


_default: ForkServer | None = None
_default_lock = threading.Lock()


def default_server() -> ForkServer:
    """The process-wide fork server, started on first use and stopped at exit."""
    global _default
    with _default_lock:
        if _default is None:
            _default = ForkServer()
            atexit.register(_default.close)
        return _default


def describe_status(status: int | None) -> tuple[str, str]:
    """(kind, detail) for a wait status: ('exit', '0'), ('signal', 'SIGXCPU') or ('unknown', '')."""
    if status is None:
        return "unknown", ""
    if os.WIFEXITED(status):
        return "exit", str(os.WEXITSTATUS(status))
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            return "signal", signal.Signals(sig).name
        except ValueError:
            return "signal", str(sig)
    return "unknown", str(status)
