"""Completion clean-up, in one place for every backend and every policy.

A raw completion becomes the text the verifier runs after the prompt:

1. cut at the first user stop sequence;
2. chat-style code fences (```python ... ```) are stripped: the code of the block that
   defines the entry point (else the first block) is kept;
3. cut at the end of the function: for a completion that continues the prompt's
   function body, the first line at column 0 that is not blank and not a comment ends
   it; for a completion that writes whole definitions (instruct models, MBPP-style
   prompts), leading imports, decorators, helper functions and classes are kept and the
   first other top-level statement after the entry point's definition ends it
   (appended self-tests, `print(...)`, `if __name__ == ...`);
4. the entry point the tests call is looked up in prompt + completion; when it is not
   defined, the sample is marked as a format failure (seed 001: MBPP scored 0% for every
   model because completions never defined the names the tests called).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence
from dataclasses import dataclass

MISSING_ENTRY_POINT = "missing_entry_point"

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+.-]*)[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL)
_KEEP_TOPLEVEL = ("def ", "async def ", "class ", "import ", "from ", "@")
_CONTINUATION = " \t)]}"


@dataclass(frozen=True)
class Cleaned:
    """A cleaned completion and what clean-up found out about it."""

    completion: str
    format_error: str = ""  # "" or MISSING_ENTRY_POINT
    fenced: bool = False
    truncated: bool = False


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Cut `text` at the earliest occurrence of any stop string; (text, whether it was cut)."""
    cut = min((i for s in stop if s and (i := text.find(s)) >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def strip_fences(text: str, entry_point: str | None = None) -> tuple[str, bool]:
    """Return the code inside chat-style ``` fences, or `text` unchanged when it has none.

    With several blocks, the one that defines `entry_point` wins, else the first.
    An unterminated block (the model ran out of tokens) counts up to the end.
    """
    if "```" not in text:
        return text, False
    blocks = [m.group(2) for m in _FENCE.finditer(text)]
    if not blocks:
        return text.replace("```", ""), True
    if entry_point:
        for b in blocks:
            if _defines(b, entry_point):
                return b, True
    return blocks[0], True


def _is_code_line(line: str) -> bool:
    s = line.strip()
    return bool(s) and not s.startswith("#")


def continues_body(prompt: str, completion: str) -> bool:
    """True when `completion` is the indented rest of a function the prompt opened."""
    first = next((ln for ln in completion.split("\n") if _is_code_line(ln)), None)
    if first is None:
        return True  # nothing but blanks/comments: nothing at column 0 to keep
    if first[0] in " \t":
        return True
    # A completion that starts mid-line (the prompt did not end with a newline) continues it.
    return bool(prompt) and not prompt.endswith("\n") and not completion.startswith("\n")


def truncate_function(prompt: str, completion: str, entry_point: str | None = None) -> tuple[str, bool]:
    """Cut `completion` where the function it writes ends; (text, whether anything was cut)."""
    lines = completion.split("\n")
    body = continues_body(prompt, completion)
    # A first line that finishes the prompt's last line is never an end.
    start = 1 if prompt and not prompt.endswith("\n") else 0
    defined = False
    for i in range(start, len(lines)):
        ln = lines[i]
        if not _is_code_line(ln) or ln[0] in _CONTINUATION:
            continue
        if body:
            return _join(lines[:i]), True
        if ln.startswith(_KEEP_TOPLEVEL):
            defined = defined or entry_point is None or _defines_line(ln, entry_point)
        elif defined:
            return _join(lines[:i]), True
        # else: a top-level constant or statement before the entry point: keep it
    return completion, False


def _join(lines: list[str]) -> str:
    return "\n".join(lines).rstrip() + "\n"


def _defines_line(line: str, name: str) -> bool:
    return bool(re.match(rf"(?:async\s+)?(?:def|class)\s+{re.escape(name)}\b", line))


def _defines(code: str, name: str) -> bool:
    """True when `code` defines `name` at module level (def, class, assignment or import)."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        pattern = rf"^(?:(?:async\s+)?(?:def|class)\s+{re.escape(name)}\b|{re.escape(name)}\s*=[^=])"
        return re.search(pattern, code, re.MULTILINE) is not None
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and node.name == name:
            return True
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                return True
        if isinstance(node, ast.Import | ast.ImportFrom):
            if any((a.asname or a.name.split(".")[0]) == name for a in node.names):
                return True
    return False


def defines_entry_point(prompt: str, completion: str, entry_point: str) -> bool:
    """True when the program prompt + completion defines `entry_point` at module level."""
    return _defines(prompt + completion, entry_point)


def opens_body(prompt: str) -> bool:
    """True when the prompt ends inside a function (its last code line is indented or opens a block)."""
    last = next((ln for ln in reversed(prompt.split("\n")) if ln.strip()), "")
    return last[:1] in (" ", "\t") or last.rstrip().endswith(":")


# Column-0 starts that end a function body (HumanEval's customary stop sequences, minus
# "\n#": a comment at column 0 does not end a body). For backends that stop on strings.
_BODY_STOPS = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\nassert ", "\n@")


def body_stop_sequences(prompt: str) -> list[str]:
    """Stop strings for a backend that can only stop on text (vLLM); [] for other prompts."""
    return list(_BODY_STOPS) if opens_body(prompt) else []


def is_finished(prompt: str, text: str, entry_point: str | None, stop: Sequence[str] = ()) -> bool:
    """Whether generation can stop: a stop sequence appeared or clean-up would cut `text` here.

    Called after every new token, so it only does work once a new line has begun. A body
    continuation ends at the first character of a column-0 code line; whole definitions
    are judged on complete lines only (a column-0 'd' may still become 'def').
    """
    if stop and any(s and s in text for s in stop):
        return True
    nl = text.rfind("\n")
    if nl < 0:
        return False
    if "```" in text:
        return text.count("```") >= 2 and text.rstrip().endswith("```")
    if continues_body(prompt, text):
        return truncate_function(prompt, text, entry_point)[1]
    return truncate_function(prompt, text[: nl + 1], entry_point)[1]


def clean_completion(
    prompt: str,
    completion: str,
    entry_point: str | None = None,
    stop: Sequence[str] = (),
) -> Cleaned:
    """Apply every clean-up step to one raw completion (see the module docstring)."""
    text, cut = cut_at_stop(completion, stop)
    text, fenced = strip_fences(text, entry_point)
    if fenced and prompt and not prompt.endswith("\n") and not text.startswith("\n"):
        text = "\n" + text  # fenced code is a new block, never the rest of the prompt's line
    text, truncated = truncate_function(prompt, text, entry_point)
    error = ""
    if entry_point and not defines_entry_point(prompt, text, entry_point):
        error = MISSING_ENTRY_POINT
    return Cleaned(completion=text, format_error=error, fenced=fenced, truncated=truncated or cut)
