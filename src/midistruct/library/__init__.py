"""A library of pieces (issue 17): one vector per piece, nearest pieces, and a radio that chains them.

The data flow, one module each: ``features`` (a piece's codes from a model, or the pitch-class + duration
histogram baseline), ``store`` (:class:`~midistruct.library.store.Library`: every piece of a folder embedded,
cached by file content, saved as one .npz), ``search`` (cosine nearest neighbours), ``radio`` (a playlist
from a seed, each step a smooth transition), ``evaluate`` (the proxies of docs/RESULTS.md).

Shapes: N pieces, D piece-vector width, NB bars of a piece, Zb bar-code width.
"""

from midistruct.errors import MidiStructError


KEY_WEIGHT = 0.3  # the key signatures' share of the radio's likeness and transitions (radio; docs/RESULTS.md, issue 17)


class LibraryError(MidiStructError, ValueError):
    """A library file or folder that cannot be used (missing, empty, another model's); one-line message."""
