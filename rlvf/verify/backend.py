"""Which machinery judges samples: this machine's sandboxes or Ray actors hosting them.

`rlvf.verify.verify_samples` is the one door every caller (eval, pairs, SFT data, the RL
rewards) verifies through; it asks `current()` which backend to use unless it is told. A run
selects its backend once from its config (`use(Backend.from_config(cfg))`, done around every
entry point's stage), so switching is one config key: `verify.backend`. The choice is also
mirrored into the environment, so the processes a run spawns (eval's seed workers, the
base-eval prefetch) judge the same way.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from rlvf.errors import UserError

BACKENDS = ("local", "ray")
_ENV = {
    "name": "RLVF_VERIFY_BACKEND",
    "ray_address": "RLVF_VERIFY_RAY_ADDRESS",
    "ray_actors": "RLVF_VERIFY_RAY_ACTORS",
    "ray_auth": "RLVF_VERIFY_RAY_AUTH",
}


@dataclass(frozen=True)
class Backend:
    """A verification backend and, for Ray, where and how wide.

    `ray_address` None connects to the cluster `ray start` runs on this machine (or
    RAY_ADDRESS) and starts a local one when there is none. `ray_actors` None: one actor per
    CPU of the cluster. `ray_auth` is Ray's RAY_AUTH_MODE, always set explicitly.
    """

    name: str = "local"
    ray_address: str | None = None
    ray_actors: int | None = None
    ray_auth: str = "token"

    def __post_init__(self) -> None:
        if self.name not in BACKENDS:
            raise UserError(f"verify.backend '{self.name}' is not one of {', '.join(BACKENDS)}")
        if self.ray_auth not in ("token", "disabled"):
            raise UserError(f"verify.ray_auth '{self.ray_auth}' is not one of token, disabled")

    @classmethod
    def from_config(cls, cfg: Any) -> Backend:
        """The config's verify section; a stage without one (bootstrap) judges nothing: local."""
        return cls(
            name=cfg.get("verify.backend") or "local",
            ray_address=cfg.get("verify.ray_address"),
            ray_actors=cfg.get("verify.ray_actors"),
            ray_auth=cfg.get("verify.ray_auth") or "token",
        )

    @classmethod
    def from_env(cls) -> Backend:
        env = {k: os.environ.get(v) for k, v in _ENV.items()}
        actors = env["ray_actors"]
        return cls(
            name=env["name"] or "local",
            ray_address=env["ray_address"] or None,
            ray_actors=int(actors) if actors else None,
            ray_auth=env["ray_auth"] or "token",
        )

    def to_env(self) -> dict[str, str]:
        values = {
            "name": self.name,
            "ray_address": self.ray_address or "",
            "ray_actors": str(self.ray_actors or ""),
            "ray_auth": self.ray_auth,
        }
        return {_ENV[k]: v for k, v in values.items()}


_current: Backend | None = None


def current() -> Backend:
    """The backend `verify_samples` uses when not told: the run's, else the environment's."""
    return _current if _current is not None else Backend.from_env()


@contextlib.contextmanager
def use(backend: Backend) -> Iterator[Backend]:
    """Judge with `backend` inside the block (and in processes spawned inside it); a Ray pool
    opened for it is closed at the end."""
    global _current
    saved, saved_env = _current, {k: os.environ.get(k) for k in _ENV.values()}
    _current = backend
    os.environ.update(backend.to_env())
    try:
        yield backend
    finally:
        _current = saved
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if backend.name == "ray":
            from rlvf.verify.ray_pool import close_pools

            close_pools()


def use_config(cfg: Any) -> contextlib.AbstractContextManager[Backend]:
    """`use` the backend cfg's verify section names."""
    return use(Backend.from_config(cfg))
