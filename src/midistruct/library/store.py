"""A :class:`Library`: every MIDI file under a folder embedded once, cached by its content, saved as .npz.

A second run over a grown folder (``previous=`` the saved library) encodes only files whose content hash it
has not seen under the same model and features; moved or renamed files keep their vectors. Files that cannot
be read are listed in ``skipped`` with their reason and left out. Each piece's key signature is kept too
(``keys``, for the radio); a library saved before keys loads with ``keys`` None, and a second embed reads them
from the files without encoding anything again.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from midistruct.errors import MidiStructError, MidiStructWarning, one_line
from midistruct.library import LibraryError
from midistruct.library.features import PieceCodes, file_key

MIDI_SUFFIXES = (".mid", ".midi", ".smf", ".kar")
FORMAT = 1


@dataclass
class Library:
    """N pieces: ``paths`` relative to ``root``; ``vectors`` (N, D); bar vectors (sum NB, Zb) concatenated in
    ``bars``, piece i's at ``bars[offsets[i]:offsets[i + 1]]``; ``model`` and ``features`` say what made them."""

    root: str
    model: str
    features: str
    paths: list[str]
    hashes: list[str]
    vectors: np.ndarray
    bars: np.ndarray
    offsets: np.ndarray
    skipped: dict[str, str] = field(default_factory=dict)
    tracks: str | None = None  # the tracks embedded: a regular expression over track names; None for all
    time_signature: str | None = None  # the meter every file was read in ("4/4"); None: each file's own
    keys: np.ndarray | None = None  # (N,) each piece's key signature (PieceCodes.key; -1 unknown); None: made before
    downbeat: str | None = None  # "auto": each file's bar lines estimated from its notes; None: the files' own
    encoded: int = 0  # pieces encoded by the run that made this object (the rest came from the cache); not saved
    warned: dict[str, str] = field(default_factory=dict)  # {path: warning} from this run's encoding; not saved

    def __len__(self) -> int:
        return len(self.paths)

    def piece_bars(self, i: int) -> np.ndarray:
        """(NB, Zb) the bar vectors of piece ``i``."""
        return self.bars[self.offsets[i] : self.offsets[i + 1]]

    def index_of(self, path_or_hash: str) -> int | None:
        """The piece with this content hash or path (relative to root), else None."""
        for names in (self.hashes, self.paths):
            if path_or_hash in names:
                return names.index(path_or_hash)
        return None

    def save(self, path: str | Path) -> Path:
        """Write one .npz (written beside, then renamed: a reader never sees half a library)."""
        path = Path(path)
        if path.suffix != ".npz":
            raise LibraryError(f"a library file ends in .npz, got {path.name}")
        meta = {"format": FORMAT, "root": self.root, "model": self.model, "features": self.features,
                "paths": self.paths, "hashes": self.hashes, "skipped": self.skipped, "tracks": self.tracks,
                "time_signature": self.time_signature, "downbeat": self.downbeat}
        tmp = path.with_name(f".{path.name}.{os.getpid()}.npz")
        # bar vectors in float16: only cosines are taken of them, and they are most of the file (POP909's 2,898
        # songs hold 780k bars: 200 MB in float32)
        keys = {} if self.keys is None else {"keys": np.asarray(self.keys, dtype=np.int8)}
        np.savez(tmp, vectors=self.vectors, bars=self.bars.astype(np.float16), offsets=self.offsets,
                 meta=json.dumps(meta), **keys)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Library:
        """Read a file written by :meth:`save`; :class:`LibraryError` naming it when it is not one."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as f:
                meta = json.loads(str(f["meta"]))
                arrays = {k: f[k] for k in ("vectors", "bars", "offsets")}
                arrays["bars"] = arrays["bars"].astype(np.float32)
                arrays["keys"] = f["keys"].astype(np.int64) if "keys" in f.files else None  # None: made before keys
        except (OSError, KeyError, ValueError) as err:
            raise LibraryError(f"{path}: not a library written by `midistruct embed` ({err})") from None
        if meta.get("format") != FORMAT:
            raise LibraryError(f"{path}: library format {meta.get('format')}, this version reads {FORMAT}")
        return cls(root=meta["root"], model=meta["model"], features=meta["features"], paths=meta["paths"],
                   hashes=meta["hashes"], skipped=meta["skipped"], tracks=meta.get("tracks"),
                   time_signature=meta.get("time_signature"), downbeat=meta.get("downbeat"), **arrays)


def midi_files(folder: str | Path) -> list[Path]:
    """Every MIDI file under ``folder`` by suffix (any case), sorted; :class:`LibraryError` if there is none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise LibraryError(f"{folder}: not a folder")
    found = sorted(p for p in folder.rglob("*") if p.suffix.lower() in MIDI_SUFFIXES and p.is_file())
    if not found:
        raise LibraryError(f"{folder}: no MIDI files (looked for {', '.join(MIDI_SUFFIXES)})")
    return found


def content_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:32]


def embed_folder(folder: str | Path, encode: Callable[[Path], PieceCodes], *, model: str, features: str,
                 tracks: str | None = None, time_signature: str | None = None, downbeat: str | None = None,
                 previous: Library | None = None, progress: bool = True,
                 save: Callable[[Library], object] | None = None, save_every: int = 500) -> Library:
    """Embed every MIDI file under ``folder`` with ``encode`` (:mod:`midistruct.library.features`), reusing
    ``previous``'s vectors for files whose content it holds when it was made by the same model, features,
    ``tracks``, ``time_signature`` and ``downbeat`` (recorded in the library: the regular expression over track
    names, the meter and the bar lines ("auto" or None) ``encode`` was made with). A :class:`~midistruct.errors.MidiStructWarning` while a file is encoded
    (a meter the model rarely saw) is kept in the result's ``warned``, not printed: one line per file would
    bury the progress bar.

    ``save`` is called with the library so far after every ``save_every`` encoded pieces, so that a long run
    that is stopped loses little: given back as ``previous``, those pieces are not encoded again."""
    from tqdm import tqdm

    files = midi_files(folder)
    placing = {"tracks": tracks, "time_signature": time_signature, "downbeat": downbeat}
    reuse = _reusable(previous, model=model, features=features, **placing)
    rows, skipped, warned, encoded = [], {}, {}, 0
    for path in tqdm(files, desc="embed", unit="piece", disable=not progress):
        rel, digest = path.relative_to(folder).as_posix(), content_hash(path)
        if digest in reuse:
            vector, bars, key = reuse[digest]
            rows.append((rel, digest, vector, bars, file_key(path, tracks=tracks) if key is None else key))
            continue
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", MidiStructWarning)
                piece = encode(path)
        except MidiStructError as err:
            skipped[rel] = one_line(err)
            continue
        except Exception as err:  # noqa: BLE001 - one strange file must not stop a 10,000-piece run
            skipped[rel] = f"{type(err).__name__}: {one_line(err)}"
            continue
        encoded += 1
        rows.append((rel, digest, piece.vector, piece.bars, piece.key))
        notes = [str(w.message) for w in caught if issubclass(w.category, MidiStructWarning)]
        if notes:
            warned[rel] = " ".join(notes)
        for w in caught:  # anything else is shown as it would have been
            if not issubclass(w.category, MidiStructWarning):
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        if save is not None and encoded % save_every == 0:
            save(_library(Path(folder), rows, model=model, features=features, skipped=skipped, encoded=encoded,
                          **placing))
    if not rows:
        raise LibraryError(f"{folder}: none of {len(files)} MIDI files could be embedded "
                           f"(first: {next(iter(skipped.items()))})")
    library = _library(Path(folder), rows, model=model, features=features, skipped=skipped, encoded=encoded,
                       **placing)
    library.warned = warned
    return library


def model_id(checkpoint: str | Path) -> str:
    """``NAME@<sha256 of model.safetensors, 12 hex>``: a library's cache is reused only for the same weights."""
    from midistruct.model.pretrained import resolve  # (imports torch and transformers: kept local)

    weights = Path(resolve(checkpoint)) / "model.safetensors"
    return f"{checkpoint}@{hashlib.sha256(weights.read_bytes()).hexdigest()[:12]}"


def same_model(a: str, b: str) -> bool:
    """Model ids (``NAME@<weights hash>``, or ``none``) name the same weights, however the folder was spelt."""
    return a.split("@")[-1] == b.split("@")[-1]


def _reusable(previous: Library | None, *, model: str, features: str, tracks: str | None, time_signature: str | None,
              downbeat: str | None) -> dict[str, tuple[np.ndarray, np.ndarray, int | None]]:
    if previous is None or (previous.features, previous.tracks, previous.time_signature, previous.downbeat) != (
            features, tracks, time_signature, downbeat):
        return {}
    if not same_model(previous.model, model):
        return {}
    keys = previous.keys if previous.keys is not None else [None] * len(previous)  # None: read it from the file
    return {h: (previous.vectors[i], previous.piece_bars(i), keys[i]) for i, h in enumerate(previous.hashes)}


def _library(root: Path, rows, *, model: str, features: str, skipped: dict, encoded: int,
             tracks: str | None, time_signature: str | None, downbeat: str | None) -> Library:
    paths, hashes, vectors, bars, keys = zip(*rows)
    offsets = np.cumsum([0, *(len(b) for b in bars)])
    return Library(root=str(root.resolve()), model=model, features=features, paths=list(paths),
                   hashes=list(hashes), vectors=np.stack(vectors).astype(np.float32),
                   bars=np.concatenate(bars).astype(np.float32), offsets=offsets, skipped=skipped, encoded=encoded,
                   tracks=tracks, time_signature=time_signature, downbeat=downbeat,
                   keys=np.array(keys, dtype=np.int64))
