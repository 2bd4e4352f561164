"""The judge's half of the plain-data codec shared with `_zygote.py`.

Only builtins, containers, numbers, strings and bytes cross the boundary. The decoder is
strict: anything it does not know becomes an `Opaque` that equals nothing, so a candidate
can never hand the judge an object with custom comparison methods.
"""

from __future__ import annotations

import base64
from typing import Any

MAX_DEPTH = 200


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
    if x is None or t in (bool, int, float, str):
        return x
    if t is list:
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


def decode(x: Any, depth: int = 0) -> Any:
    """Decode a value from the sandbox, refusing anything outside the codec."""
    if depth > MAX_DEPTH:
        raise WireError("value nested too deeply")
    if x is None or type(x) in (bool, int, float, str):
        return x
    if type(x) is list:
        return [decode(v, depth + 1) for v in x]
    if type(x) is not dict or len(x) not in (1, 2):
        raise WireError("unknown value encoding")
    try:
        if "__o" in x:
            return Opaque(str(x["__o"])[:80], bool(x.get("eq")))
        if len(x) != 1:
            raise WireError("unknown value encoding")
        ((tag, v),) = x.items()
        if tag == "__t" and type(v) is list:
            return tuple(decode(i, depth + 1) for i in v)
        if tag == "__d" and type(v) is list:
            return {decode(k, depth + 1): decode(val, depth + 1) for k, val in v}
        if tag == "__s" and type(v) is list:
            return {decode(i, depth + 1) for i in v}
        if tag == "__f" and type(v) is list:
            return frozenset(decode(i, depth + 1) for i in v)
        if tag == "__b" and type(v) is str:
            return base64.b64decode(v, validate=True)
        if tag == "__c" and type(v) is list and len(v) == 2:
            return complex(float(v[0]), float(v[1]))
    except (TypeError, ValueError) as e:  # unhashable keys, bad base64, bad pairs
        raise WireError(str(e)) from None
    raise WireError("unknown value encoding")


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
