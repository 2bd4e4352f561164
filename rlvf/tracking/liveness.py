"""Runs whose process died without ending them (kill -9, OOM, power loss) end FAILED.

Why: MLflow has no notion of a run's owner; a process killed with SIGKILL leaves its run
RUNNING forever, and it then looks like live work in the UI, in comparisons and exports.

Rule: every run rlvf opens carries a tag `rlvf.proc` naming its process (host, boot id,
pid namespace, pid and the pid's start time, so a reused pid or a reboot does not count as
alive). Each rlvf command, on first touching a store, looks at that store's RUNNING runs
of *this* host and pid namespace and marks those whose process is gone FAILED with
`rlvf.error=abandoned` (their PENDING logged models too). Runs of other hosts or
containers are left alone: their liveness cannot be seen from here.

Under `mlflow run`, MLflow's wrapper overwrites the status rlvf set with FAILED once the
entry point exits (3.17 compares the status string with ints in `RunStatus.is_terminated`),
so rlvf also records the status it meant in the tag `rlvf.status`; the same sweep puts it
back.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
from typing import Any

TAG_PROC = "rlvf.proc"
TAG_STATUS = "rlvf.status"
TAG_ERROR = "rlvf.error"
ABANDONED = "abandoned"


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:
            return fh.read().strip()
    except OSError:
        return ""


def _pid_ns() -> str:
    """This process's pid namespace: pids of another container on the same host mean nothing here."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def _start_time(pid: int) -> str | None:
    """The pid's start time (clock ticks since boot), None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
    except FileNotFoundError:
        return None
    except OSError:
        return ""
    return stat[stat.rindex(")") + 2 :].split()[19]


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists here (one we may not signal still counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def proc_tag(pid: int | None = None) -> str:
    """The `rlvf.proc` tag naming this process."""
    pid = os.getpid() if pid is None else pid
    return json.dumps(
        {
            "host": socket.gethostname(),
            "boot": _boot_id(),
            "pidns": _pid_ns(),
            "pid": pid,
            "start": _start_time(pid) or "",
        },
        sort_keys=True,
    )


def is_dead(tag: str) -> bool:
    """True when the process named by a `rlvf.proc` tag of this host is surely gone."""
    try:
        p = json.loads(tag)
        host, boot, pid, start = p["host"], p["boot"], int(p["pid"]), p["start"]
    except (ValueError, KeyError, TypeError):
        return False
    if host != socket.gethostname() or p.get("pidns", "") != _pid_ns():
        return False
    if boot and _boot_id() and boot != _boot_id():
        return True  # the machine rebooted since
    if sys.platform.startswith("linux") and os.path.isdir("/proc"):
        now = _start_time(pid)
        if now is None:
            return True
        return bool(start) and bool(now) and now != start  # the pid was reused
    return not pid_alive(pid)


def _runs(client: Any, filter_string: str) -> list[Any]:
    from mlflow.entities import ViewType

    exps = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    out: list[Any] = []
    for i in range(0, len(exps), 100):
        out += client.search_runs(exps[i : i + 100], filter_string, run_view_type=ViewType.ALL)
    return out


def sweep(client: Any) -> list[str]:
    """Mark this host's abandoned RUNNING runs FAILED; restore statuses `mlflow run` overwrote.

    Returns the ids of the runs marked abandoned. Never raises: a sweep that cannot run
    must not stop the command the user asked for.
    """
    marked: list[str] = []
    host = socket.gethostname().replace("'", "")
    try:
        running = _runs(client, f"attributes.status = 'RUNNING' and tags.`{TAG_PROC}` LIKE '%\"{host}\"%'")
    except Exception:
        return marked
    for run in running:
        tag = run.data.tags.get(TAG_PROC, "")
        if not is_dead(tag):
            continue
        rid = run.info.run_id
        with contextlib.suppress(Exception):
            client.set_tag(rid, TAG_ERROR, ABANDONED)
            client.set_tag(
                rid,
                "mlflow.note.content",
                "**Error:** abandoned: its process ended without ending the run (killed?)",
            )
            client.set_tag(rid, TAG_STATUS, "FAILED")
            _fail_pending_models(client, run)
            client.set_terminated(rid, "FAILED")
            marked.append(rid)
    with contextlib.suppress(Exception):
        for run in _runs(client, f"attributes.status = 'FAILED' and tags.`{TAG_STATUS}` = 'KILLED'"):
            client.set_terminated(run.info.run_id, "KILLED", end_time=run.info.end_time)
    with contextlib.suppress(Exception):  # `mlflow run` marked FAILED a run whose process was killed
        failed = _runs(client, f"attributes.status = 'FAILED' and tags.`{TAG_PROC}` LIKE '%\"{host}\"%'")
        for run in failed:
            tags = run.data.tags
            if TAG_STATUS not in tags and TAG_ERROR not in tags and is_dead(tags.get(TAG_PROC, "")):
                client.set_tag(run.info.run_id, TAG_ERROR, ABANDONED)
                client.set_tag(run.info.run_id, TAG_STATUS, "FAILED")
                marked.append(run.info.run_id)
    return marked


def _fail_pending_models(client: Any, run: Any) -> None:
    from mlflow.entities import LoggedModelStatus

    with contextlib.suppress(Exception):
        models = client.search_logged_models(
            experiment_ids=[run.info.experiment_id],
            filter_string=f"source_run_id = '{run.info.run_id}'",
        )
        for m in models:
            if str(m.status) in ("PENDING", "LoggedModelStatus.PENDING"):
                client.finalize_logged_model(m.model_id, LoggedModelStatus.FAILED)


def restore_after_wrapper(run_id: str, status: str) -> None:
    """Under `mlflow run`: put `status` back once the wrapper has overwritten it with FAILED.

    A small detached process waits for the wrapper (this process's parent) to exit, then
    restores the status; no one has to run another rlvf command for the run to read right.
    """
    import subprocess

    import mlflow

    with contextlib.suppress(Exception):
        subprocess.Popen(
            [sys.executable, "-m", "rlvf.tracking.liveness", run_id, status, str(_wrapper_pid())],
            env={**os.environ, "MLFLOW_TRACKING_URI": mlflow.get_tracking_uri()},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )


def _wrapper_pid() -> int:
    """The `mlflow run` process: the parent, or the grandparent when a shell sits between."""
    ppid = os.getppid()
    try:
        with open(f"/proc/{ppid}/stat") as fh:
            stat = fh.read()
    except OSError:
        return ppid
    comm = stat[stat.index("(") + 1 : stat.rindex(")")]
    if comm in ("bash", "sh", "dash", "zsh"):
        return int(stat[stat.rindex(")") + 2 :].split()[1])
    return ppid


def _restore_main(run_id: str, status: str, wrapper_pid: int, wait_s: float = 300.0) -> None:
    import time

    from mlflow import MlflowClient

    deadline = time.monotonic() + wait_s
    while pid_alive(wrapper_pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    client = MlflowClient()
    run = client.get_run(run_id)
    if status == "DELETE":
        if TAG_PROC not in run.data.tags:
            client.delete_run(run_id)
        return
    if run.info.status != status and run.data.tags.get(TAG_STATUS) == status:
        client.set_terminated(run_id, status, end_time=run.info.end_time)


if __name__ == "__main__":
    _restore_main(sys.argv[1], sys.argv[2], int(sys.argv[3]))


def discard_unopened_env_run(message: str) -> None:
    """Under `mlflow run`, input rejected before rlvf opened the run MLflow created: delete it.

    MLflow creates the run before the entry point starts; a value rlvf refuses would leave it
    as an empty FAILED run. It is tagged with the error now, and deleted once the wrapper
    (which still writes its status) has exited. A run rlvf opened (it has `rlvf.proc`) stays.
    """
    run_id = os.environ.get("MLFLOW_RUN_ID", "").strip()
    if not run_id:
        return
    with contextlib.suppress(Exception):
        from mlflow import MlflowClient

        client = MlflowClient()
        run = client.get_run(run_id)
        if TAG_PROC in run.data.tags:
            return
        client.set_tag(run_id, TAG_ERROR, message)
        restore_after_wrapper(run_id, "DELETE")
