"""User-facing errors: raised for bad input, printed by the CLI as one line, exit status 2."""


class UserError(Exception):
    """A mistake in what the user asked for (a bad path, key, value or run id), not a bug."""
