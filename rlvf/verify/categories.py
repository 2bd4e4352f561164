"""The failure taxonomy every Outcome carries."""

from __future__ import annotations

PASS = "pass"
CATEGORIES: tuple[str, ...] = (
    PASS,
    "assertion_error",  # wrong answer (or the program's own assert failed)
    "name_error",
    "type_error",
    "syntax_error",
    "import_error",
    "recursion_error",
    "runtime_error",  # any other exception; Outcome.exc_type keeps its name
    "timeout",  # wall-clock or CPU limit, also a program that passed its tests but did not end
    "memory_error",
    "output_limit",  # printed past Limits.output_mb, or a file past Limits.file_mb
    "tampering",  # early exit, harness tampering, rigged return values
    "forbidden_side_effect",  # file outside the sandbox, process spawn, network, signals
    "format_error",  # the entry point the tests call is missing, or the program is oversized
    "no_code",  # empty completion
    "invalid_input",  # the record cannot be judged (unknown task, missing fields)
    "infra_error",  # the sandbox itself failed while judging: no verdict on the sample at all
)
INFRA_ERROR = "infra_error"

_BY_EXCEPTION = {
    "AssertionError": "assertion_error",
    "NameError": "name_error",
    "UnboundLocalError": "name_error",
    "TypeError": "type_error",
    "SyntaxError": "syntax_error",
    "IndentationError": "syntax_error",
    "TabError": "syntax_error",
    "ImportError": "import_error",
    "ModuleNotFoundError": "import_error",
    "RecursionError": "recursion_error",
    "MemoryError": "memory_error",
    "SystemExit": "tampering",
    "KeyboardInterrupt": "tampering",
    "GeneratorExit": "tampering",
    # Inside the sandbox, a refused permission means the code reached for something outside it.
    "PermissionError": "forbidden_side_effect",
}


def category_of_exception(exc_type: str, message: str = "") -> str:
    """Map an exception's type name (from either side of the sandbox) to a category."""
    if exc_type in _BY_EXCEPTION:
        return _BY_EXCEPTION[exc_type]
    if exc_type in ("OSError", "IOError") and ("File too large" in message or "No space left" in message):
        return "output_limit"
    if exc_type == "ValueError" and "null bytes" in message:
        return "syntax_error"
    return "runtime_error"
