"""Process-level settings for running rlvf's models: torch's CPU threads.

Light on purpose (torch is imported only when called): `rlvf.generate`, `rlvf.models` and the
pipeline all use it, and the CLI must start fast.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator


@contextlib.contextmanager
def cpu_threads(device: str = "auto") -> Iterator[None]:
    """torch's CPU threads for a stage: RLVF_THREADS if set, else 1 on CPU.

    rlvf's embedded models are tiny: their ops are too small to split across threads, and
    with other processes on the machine two threads made them ~30x slower here (each op
    waits for a descheduled thread). On CUDA the setting is left alone.
    """
    import torch

    want = os.environ.get("RLVF_THREADS", "").strip()
    if not want and (device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())):
        yield
        return
    n = int(want) if want else 1
    old = torch.get_num_threads()
    torch.set_num_threads(max(1, n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def trains_in_bf16(device: str) -> bool:
    """bf16 mixed precision for TRL trainers: only on a GPU that has it natively.

    TRL's configs default to bf16, which on a CPU is emulated (many times slower on AVX2-only
    CPUs) and rounds differently from CPU to CPU.
    """
    if not device.startswith("cuda"):
        return False
    import torch

    return torch.cuda.is_bf16_supported()


def cpu_description() -> str:
    """The CPU a figure was measured on: model name, torch's CPU capability, core count.

    Speed (and, for bf16, even results) depend on the instruction set, so every benchmark
    prints this next to its numbers.
    """
    import platform

    import torch

    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model}, torch CPU capability {torch.backends.cpu.get_cpu_capability()}, {os.cpu_count()} cores"


def die_with_parent() -> None:
    """In a helper child process: be killed when the parent dies, even by SIGKILL.

    Why: a `kill -9` of an rlvf run (or an OOM kill) otherwise leaves its helper children
    (the base-eval prefetch) running on, burning a core for a run that no longer exists.
    Linux only (prctl PR_SET_PDEATHSIG); elsewhere nothing is done.
    """
    import ctypes
    import multiprocessing
    import signal
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        return
    parent = multiprocessing.parent_process()
    if parent is not None and parent.pid != os.getppid():  # the parent died before prctl
        os._exit(1)
