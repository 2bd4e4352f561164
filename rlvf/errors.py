"""User-facing errors: raised for bad input, printed by the CLI as one line, exit status 2."""

import errno


class UserError(Exception):
    """A mistake in what the user asked for (a bad path, key, value or run id), not a bug."""


def disk_full(e: BaseException) -> str:
    """The one line for a full disk or exhausted quota ('' for any other error).

    Not the user's mistake, but not a bug either: a traceback would bury the one fact
    that matters (which disk), so the CLI prints this line and exits 1."""
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        where = f" writing {e.filename}" if e.filename else ""
        return f"no space left on device{where}: free some space (or point TMPDIR / tracking.output_dir elsewhere) and re-run"
    return ""
