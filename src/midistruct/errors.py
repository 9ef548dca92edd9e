"""The one base exception for errors a user can fix.

Every expected failure (a bad config value, a missing or damaged file, music that cannot be
used) raises a subclass of :class:`MidiStructError` whose message is one line naming the file
or key and the reason. The CLI turns these into that line and exit code 2; any other exception
is a bug and keeps its traceback. This module imports nothing, so every layer may raise it.
"""

from __future__ import annotations


class MidiStructError(Exception):
    """A failure the user can fix; ``str(err)`` is one line naming what and why."""


class MidiStructWarning(UserWarning):
    """Something the user should know before trusting a result, with what to do about it; one line. The CLI
    prints it as ``midistruct: warning: ...``; the Python API raises it through :mod:`warnings`."""


def one_line(err: BaseException, limit: int = 300) -> str:
    """``str(err)`` on one line, at most ``limit`` characters (library messages can span many)."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
