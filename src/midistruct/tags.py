"""Tags (issue 18): the labels a window carries, read from its piece's tags, and the one way a user names one.

A *tag* is a name and a string value, such as ``key=D minor`` or ``tune_type=reel``. Corpus sources store
piece tags in the shards' ``pieces.jsonl`` (:class:`midistruct.corpus.Piece`; a folder source reads them from
the user's CSV, :func:`midistruct.corpus.folder.read_tags_csv`). A window's tags are those of its piece, read
through :data:`TAGS`: each entry turns ``(piece tags, piece id, the window's meter)`` into a value or None,
so that spellings are merged (``"Gb:maj"``, ``"F# major"`` and ``"G- major"`` all give ``"F# major"``).

Users name tags as ``name=value`` (``--tag key=D:minor``); :func:`parse_tag` splits that and
:func:`canonical` brings the value to the spelling :data:`TAGS` produces. Whoever knows a tag's values (the
tagged code prior, :mod:`midistruct.model.prior`) checks membership and lists the known ones on a miss.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from midistruct.errors import MidiStructError

PITCH_CLASSES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
_LETTERS = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
_MODES = {"maj": "major", "min": "minor"}


class TagError(MidiStructError, ValueError):
    """A tag that is malformed, unknown, or has a value nobody knows."""


def parse_key(text: str | None) -> tuple[int, str] | None:
    """Tonic pitch class and mode of a key tag: "F# minor", "Bb major", "B- dorian" (music21),
    "Gb:maj" (POP909), "D:minor" (the command line). None when unreadable."""
    if not text:
        return None
    parts = text.replace(":", " ").split()
    if len(parts) != 2 or parts[0][0].upper() not in _LETTERS:
        return None
    tonic, mode = parts[0], parts[1].lower()
    shift = sum({"#": 1, "b": -1, "-": -1}.get(c, 99) for c in tonic[1:])
    if shift > 12:  # a character that is not an accidental
        return None
    return (_LETTERS[tonic[0].upper()] + shift) % 12, _MODES.get(mode, mode)


def _mode(tags: dict, piece_id: str, meter: str | None) -> str | None:
    key = parse_key(tags.get("key"))
    return key[1] if key else None


def _key(tags: dict, piece_id: str, meter: str | None) -> str | None:
    key = parse_key(tags.get("key"))
    return f"{PITCH_CLASSES[key[0]]} {key[1]}" if key else None


def _tonic(tags: dict, piece_id: str, meter: str | None) -> str | None:
    key = parse_key(tags.get("key"))
    return PITCH_CLASSES[key[0]] if key else None


def _meter(tags: dict, piece_id: str, meter: str | None) -> str | None:
    return meter or tags.get("time_signature") or tags.get("meter")


def _tag(name: str) -> Callable[[dict, str, str | None], str | None]:
    return lambda tags, piece_id, meter: tags.get(name) or None


def _source(tags: dict, piece_id: str, meter: str | None) -> str | None:
    return piece_id.split("/", 1)[0] or None


_PHRASE = re.compile(r"([A-Za-z])([0-9]+)")
# POP909's phrase labels (Dai et al. 2020): upper case letters are sections with melody (A, B, C ... in order of
# first appearance; X a melodic phrase that does not recur), lower case ones have none.
SECTION_NAMES = {"i": "intro", "o": "outro", "b": "bridge", "x": "other"}


def parse_phrase_labels(text: str) -> list[tuple[str, int]]:
    """Split a phrase string into ``(letter, bars)`` pairs; whitespace is ignored.

    ``"i4A4B8"`` -> ``[("i", 4), ("A", 4), ("B", 8)]``. Upper case letters are melodic
    sections (A, B, ... and X), lower case ones are not (i intro, o outro, b bridge, x other).
    Raises ValueError when the text is empty or is not a sequence of letter+number.
    """
    compact = "".join(text.split())
    if not compact or _PHRASE.sub("", compact):
        raise ValueError(f"not a phrase label string: {text!r}")
    return [(letter, int(bars)) for letter, bars in _PHRASE.findall(compact)]


def bar_sections(text: str) -> list[str]:
    """The section of every labelled bar: ``"i2A2"`` -> ``["intro", "intro", "A", "A"]``."""
    return [SECTION_NAMES.get(letter, letter) for letter, bars in parse_phrase_labels(text) for _ in range(bars)]


# The classes a bar's section is supervised with (``model.section_head``, issue 18 item 5): POP909's first
# melodic sections, its non-recurring melodic phrase and the four sections without melody. Later letters (E, F
# ...) are rare and song-specific; their bars, like unlabelled ones, teach nothing.
SECTION_CLASSES = ("A", "B", "C", "D", "X", "intro", "outro", "bridge", "other")
_SECTION_INDEX = {name: i for i, name in enumerate(SECTION_CLASSES)}


def window_bar_sections(tags: dict, first_bar: int, n_bars: int) -> list[str | None] | None:
    """The section of each of a window's ``n_bars`` bars from its piece's ``phrases`` labels and ``label_bar``,
    the bar of the tokens where the labels' bar 0 is (prepare writes it); None for a bar outside the labels.
    None when the piece has no (readable) labels."""
    if "phrases" not in tags or "label_bar" not in tags:
        return None
    try:
        sections, zero = bar_sections(tags["phrases"]), int(tags["label_bar"])
    except ValueError:
        return None
    return [sections[b - zero] if 0 <= b - zero < len(sections) else None for b in range(first_bar, first_bar + n_bars)]


def bar_section_classes(tags: dict, first_bar: int, n_bars: int) -> list[int]:
    """Each of a window's ``n_bars`` bars as its index in :data:`SECTION_CLASSES` (:func:`window_bar_sections`);
    -100 for a bar without a label or of another section."""
    return [_SECTION_INDEX.get(name, -100) for name in window_bar_sections(tags, first_bar, n_bars) or [None] * n_bars]


def _section(tags: dict, first_bar: int, n_bars: int) -> str | None:
    """The section most of a window's bars lie in (the earliest on a tie) (:func:`window_bar_sections`); None
    when the piece has no labels or under half of the window lies inside them."""
    found = [name for name in window_bar_sections(tags, first_bar, n_bars) or [] if name is not None]
    if 2 * len(found) <= n_bars:  # at least half of the window must be labelled
        return None
    return max(dict.fromkeys(found), key=found.count)


# A tag labels a window from its piece's tags, its piece id and its own meter (its TimeSig token).
TAGS: dict[str, Callable[[dict, str, str | None], str | None]] = {
    "mode": _mode,  # the key tag's mode word: major, minor, dorian ...
    "key": _key,  # tonic pitch class and mode, enharmonics merged: "F# minor"
    "tonic": _tonic,
    "key_signature": _tag("key_signature"),  # the MIDI file's accidentals, "2#" (prepare reads it)
    "meter": _meter,
    "collection": _tag("collection"),  # music21: bach, oneills1850 ...; nottingham; pop909
    "tune_type": _tag("tune_type"),  # reel, jig, hornpipe ... (Nottingham, the fiddle books)
    "source": _source,  # the first part of the piece id: music21, nottingham, pop909
}

# A bar tag labels a window from its piece's tags and the window's bars (its first bar, how many).
BAR_TAGS: dict[str, Callable[[dict, int, int], str | None]] = {
    "section": _section,  # POP909's phrase labels: A, B, C ... (with melody), intro, outro, bridge, other
}

# What a model may be conditioned on (the code prior's default): the musical tags. ``source`` and
# ``key_signature`` say where a file came from or how it was written, not what it sounds like.
CONDITIONING_TAGS = ("key", "mode", "tonic", "tune_type", "collection", "meter", "section")


def known(name: str) -> bool:
    return name in TAGS or name in BAR_TAGS


def window_tags(tags: dict, piece_id: str, meter: str | None, *, bar: int | None = None, n_bars: int = 0,
                names=None) -> dict[str, str]:
    """The tags of one window: every tag of ``names`` (default all of :data:`TAGS` and :data:`BAR_TAGS`) that
    has a value; bar tags only when the window's first ``bar`` (and its ``n_bars``) is given."""
    found = {}
    for name in names or [*TAGS, *BAR_TAGS]:
        if name in BAR_TAGS:
            value = BAR_TAGS[name](tags, bar, n_bars) if bar is not None else None
        else:
            value = TAGS[name](tags, piece_id, meter)
        if value:
            found[name] = value
    return found


def canonical(name: str, value: str) -> str:
    """``value`` spelt as :data:`TAGS` spells it: keys as "D minor" (from "D:minor", "d min", "C#:maj"),
    tonics as a pitch class name ("Db" -> "C#"); other tags as given, without surrounding spaces."""
    value = value.strip()
    if name == "key":
        key = parse_key(value)
        return f"{PITCH_CLASSES[key[0]]} {key[1]}" if key else value
    if name == "tonic":
        key = parse_key(f"{value} major")
        return PITCH_CLASSES[key[0]] if key else value
    if name == "mode":
        return _MODES.get(value.lower(), value.lower())
    return value


# The tags a transposition moves: moving a piece by ``s`` semitones moves its tonic by ``s`` and its key
# signature by ``7 * s`` fifths (a sharp is a fifth up). :func:`transpose_tag` moves them.
TRANSPOSABLE_TAGS = ("key", "tonic", "key_signature")


def transpose_tag(name: str, value: str | None, semitones: int) -> str | None:
    """The tag ``name``'s ``value`` for the piece moved up by ``semitones``: "D major" +5 -> "G major", tonic
    "A" -2 -> "G", key signature "1#" +5 -> "0" (G major moved to C major) and "2#" +3 -> "1b" (D major to
    F major); signatures are spelt with at most 6 flats and 5 sharps (F# major's 6 sharps as "6b"), since a move
    cannot tell enharmonic spellings apart. None for an unreadable value or a tag no transposition moves (mode,
    meter ...)."""
    if not value or name not in TRANSPOSABLE_TAGS:
        return None
    if name == "key_signature":
        match = re.fullmatch(r"\s*(?:0|([1-7])([#b]))\s*", value)
        if not match:
            return None
        sharps = int(match[1]) * (1 if match[2] == "#" else -1) if match[1] else 0
        fifths = (sharps + 7 * semitones + 6) % 12 - 6  # -6..5
        return "0" if fifths == 0 else f"{abs(fifths)}{'#' if fifths > 0 else 'b'}"
    key = parse_key(value if name == "key" else f"{value} major")
    if not key:
        return None
    tonic = PITCH_CLASSES[(key[0] + semitones) % 12]
    return f"{tonic} {key[1]}" if name == "key" else tonic


def parse_tag(text: str) -> tuple[str, str]:
    """``"key=D:minor"`` -> ``("key", "D minor")``; :class:`TagError` unless it is ``name=value``."""
    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep or not name or not value.strip():
        raise TagError(f"a tag is written name=value, such as key=D:minor or tune_type=reel; got {text!r}")
    return name, canonical(name, value)


def parse_tags(texts: list[str] | None) -> dict[str, str]:
    """Several ``name=value`` texts as one dict; :class:`TagError` when a name comes twice."""
    found: dict[str, str] = {}
    for text in texts or []:
        name, value = parse_tag(text)
        if name in found:
            raise TagError(f"tag {name} given twice ({found[name]!r} and {value!r}); give each tag once")
        found[name] = value
    return found
