"""Checks of a run's inputs that are cheap and must fail before a run exists.

Why: a mistake found after sampling, training and model logging costs the user the whole
run and leaves a FAILED run behind; one found here is one line and nothing in the store.
- suite files (`jsonl:PATH` in eval.suites / data.suite) are read and validated now;
- a hub model that is not in the local cache, with the hub unreachable (HF_HUB_OFFLINE, or
  no route to it), is one line now rather than a minute of retries later;
- lm-eval tasks (eval.lm_eval.tasks): an unknown name, or a hub task's data that cannot be
  reached, is one line naming rlvf's local tasks.
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from rlvf.errors import UserError


def check(cfg: Any) -> None:
    check_suites(cfg)
    for key in ("model.policy",):
        check_hub_model(cfg.get(key), cfg.get("model.revision"), key)
    check_lm_eval(cfg)


def check_lm_eval(cfg: Any) -> None:
    """Every lm-eval task is known and its data loads (a hub task offline: one line naming the
    local alternative), before a run exists rather than after training."""
    if not cfg.get("eval.lm_eval.tasks"):
        return
    from rlvf.evaluate.lmeval import LmEvalSettings, check_tasks

    check_tasks(LmEvalSettings.from_config(cfg))


def _specs(cfg: Any) -> list[tuple[str, str]]:
    out = []
    for key in ("eval.suites", "data.suite"):
        v = cfg.get(key)
        for spec in [v] if isinstance(v, str) else v or []:
            out.append((key, spec))
    return out


def check_suites(cfg: Any) -> None:
    """Read every file-based suite now (a bad line is a RecordError naming file, line, field)."""
    from rlvf.tasks import JSONL_PREFIX, load_suite

    for _key, spec in _specs(cfg):
        if isinstance(spec, str) and spec.startswith(JSONL_PREFIX):
            load_suite(spec)


def _offline() -> bool:
    flags = (os.environ.get(k, "").strip().upper() for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return any(f in ("1", "ON", "YES", "TRUE") for f in flags)


def reachable(host: str, port: int = 443, timeout_s: float = 3.0) -> bool:
    """Whether a TCP connection to host:port opens within `timeout_s` (DNS included)."""
    ok: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout_s):
                ok.append(True)
        except OSError:
            ok.append(False)

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout_s + 0.5)
    return bool(ok and ok[0])


def _is_hub_id(policy: str) -> bool:
    from rlvf.models.loader import is_embedded

    if is_embedded(policy) or policy.startswith((".", "/", "~", "models:/", "runs:/")):
        return False
    if Path(os.path.expanduser(policy)).exists():
        return False
    return policy.count("/") <= 1


def check_hub_model(policy: str | None, revision: str | None, key: str = "model.policy") -> None:
    """A hub id that is neither cached nor downloadable now: one line, no waiting."""
    if not policy or not _is_hub_id(policy):
        return
    try:
        from huggingface_hub import constants, try_to_load_from_cache
    except ImportError:
        return
    if isinstance(try_to_load_from_cache(policy, "config.json", revision=revision), str):
        return
    if _offline():
        raise UserError(
            f"{key}: {policy!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set; "
            "download it first (unset HF_HUB_OFFLINE) or use a local directory"
        )
    endpoint = os.environ.get("HF_ENDPOINT") or constants.ENDPOINT
    url = urlparse(endpoint)
    host = url.hostname or "huggingface.co"
    if not reachable(host, url.port or (443 if url.scheme != "http" else 80)):
        raise UserError(
            f"{key}: {policy!r} is not in the local Hugging Face cache and {host} cannot be reached "
            "(offline?); download it first or use a local directory"
        )
