"""The one base exception for errors a user can fix.

Every expected failure (a bad config value, a missing or damaged file, music that cannot be
used) raises a subclass of :class:`MidiStructError` whose message is one line naming the file
or key and the reason. The CLI turns these into that line and exit code 2; any other exception
is a bug and keeps its traceback. This module imports nothing, so every layer may raise it.
"""

from __future__ import annotations


class MidiStructError(Exception):
    """A failure the user can fix; ``str(err)`` is one line naming what and why."""
