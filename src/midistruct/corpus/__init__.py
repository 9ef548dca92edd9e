"""Corpus sources: each yields :class:`Piece` records (a stable id, a MIDI path, tags).

A source is a function ``(options: dict) -> Iterator[Piece]`` registered in
:data:`SOURCES` under its ``kind`` name. Sources never tokenize or validate; they
only find music and describe it. Use :func:`iter_pieces` with a source config
(``{"kind": "folder", "path": ...}``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from midistruct.errors import MidiStructError


@dataclass(frozen=True)
class Piece:
    """One piece of music found by a source.

    Attributes:
        id: stable identifier, unique within a corpus, e.g. ``"pop909/001-v2"``.
        path: MIDI file to read.
        group: split group; all versions/arrangements of one song share it, so a
            song never straddles train/valid/test. Defaults to ``id``.
        tags: string metadata (collection, composer, key, meter, tune type, ...).
            The tag ``time_signature`` (``"4/4"``) is an instruction, not just a
            description: the file's own time signatures are replaced by it before
            tokenization (for corpora whose MIDI meters are wrong, such as POP909).
    """

    id: str
    path: Path
    group: str = ""
    tags: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.group:
            object.__setattr__(self, "group", self.id)


class SourceError(MidiStructError, ValueError):
    """A source cannot be read as configured (missing folder, wrong layout...)."""


# kind -> "module:function"; modules are imported lazily so `import midistruct` stays cheap.
SOURCES: dict[str, str] = {
    "folder": "midistruct.corpus.folder:iter_folder",
    "music21": "midistruct.corpus.music21_corpus:iter_music21",
    "pop909": "midistruct.corpus.pop909:iter_pop909",
    "nottingham": "midistruct.corpus.nottingham:iter_nottingham",
}


def limit_option(options: dict[str, Any]) -> int | None:
    """``options["limit"]`` as a non-negative int (None when absent): the sources' cap on items."""
    limit = options.get("limit")
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise SourceError(f"corpus source: limit must be a non-negative integer, got {limit!r}")
    return limit


def get_source(kind: str) -> Callable[[dict[str, Any]], Iterator[Piece]]:
    """Return the source function registered as ``kind``; unknown names list the valid ones."""
    if kind not in SOURCES:
        raise SourceError(f"unknown corpus source {kind!r}; valid: {', '.join(sorted(SOURCES))}")
    module, func = SOURCES[kind].split(":")
    return getattr(importlib.import_module(module), func)


def source_failures(source: dict[str, Any]) -> dict[str, str]:
    """Pieces a source found but could not provide (id -> reason), for the prepare report.

    Sources that convert music (music21) define ``conversion_failures(options)`` in their
    module; the others never fail this way.
    """
    options = dict(source)
    module = SOURCES[options.pop("kind")].split(":")[0]
    func = getattr(importlib.import_module(module), "conversion_failures", None)
    return func(options) if func is not None else {}


def iter_pieces(source: dict[str, Any]) -> Iterator[Piece]:
    """Yield the pieces of one source config, e.g. ``{"kind": "folder", "path": "midi/"}``."""
    options = dict(source)
    kind = options.pop("kind", None)
    if kind is None:
        raise SourceError(f"corpus source needs a 'kind'; valid: {', '.join(sorted(SOURCES))}")
    yield from get_source(kind)(options)
