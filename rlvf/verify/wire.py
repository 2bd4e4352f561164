"""The judge's half of the plain-data codec shared with `_zygote.py`.

Only builtins, containers, numbers, strings and bytes cross the boundary. The decoder is
strict: anything it does not know becomes an `Opaque` that equals nothing, so a candidate
can never hand the judge an object with custom comparison methods.
"""

from __future__ import annotations

import base64
import time
from typing import Any

MAX_DEPTH = 200
MAX_NODES = 2_000_000  # values per message; bounds the judge's memory and time per answer
_BIG = 10**1000  # ints past this cross as hex: decimal parsing is quadratic and capped


class Opaque:
    """Stands for a value the candidate returned that is not plain data. Equals nothing."""

    __slots__ = ("rigged", "type_name")

    def __init__(self, type_name: str, rigged: bool) -> None:
        self.type_name = type_name
        self.rigged = rigged

    def __eq__(self, other: object) -> bool:
        return False

    def __ne__(self, other: object) -> bool:
        return True

    __hash__ = object.__hash__

    def __repr__(self) -> str:
        return f"<opaque {self.type_name}>"


class WireError(ValueError):
    """A message that does not follow the codec (garbled or hostile)."""


class Unencodable(TypeError):
    """A test argument that is not plain data (the problem, not the candidate, is at fault)."""


def encode(x: Any, depth: int = 0) -> Any:
    """Encode a test's argument for the sandbox (trusted values)."""
    if depth > MAX_DEPTH:
        raise Unencodable("argument nested too deeply")
    t = type(x)
    if t is int and (x > _BIG or x < -_BIG):
        return {"__i": hex(x)}
    if x is None or t in (bool, int, float, str):
        return x
    if t is list:
        if all(type(v) in _FLAT or (type(v) is int and -_BIG <= v <= _BIG) for v in x):  # nothing to rewrite
            return x
        return [encode(v, depth + 1) for v in x]
    if t is tuple:
        return {"__t": [encode(v, depth + 1) for v in x]}
    if t is dict:
        return {"__d": [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in x.items()]}
    if t is set:
        return {"__s": [encode(v, depth + 1) for v in x]}
    if t is frozenset:
        return {"__f": [encode(v, depth + 1) for v in x]}
    if t is bytes:
        return {"__b": base64.b64encode(x).decode("ascii")}
    if t is complex:
        return {"__c": [x.real, x.imag]}
    raise Unencodable(f"cannot pass a {t.__name__} to a sandboxed candidate")


_FLAT = (bool, float, str, type(None))


def decode(x: Any, deadline: float | None = None) -> Any:
    """Decode a value from the sandbox, refusing anything outside the codec.

    Bounded in depth, in the number of values and (given a deadline) in time; sets and dict
    keys whose hashes collide en masse (a quadratic-time trap) are refused.
    """
    if x is None or type(x) in _SCALARS:  # the common answer: one plain scalar
        return x
    budget = [MAX_NODES]
    return _decode(x, 0, budget, deadline)


_SCALARS = (bool, int, float, str)


def _decode(x: Any, depth: int, budget: list[int], deadline: float | None) -> Any:
    budget[0] -= 1
    if budget[0] < 0:
        raise WireError("value too large")
    if depth > MAX_DEPTH:
        raise WireError("value nested too deeply")
    if deadline is not None and budget[0] % 4096 == 0 and time.monotonic() > deadline:
        raise WireError("decoding ran past the deadline")
    if x is None or type(x) in (bool, int, float, str):
        return x
    if type(x) is list:
        return [_decode(v, depth + 1, budget, deadline) for v in x]
    if type(x) is not dict or len(x) not in (1, 2):
        raise WireError("unknown value encoding")
    try:
        if "__o" in x:
            return Opaque(str(x["__o"])[:80], bool(x.get("eq")))
        if len(x) != 1:
            raise WireError("unknown value encoding")
        ((tag, v),) = x.items()
        if tag == "__i" and type(v) is str and len(v) < 100_000:
            return int(v, 16)
        if tag == "__b" and type(v) is str:
            return base64.b64decode(v, validate=True)
        if tag == "__c" and type(v) is list and len(v) == 2:
            return complex(float(v[0]), float(v[1]))
        if type(v) is not list:
            raise WireError("unknown value encoding")
        if tag == "__t":
            return tuple(_decode(i, depth + 1, budget, deadline) for i in v)
        if tag == "__d":
            pairs = [
                (_decode(k, depth + 1, budget, deadline), _decode(val, depth + 1, budget, deadline))
                for k, val in v
            ]
            _check_hashes([k for k, _ in pairs])
            return dict(pairs)
        if tag in ("__s", "__f"):
            items = [_decode(i, depth + 1, budget, deadline) for i in v]
            _check_hashes(items)
            return set(items) if tag == "__s" else frozenset(items)
    except (TypeError, ValueError, OverflowError) as e:  # unhashable keys, bad base64, bad pairs, inf ints
        raise WireError(str(e)[:200]) from None
    raise WireError("unknown value encoding")


def _check_hashes(items: list[Any]) -> None:
    if len(items) > 256 and len({hash(i) for i in items}) * 4 < len(items):
        raise WireError("hash-colliding set or dict keys")


def contains_opaque(x: Any) -> Opaque | None:
    """The first Opaque inside a decoded value, if any."""
    if isinstance(x, Opaque):
        return x
    if isinstance(x, (list, tuple, set, frozenset)):
        for v in x:
            found = contains_opaque(v)
            if found is not None:
                return found
    if isinstance(x, dict):
        for k, v in x.items():
            found = contains_opaque(k) or contains_opaque(v)
            if found is not None:
                return found
    return None
