"""A tracking server that refuses this user, said in one line.

Why: against a team server with basic auth (scripts/team_server.sh), a wrong or missing
password comes back from MLflow as an `MlflowException` whose text is a 401 page, raised from
whichever call touched the server first, with a traceback; a user without the permission gets
PERMISSION_DENIED (403). Both are the user's to fix (credentials, or a grant from the server's
admin), so the CLI prints this line and exits 2 instead.
"""

from __future__ import annotations

import os
import sys


def _chain(e: BaseException):
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ or cur.__context__


def refused(e: BaseException) -> str:
    """The one line for a server that refused the credentials or the request ('' otherwise)."""
    if "mlflow" not in sys.modules:  # nothing talked to a tracking server
        return ""
    from mlflow.exceptions import MlflowException

    for cur in _chain(e):
        if not isinstance(cur, MlflowException):
            continue
        text = str(cur)
        uri = _uri()
        user = os.environ.get("MLFLOW_TRACKING_USERNAME", "").strip()
        if cur.error_code == "UNAUTHENTICATED" or "error code 401" in text:
            who = f"the credentials of {user!r}" if user else "a request without credentials"
            return (
                f"tracking server {uri} refused {who} (401): set MLFLOW_TRACKING_USERNAME and "
                "MLFLOW_TRACKING_PASSWORD to a user of that server"
            )
        if cur.error_code == "PERMISSION_DENIED" or "error code 403" in text:
            return (
                f"tracking server {uri} denied {user or 'this user'} the request (403): "
                "ask the server's admin for EDIT (or MANAGE) permission on the experiment or model"
            )
    return ""


def _uri() -> str:
    try:
        import mlflow

        return mlflow.get_tracking_uri()
    except Exception:  # pragma: no cover - only for the message
        return os.environ.get("MLFLOW_TRACKING_URI", "?")
