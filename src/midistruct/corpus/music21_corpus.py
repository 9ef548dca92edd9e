"""The corpus shipped inside the music21 package, converted once to MIDI in the user's cache.

music21 ships Bach chorales (MusicXML), Essen and Irish/Scottish folk tunes (ABC, many tunes per
file) and Renaissance vocal music (Humdrum, MusicXML). The first call converts the requested
collections in parallel into ``<cache>/music21/<music21 version>/<collection>/`` and records every
piece there in ``index.json``: its MIDI path and tags, or why it failed. Later calls read the index
and convert only what is missing. ``<cache>`` is the ``cache_dir`` option, else
``$MIDISTRUCT_CACHE``, else ``$XDG_CACHE_HOME/midistruct`` or ``~/.cache/midistruct``.

Derived MIDI never goes into the repository: Essen is licensed for non-commercial use and the
Palestrina encodings reserve derived formats, so they are read from the user's own music21 install.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from midistruct.corpus import Piece, SourceError
from midistruct.fsutil import replace_text

TICKS_PER_QUARTER = 480  # music21's default 10,080 makes long pieces unreadable by pretty_midi
INDEX_FORMAT = 1  # bump when conversion changes: older indexes are then converted again


@dataclass(frozen=True)
class Collection:
    """One collection of music21's corpus.

    Attributes:
        folder: sub-folder of music21's corpus.
        suffixes: score files to read, in order of preference when two share a stem.
        family: prefix of the split groups; collections of one family share groups, so a tune
            found in two fiddle books lands in one split.
        composer: composer tag for every piece ("" when unknown or per tune).
        exclude: regex of file names to skip.
    """

    folder: str
    suffixes: tuple[str, ...]
    family: str
    composer: str = ""
    exclude: str = ""


COLLECTIONS: dict[str, Collection] = {
    "bach": Collection("bach", (".mxl", ".xml", ".krn"), "bach", composer="J.S. Bach"),
    # test*.abc are music21's test fixtures: mostly copies of tunes found elsewhere
    "essen": Collection("essenFolksong", (".abc",), "essen", exclude=r"^test"),
    "oneills1850": Collection("oneills1850", (".abc",), "folk"),
    "ryansMammoth": Collection("ryansMammoth", (".abc",), "folk"),
    "airdsAirs": Collection("airdsAirs", (".abc",), "folk"),
    "palestrina": Collection("palestrina", (".krn",), "palestrina", composer="G.P. da Palestrina"),
    "monteverdi": Collection("monteverdi", (".mxl",), "monteverdi", composer="Claudio Monteverdi"),
}
# 4,658 pieces, about 600 CPU-seconds: 5.5 minutes on 2 busy cores (datasets/music21/README.md).
DEFAULT_COLLECTIONS = ("bach", "oneills1850", "ryansMammoth", "airdsAirs")

# Essen file stem (letters only) -> region: the sub-collection of the EsAC database it comes from.
ESSEN_REGIONS = {
    "han": "asia/china/han",
    "irl": "europe/ireland",
    "lot": "europe/lorraine",
    "lux": "europe/luxembourg",
}
ESSEN_GERMAN = "europe/germany"  # altdeu, ballad, boehme, dva, erk, fink, kinder, variant, zuccal

# Canonical tune type -> pattern, most specific first; matched on the ABC R: field, then the title.
TUNE_TYPES: tuple[tuple[str, str], ...] = (
    ("slip jig", r"slip\s*-?\s*jig"),
    ("set dance", r"set\s+dance"),
    ("jig", r"\bjigg?s?\b"),
    ("reel", r"\breels?\b"),
    ("hornpipe", r"hornpipe"),
    ("strathspey", r"strathspey"),
    ("fling", r"\bfling\b"),
    ("clog", r"\bclog\b"),
    ("schottische", r"schottische"),
    ("polka", r"\bpolka"),
    ("mazurka", r"mazurka"),
    ("waltz", r"\bwaltz"),
    ("minuet", r"\bminuet|\bmenuet"),
    ("gavotte", r"gavott"),
    ("march", r"\bmarch\b|quick\s*-?\s*step"),
    ("slide", r"\bslide\b"),
    ("air", r"\bairs?\b|\blament\b"),
)


@dataclass(frozen=True)
class Settings:
    """Resolved options of :func:`iter_music21`."""

    collections: tuple[str, ...]
    limit: int | None
    limit_per_collection: int | None
    cache_dir: Path
    workers: int
    time_cap_s: float
    max_notes: int
    progress: bool
    name: str

    def caps(self) -> dict[str, Any]:
        """The settings a conversion result depends on (stored with each failure)."""
        return {"time_cap_s": self.time_cap_s, "max_notes": self.max_notes,
                "ticks_per_quarter": TICKS_PER_QUARTER}


@dataclass(frozen=True)
class Job:
    """One piece to convert.

    Attributes:
        id: id within its collection, e.g. ``"altdeu10/12"`` (file stem / ABC tune number).
        source: the score file.
        abc: the tune's own ABC text when the file holds several tunes, else None.
        tags: tags known before parsing (collection, title, region, tune type...).
        keys: grouping keys; pieces sharing a key (transitively) share a split group.
        group: the split group (set by :func:`assign_groups`).
    """

    id: str
    source: str
    abc: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    keys: tuple[str, ...] = ()
    group: str = ""


# ---------------------------------------------------------------------------- options


def _cpu_count() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def default_cache_root() -> Path:
    """``$MIDISTRUCT_CACHE``, else ``$XDG_CACHE_HOME/midistruct``, else ``~/.cache/midistruct``."""
    if os.environ.get("MIDISTRUCT_CACHE"):
        return Path(os.environ["MIDISTRUCT_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(xdg).expanduser() / "midistruct"


OPTION_NAMES = ("collections", "limit", "limit_per_collection", "cache_dir", "workers",
                "time_cap_s", "max_notes", "progress", "name")


def _count_option(options: dict[str, Any], key: str) -> int | None:
    value = options.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise SourceError(f"music21 source: {key} must be a non-negative integer, got {value!r}")
    return value


def parse_options(options: dict[str, Any]) -> Settings:
    """Validate :func:`iter_music21` options; unknown names raise :class:`SourceError`."""
    unknown = sorted(set(options) - set(OPTION_NAMES))
    if unknown:
        valid = ", ".join(OPTION_NAMES)
        raise SourceError(f"music21 source: unknown options {unknown}; valid: {valid}")
    names = options.get("collections") or list(DEFAULT_COLLECTIONS)
    names = [names] if isinstance(names, str) else list(names)
    names = list(COLLECTIONS) if names == ["all"] else names
    bad = [n for n in names if n not in COLLECTIONS]
    if bad:
        valid = ", ".join(COLLECTIONS)
        raise SourceError(f"music21 source: unknown collections {bad}; valid: {valid} (or 'all')")
    import music21

    root = default_cache_root()
    root = Path(options["cache_dir"]).expanduser() if options.get("cache_dir") else root
    return Settings(
        collections=tuple(dict.fromkeys(names)),
        limit=_count_option(options, "limit"),
        limit_per_collection=_count_option(options, "limit_per_collection"),
        cache_dir=root / "music21" / music21.__version__,
        workers=max(1, int(options.get("workers") or _cpu_count())),
        time_cap_s=float(options.get("time_cap_s", 20.0)),
        max_notes=int(options.get("max_notes", 20_000)),
        progress=bool(options.get("progress", True)),
        name=str(options.get("name") or "music21"),
    )


# ---------------------------------------------------------------------------- listing


def split_abc(text: str) -> list[tuple[int, str]]:
    """The tunes of an ABC file as ``(reference number, tune text)``, in file order."""
    tunes: list[tuple[int, list[str]]] = []
    for line in text.splitlines():
        match = re.match(r"\s*X:\s*(\d+)", line)
        if match:
            tunes.append((int(match.group(1)), [line]))
        elif tunes:
            tunes[-1][1].append(line)
    return [(number, "\n".join(lines) + "\n") for number, lines in tunes]


def abc_fields(tune: str) -> dict[str, list[str]]:
    """Header fields of one ABC tune (``T``, ``R``, ``O``, ``N``...), up to its ``K:`` line."""
    fields: dict[str, list[str]] = {}
    for line in tune.splitlines():
        match = re.match(r"([A-Za-z]):(.*)", line)
        if not match:
            continue
        fields.setdefault(match.group(1), []).append(match.group(2).strip())
        if match.group(1) == "K":
            break
    return fields


def tune_type(rhythm: str, title: str) -> str:
    """Canonical tune type (jig, reel, hornpipe...) from the ABC ``R:`` field, else the title."""
    for text in (rhythm, title):
        for name, pattern in TUNE_TYPES:
            if re.search(pattern, text.lower()):
                return name
    return ""


def title_key(title: str) -> str:
    """A title reduced for matching: no articles, tune types, case or punctuation."""
    text = f" {title.lower()} "
    for _, pattern in TUNE_TYPES:
        text = re.sub(pattern, " ", text)
    text = re.sub(r"\b(the|a|an)\b", " ", text)
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-")


def _score_files(collection: Collection) -> list[Path]:
    from music21 import common

    folder = Path(common.getCorpusFilePath()) / collection.folder
    files: dict[str, Path] = {}
    for suffix in collection.suffixes:  # earlier suffixes win a shared stem
        for path in sorted(folder.glob(f"*{suffix}")):
            if not (collection.exclude and re.search(collection.exclude, path.name)):
                files.setdefault(path.stem, path)
    return sorted(files.values())


def _abc_jobs(name: str, path: Path) -> list[Job]:
    tunes = split_abc(path.read_text(encoding="utf-8", errors="replace"))
    jobs = []
    for number, tune in tunes:
        fields = abc_fields(tune)
        title = (fields.get("T") or [""])[0]
        tags = {"collection": name, "title": title}
        keys: list[str] = []
        if name == "essen":
            tags |= _essen_tags(path.stem, fields)
            catalog = [n for n in fields.get("N", []) if re.fullmatch(r"[A-Z]\d{4}[A-Z]?", n)]
            keys += [f"catalog:{catalog[0][:5]}"] if catalog else []  # A0364B -> A0364
        else:
            tags["tune_type"] = tune_type(" ".join(fields.get("R", [])), title)
            keys += [f"title:{title_key(title)}"] if title_key(title) else []
            keys += [f"oneills:{number}"] if name == "oneills1850" else []
        if fields.get("C"):
            tags["composer"] = fields["C"][0]
        rel = f"{path.stem}/{number}" if len(tunes) > 1 else path.stem
        jobs.append(Job(rel, str(path), tune if len(tunes) > 1 else None, tags, tuple(keys)))
    return jobs


def _essen_tags(stem: str, fields: dict[str, list[str]]) -> dict[str, str]:
    prefix = re.sub(r"\d+$", "", stem)
    region = ESSEN_REGIONS.get(prefix, f"{ESSEN_GERMAN}/{prefix}")
    return {"region": region, "origin": (fields.get("O") or [""])[0]}


def _score_job(name: str, path: Path) -> Job:
    """A job for a file holding one score (MusicXML, Humdrum)."""
    tags = {"collection": name}
    keys: tuple[str, ...] = ()
    if name == "bach":
        bwv = path.stem.removeprefix("bwv").split("-")[0]
        title = _bach_titles().get(bwv, "")
        tags |= {"title": title or f"BWV {path.stem.removeprefix('bwv')}", "bwv": bwv}
        keys = (f"bwv:{bwv}",) + ((f"title:{title_key(title)}",) if title else ())
    elif name == "palestrina":
        head = _humdrum_records(path)
        tags["title"] = ": ".join(v for v in (head.get("OPR", ""), head.get("OTL", "")) if v)
        keys = (f"mass:{head['OPR']}",) if head.get("OPR") else ()
    else:
        tags["title"] = path.stem
    return Job(path.stem, str(path), None, tags, keys)


@functools.cache
def _bach_titles() -> dict[str, str]:
    """BWV number (``"248.9"``) -> chorale title, from music21's Riemenschneider list."""
    from music21.corpus.chorales import ChoraleListRKBWV

    return {str(bwv): entry["title"] for bwv, entry in ChoraleListRKBWV().byBWV.items()}


def _humdrum_records(path: Path) -> dict[str, str]:
    """Reference records (``!!!OPR: ...``) at the top of a Humdrum file."""
    records = {}
    with path.open(encoding="utf-8", errors="replace") as file:
        for line in file:
            match = re.match(r"!!!(\w+):\s*(.*)", line)
            if not line.startswith("!!"):
                break
            if match:
                records.setdefault(match.group(1), match.group(2).strip())
    return records


def list_jobs(name: str) -> list[Job]:
    """Every piece of one collection, in a stable order, with tags known from the file text."""
    collection = COLLECTIONS[name]
    jobs = []
    for path in _score_files(collection):
        jobs += _abc_jobs(name, path) if path.suffix == ".abc" else [_score_job(name, path)]
    if collection.composer:
        composer = {"composer": collection.composer}
        jobs = [dataclasses.replace(job, tags=job.tags | composer) for job in jobs]
    return jobs


def assign_groups(jobs: dict[str, Job], family: str) -> dict[str, str]:
    """Split group of each piece: pieces sharing a key, directly or through others, share one.

    Args:
        jobs: piece id -> job, for every piece of a family (so groups do not depend on limits).
        family: group name prefix.

    Returns:
        piece id -> ``"music21/<family>/<smallest key of the group>"``, or ``"music21/<piece id>"``
        when the piece has no key.
    """
    parent: dict[str, str] = {}

    def find(key: str) -> str:
        while parent.setdefault(key, key) != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    for job in jobs.values():
        for key in job.keys[1:]:
            parent[max(find(job.keys[0]), find(key))] = min(find(job.keys[0]), find(key))
    return {pid: f"music21/{family}/{find(job.keys[0])}" if job.keys else f"music21/{pid}"
            for pid, job in jobs.items()}


# ---------------------------------------------------------------------------- conversion


class _PieceTimeout(BaseException):
    """Raised by the alarm; a BaseException so that music21's ``except Exception`` cannot eat it."""


@contextmanager
def time_cap(seconds: float) -> Iterator[None]:
    """Raise :class:`_PieceTimeout` after ``seconds`` (only on the main thread; else no cap)."""
    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield
        return

    def alarm(signum: int, frame: Any) -> None:
        raise _PieceTimeout

    start = time.monotonic()
    previous = signal.signal(signal.SIGALRM, alarm)
    outer_delay, outer_interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer_delay:  # an outer timer (pytest-timeout...) keeps its deadline
            left = max(outer_delay - (time.monotonic() - start), 1e-3)
            signal.setitimer(signal.ITIMER_REAL, left, outer_interval)


def unshare_time_signatures(score: Any) -> int:
    """Give each measure its own TimeSignature objects; returns how many were copied.

    music21's ABC reader puts one TimeSignature object into every measure where a meter
    returns (alternating meters); writing MIDI then fails until the duplicates are copies.
    """
    from music21 import meter, stream

    seen: set[int] = set()
    copied = 0
    for measure in score.recurse().getElementsByClass(stream.Measure):
        for ts in list(measure.getElementsByClass(meter.TimeSignature)):
            if id(ts) in seen:
                measure.replace(ts, copy.deepcopy(ts))
                copied += 1
            seen.add(id(ts))
    return copied


SECTION_BARLINES = {"double", "final", "light-light", "light-heavy", "heavy-light", "heavy-heavy"}


def add_implied_repeat_starts(score: Any) -> int:
    """Mark where a repeat without a start repeat begins; returns how many starts were added.

    By engraving convention a ``:|`` with no ``|:`` repeats from the previous repeat or double
    bar (past any second ending), only the first one from the beginning. music21 repeats each
    from the beginning, and its ABC reader reads ``:|:`` as an end repeat and a dotted bar, so
    a tune written ``A :|: B :|: C :|`` expands to ``A A B A A B C ...``: wrong music, and
    exponentially long in the number of parts.
    """
    from music21 import bar, spanner, stream

    added = 0
    def in_ending(measure: Any) -> bool:
        return any(isinstance(s, spanner.RepeatBracket) for s in measure.getSpannerSites())

    for part in score.parts or [score]:
        measures = list(part.getElementsByClass(stream.Measure))
        start, is_open = None, False  # where an implied repeat would start; inside |: ... ?
        for i, measure in enumerate(measures):
            left = measure.leftBarline
            if isinstance(left, bar.Repeat) and left.direction == "start":
                is_open = True
            while start is not None and start < i and in_ending(measures[start]):
                start += 1  # a second ending belongs to the section before
            right = measure.rightBarline
            if isinstance(right, bar.Repeat) and right.direction == "end":
                if not is_open and start is not None and start <= i:
                    measures[start].leftBarline = bar.Repeat(direction="start")
                    added += 1
                start, is_open = i + 1, False
            elif right is not None and right.type in SECTION_BARLINES and not is_open:
                start = i + 1
    return added


def remove_repeats(score: Any) -> int:
    """Remove repeat barlines, repeat brackets and repeat expressions; returns how many."""
    from music21 import bar, repeat, spanner, stream

    removed = 0
    for measure in score.recurse().getElementsByClass(stream.Measure):
        for side in ("leftBarline", "rightBarline"):
            if isinstance(getattr(measure, side), bar.Repeat):
                setattr(measure, side, bar.Barline("regular"))
                removed += 1
        for expression in list(measure.getElementsByClass(repeat.RepeatExpression)):
            measure.remove(expression)
            removed += 1
    for site in [score, *score.recurse().getElementsByClass(stream.Stream)]:
        for bracket in list(site.getElementsByClass(spanner.RepeatBracket)):
            site.remove(bracket)
            removed += 1
    return removed


def _load_score(job: Job) -> Any:
    from music21 import converter, stream

    if job.abc is not None:
        score = converter.parse(job.abc, format="abc")
    else:
        score = converter.parse(job.source, forceSource=True, storePickle=False)
    if isinstance(score, stream.Opus):  # a one-tune ABC file still parses as an Opus at times
        score = score.scores[0]
    return score


def score_tags(score: Any) -> dict[str, str]:
    """``key`` (first key signature with a mode, else music21's key analysis) and ``meter``."""
    from music21 import key, meter

    tags = {}
    first = score.recurse().getElementsByClass(key.KeySignature).first()
    found = first if isinstance(first, key.Key) else None
    if found is None and score.recurse().notes.first() is not None:
        found = score.analyze("key")
    if found is not None:
        tags["key"] = f"{found.tonic.name.replace('-', 'b')} {found.mode}"
    ts = score.recurse().getElementsByClass(meter.TimeSignature).first()
    tags["meter"] = ts.ratioString if ts is not None else "none"
    return tags


def fix_score(score: Any, *, abc: bool) -> list[str]:
    """Repair what music21 needs repaired before writing MIDI; returns the names of the fixes."""
    fixes = ["unshared-time-signatures"] if unshare_time_signatures(score) else []
    if abc and add_implied_repeat_starts(score):
        fixes.append("implied-repeat-starts")
    return fixes


def write_midi(score: Any, out: Path) -> tuple[int, list[str]]:
    """Write ``score`` as MIDI (480 ticks per quarter) atomically; returns (notes, fixes applied).

    A score whose repeats cannot be expanded is written again with its repeats removed.
    """
    from music21 import defaults, repeat

    fixes = []
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.{os.getpid()}.tmp.mid")  # symusic reads the suffix
    saved, defaults.ticksPerQuarter = defaults.ticksPerQuarter, TICKS_PER_QUARTER
    try:
        try:
            score.write("midi", fp=str(tmp))
        except repeat.ExpanderException:
            if not remove_repeats(score):
                raise
            fixes.append("removed-repeats")
            score.write("midi", fp=str(tmp))
        notes = count_notes(tmp)
        os.replace(tmp, out)
    finally:
        defaults.ticksPerQuarter = saved
        tmp.unlink(missing_ok=True)
    return notes, fixes


def count_notes(path: Path) -> int:
    """Notes in a MIDI file, read with symusic (so the file is known to load)."""
    import symusic

    return sum(len(track.notes) for track in symusic.Score(str(path)).tracks)


def convert_job(job: Job, *, out_dir: str, caps: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Convert one piece to ``out_dir/<job.id>.mid``; never raises.

    Returns:
        (job id, index entry): ``{"path", "tags", "notes", "seconds"}`` or, on failure,
        ``{"error", "caps", "seconds"}``.
    """
    start = time.monotonic()
    out = Path(out_dir) / f"{job.id}.mid"
    try:
        with time_cap(caps["time_cap_s"]):
            score = _load_score(job)
            tags = {**job.tags, **score_tags(score)}
            fixes = fix_score(score, abc=job.source.endswith(".abc"))
            notes, more_fixes = write_midi(score, out)
            fixes += more_fixes
        entry: dict[str, Any] = {"path": f"{job.id}.mid", "tags": tags, "notes": notes}
        entry |= {"fixes": fixes} if fixes else {}
        if notes == 0 or notes > caps["max_notes"]:
            entry = {"error": f"{notes} notes (cap {caps['max_notes']})" if notes else "no notes"}
    except _PieceTimeout:
        entry = {"error": f"timeout: over {caps['time_cap_s']:g} s"}
    except Exception as err:  # a failed piece is recorded in the index, never raised
        entry = {"error": f"{type(err).__name__}: {err}"[:300]}
    if "error" in entry:
        out.unlink(missing_ok=True)
        entry["caps"] = caps
    entry["seconds"] = round(time.monotonic() - start, 3)
    return job.id, entry


def _run(func: Callable[[Job], Any], jobs: list[Job], workers: int) -> Iterator[Any]:
    """``map`` in a process pool (or in this process for one worker or one job)."""
    if workers <= 1 or len(jobs) <= 1:
        yield from map(func, jobs)
        return
    import multiprocessing

    # maxtasksperchild: music21 keeps caches that grow over thousands of scores
    with multiprocessing.Pool(min(workers, len(jobs)), maxtasksperchild=400) as pool:
        yield from pool.imap_unordered(func, jobs, chunksize=4)


# ---------------------------------------------------------------------------- index


def _load_index(path: Path) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data.get("pieces", {}) if data.get("format") == INDEX_FORMAT else {}


def _write_index(path: Path, pieces: dict[str, dict[str, Any]]) -> None:
    """Write the index atomically (temporary file, then ``os.replace``)."""
    import music21

    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"format": INDEX_FORMAT, "music21": music21.__version__, "pieces": pieces}
    replace_text(path, json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False))


def _is_current(entry: dict[str, Any] | None, folder: Path, settings: Settings) -> bool:
    """Whether an index entry answers for the current settings (else convert again)."""
    if entry is None:
        return False
    if "error" in entry:
        return entry.get("caps") == settings.caps()
    return (folder / entry["path"]).is_file()


def convert_collection(name: str, jobs: list[Job], settings: Settings) -> dict[str, Any]:
    """Convert the jobs of one collection that its index lacks; returns the index entries."""
    folder = settings.cache_dir / name
    index = _load_index(folder / "index.json")
    todo = [job for job in jobs if not _is_current(index.get(job.id), folder, settings)]
    if todo:
        from tqdm import tqdm

        func = functools.partial(convert_job, out_dir=str(folder), caps=settings.caps())
        bar = tqdm(total=len(todo), desc=f"music21 {name} -> MIDI", unit="piece",
                   file=sys.stderr, disable=not settings.progress)
        try:
            for job_id, entry in _run(func, todo, settings.workers):
                index[job_id] = entry
                bar.update()
        finally:
            bar.close()
            _write_index(folder / "index.json", index)
    return index


def _converted(settings: Settings) -> Iterator[tuple[str, list[Job], dict[str, Any]]]:
    """(name, jobs within the limits, index) of each requested collection, converting first."""
    remaining = settings.limit
    for name in settings.collections:
        jobs = list(_family_jobs(COLLECTIONS[name].family)[name])
        jobs = jobs[: settings.limit_per_collection][:remaining]
        remaining = None if remaining is None else remaining - len(jobs)
        if jobs:
            yield name, jobs, convert_collection(name, jobs, settings)


@functools.cache
def _family_jobs(family: str) -> dict[str, tuple[Job, ...]]:
    """Jobs of every collection of a family, with their split groups (listed once per process)."""
    members = [n for n, c in COLLECTIONS.items() if c.family == family]
    listed = {member: list_jobs(member) for member in members}
    groups = assign_groups({f"{m}/{j.id}": j for m in members for j in listed[m]}, family)
    return {m: tuple(dataclasses.replace(j, group=groups[f"{m}/{j.id}"]) for j in listed[m])
            for m in members}


def _failure(entry: dict[str, Any], settings: Settings) -> str:
    if "error" in entry:
        return entry["error"]
    if entry["notes"] > settings.max_notes:
        return f"{entry['notes']} notes (cap {settings.max_notes})"
    return ""


# ---------------------------------------------------------------------------- public


def iter_music21(options: dict[str, Any]) -> Iterator[Piece]:
    """Yield the pieces of music21's corpus, converting to MIDI once into the user's cache.

    Options:
        collections: names from :data:`COLLECTIONS` (default :data:`DEFAULT_COLLECTIONS`;
            ``"all"`` for every one).
        limit: keep the first N pieces in all (before conversion; default: all).
        limit_per_collection: keep the first N pieces of each collection (default: all).
        cache_dir: cache root (default: see module docstring).
        workers: conversion processes (default: the CPUs this process may use).
        time_cap_s: per-piece conversion time cap in seconds (default 20).
        max_notes: pieces with more notes in their MIDI are left out (default 20,000).
        progress: show a progress bar on stderr while converting (default True).
        name: prefix of the piece ids (default ``"music21"``).

    Ids are ``<name>/<collection>/<file stem>[/<ABC tune number>]``. Tags: collection, title,
    key, meter, composer (where known), region and origin (Essen), tune_type (fiddle books),
    bwv (Bach). Pieces that failed to convert are left out; :func:`conversion_failures` lists them.
    """
    settings = parse_options(options)
    for name, jobs, index in _converted(settings):
        folder = settings.cache_dir / name
        for job in jobs:
            entry = index[job.id]
            if _failure(entry, settings):
                continue
            # tags from the file text are listed afresh; those from the score come from the index
            tags = {k: v for k, v in (entry["tags"] | job.tags).items() if v}
            yield Piece(id=f"{settings.name}/{name}/{job.id}", path=folder / entry["path"],
                        group=job.group, tags=tags)


def conversion_failures(options: dict[str, Any]) -> dict[str, str]:
    """Pieces that :func:`iter_music21` leaves out with the same options: piece id -> reason.

    Converts first when the cache lacks some pieces, like :func:`iter_music21`.
    """
    settings = parse_options(options)
    failures = {}
    for name, jobs, index in _converted(settings):
        for job in jobs:
            reason = _failure(index[job.id], settings)
            if reason:
                failures[f"{settings.name}/{name}/{job.id}"] = reason
    return failures
