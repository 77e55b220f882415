"""User-facing errors.

Anything a user can cause (a wrong name, a missing file, a malformed row) raises one of these, and
the command line prints its message without a traceback. Anything else is a bug and keeps its
traceback. ConfigError is also a ValueError, so `attentions.build("nope")` raises a ValueError as
the public contract says.
"""

import difflib


class LRAError(Exception):
    """Base class of errors whose message is meant for the user."""


class ConfigError(LRAError, ValueError):
    """An unknown name or option, or a value out of range."""


class DataError(LRAError):
    """Data that is missing, malformed or unreadable."""


class MissingDataError(DataError, FileNotFoundError):
    """The files a task needs are not where they were looked for."""


class StorageError(LRAError):
    """A folder the suite must write (results, checkpoints, cache, reports) cannot be written, or a
    file it wrote cannot be read back (a damaged checkpoint). The message names the path and the fix."""


class AlreadyDone(ConfigError):
    """What was asked for is already there (a complete generated dataset): a command says so and
    succeeds. A ConfigError, so a caller that does not expect it still stops before any work."""


def did_you_mean(word: str, choices) -> str:
    """' (did you mean 'x'?)' when a close match exists, else ''."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
