"""Behaviour flags read from the completion text itself.

These are the patterns seed reports counted by hand: a model that writes a test file,
file paths or a README instead of code, degenerate repetition, self-tests appended to
the solution, and modules used without being imported. Flags never change a verdict.
"""

from __future__ import annotations

import ast
import itertools
import re
import threading
import zlib
from collections import Counter

FLAGS = ("test_file", "file_path_or_readme", "repetition", "self_test", "missing_import")

# Bounded, backtracking-free patterns: completions are hostile and these run in the judge.
_TEST_FILE = re.compile(
    r"(\btests?/[\w./-]{0,120}?\.py\b|^[ \t]*(import|from)[ \t]+(pytest|unittest)\b|"
    r"^[ \t]*def[ \t]+test_\w{0,80}\(|^[ \t]*class[ \t]+Test\w{0,80}\()",
    re.MULTILINE,
)
_PATH_LINE = re.compile(
    r"^\s*(#\s*)?(\.{0,2}/)?[\w.-]+(/[\w.-]+)+\.(py|md|txt|json|toml|cfg|yaml|yml|ini|sh)\s*$", re.MULTILINE
)
_README = re.compile(r"(\bREADME\b|^```|<filename>|<reponame>|<gh_stars>|^#{1,3} [A-Z][\w ]+$)", re.MULTILINE)

# Names a completion may use as `module.attr` or bare, and the module that provides them.
_MODULES = frozenset(
    "math re collections itertools functools heapq bisect string random statistics operator sys os json "
    "hashlib datetime fractions decimal copy typing cmath array time".split()
)
_BARE = {
    "List": "typing",
    "Dict": "typing",
    "Tuple": "typing",
    "Optional": "typing",
    "Any": "typing",
    "Counter": "collections",
    "defaultdict": "collections",
    "deque": "collections",
    "OrderedDict": "collections",
    "reduce": "functools",
    "lru_cache": "functools",
    "cache": "functools",
    "gcd": "math",
    "sqrt": "math",
    "floor": "math",
    "ceil": "math",
    "heappush": "heapq",
    "heappop": "heapq",
    "permutations": "itertools",
    "combinations": "itertools",
    "product": "itertools",
    "accumulate": "itertools",
    "bisect_left": "bisect",
}


_TOP_LEVEL = re.compile(r"^(?![ \t]|#|def |class |async |@|import |from |$)", re.MULTILINE)
_MODULE_NAME = re.compile(r"\b(" + "|".join(sorted(_MODULES | set(_BARE))) + r")\b")
MAX_CHARS = 16_384  # flags look at the head of a completion; a megabyte of text says no more


def behaviour_flags(prompt: str, completion: str) -> tuple[str, ...]:
    """The flags (a subset of FLAGS, in FLAGS order) that this completion shows."""
    completion = completion[:MAX_CHARS]
    found: set[str] = set()
    if _TEST_FILE.search(completion):
        found.add("test_file")
    if _PATH_LINE.search(completion) or _README.search(completion):
        found.add("file_path_or_readme")
    if _repetitive(completion):
        found.add("repetition")
    # Parsing is the costly part: only when a cheap scan says a flag is possible.
    top_level = _TOP_LEVEL.search(completion) is not None
    maybe_module = _MODULE_NAME.search(completion) is not None
    tree = _parse(prompt + completion) if top_level or maybe_module else None
    if top_level and _self_test(tree, completion):
        found.add("self_test")
    if maybe_module and tree is not None and _missing_import(tree):
        found.add("missing_import")
    return tuple(f for f in FLAGS if f in found)


# CPython 3.11 before 3.11.8 keeps the AST converter's recursion depth in per-interpreter
# state: two threads turning source into `ast` objects (or `ast` objects into code) at once
# can fail with "SystemError: AST constructor recursion depth mismatch". The judges run in
# threads, so every such conversion in rlvf.verify holds this lock (they take microseconds).
AST_LOCK = threading.Lock()


def _parse(source: str) -> ast.Module | None:
    try:
        with AST_LOCK:
            return ast.parse(source)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return None


def _repetitive(text: str) -> bool:
    lines = [ln.strip() for ln in text.splitlines() if len(ln.strip()) >= 8]
    run = best = 1
    for a, b in itertools.pairwise(lines):
        run = run + 1 if a == b else 1
        best = max(best, run)
    if best >= 4:
        return True
    if lines and Counter(lines).most_common(1)[0][1] >= 6:
        return True
    data = text.encode("utf-8", "replace")
    return len(data) >= 400 and len(zlib.compress(data)) / len(data) < 0.12


def _self_test(tree: ast.Module | None, completion: str) -> bool:
    if tree is None:
        return bool(re.search(r"^(if __name__|assert |print\()", completion, re.MULTILINE))
    for node in tree.body:
        if isinstance(node, ast.Assert):
            return True
        if isinstance(node, ast.If) and "__name__" in ast.unparse(node.test):
            return True
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            return True
    return False


def _missing_import(tree: ast.Module) -> bool:
    bound: set[str] = set()
    used: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                bound.add((alias.asname or alias.name).split(".")[0])
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.Name):
            if isinstance(node.ctx, ast.Store):
                bound.add(node.id)
            else:
                used.add(node.id)
    return any((name in _MODULES or name in _BARE) and name not in bound for name in used)
