"""Shipped models (issue 15): checkpoint folders inside the package, found by name.

A shipped model is an ordinary checkpoint folder (:mod:`midistruct.model.checkpoint`, weights in
bf16 or fp16, no trainer state) at ``<root>/<name>/``, with two more files and a folder::

    card.json    name, description, what it models, bars, parameters, data, licence, the headline
                 metric (name, value, the command that measured it), config, steps, dtype, examples
    README.md    its model card, written from card.json
    examples/    a few held-out pieces to try it on (``midistruct quickstart`` interpolates the first two);
                 card.json lists them as ``examples/<file>``

``<root>`` is ``src/midistruct/pretrained/`` (installed as package data), or ``$MIDISTRUCT_PRETRAINED_DIR``
when that is set (the tests' temporary registries; a private collection of models). :func:`resolve` turns
what a user typed into a folder: an existing path wins, then a shipped name. :func:`export` writes a shipped
folder from a training checkpoint and refuses one over :data:`MAX_MODEL_BYTES`, a registry over
:data:`MAX_REGISTRY_BYTES`, or, inside a registry, a model trained on music whose licence forbids shipping
its weights (:func:`licence_problems`; the rule is in ``src/midistruct/pretrained/README.md``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Sequence

import torch
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from midistruct.errors import one_line
from midistruct.fsutil import replace_dir
from midistruct.model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from midistruct.model.prior import PRIOR_FILE, load_prior
from midistruct.tokens.views import VIEW_TEXT

ENV_VAR = "MIDISTRUCT_PRETRAINED_DIR"
PACKAGE_DIR = Path(__file__).resolve().parents[1] / "pretrained"
CARD_FILE = "card.json"
README_FILE = "README.md"
EXAMPLES_DIR = "examples"
MAX_MODEL_BYTES = 16_000_000  # one shipped model; the small config (6.8M parameters) is ~14 MB in bf16
MAX_REGISTRY_BYTES = 48_000_000  # all of them: they are inside every installed wheel
DTYPES = {"bf16": "bfloat16", "fp16": "float16"}
NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
# Issue 15: weights carry their training music's terms, so only these sources may ship
# (datasets/music21/README.md, datasets/pop909/README.md). Essen is non-commercial, Palestrina reserves
# derived formats, Nottingham is GPL-3 (evaluation only); a folder's licence is unknown.
SHIPPABLE_MUSIC21 = ("bach", "oneills1850", "ryansMammoth", "airdsAirs")
SHIPPABLE_KINDS = ("music21", "pop909")


class PretrainedError(CheckpointError):
    """An unknown model name, a bad model card, or an export that may not be written; one line."""


# ---- the registry --------------------------------------------------------------------------------

def root() -> Path:
    """The registry folder: ``$MIDISTRUCT_PRETRAINED_DIR`` when set, else the package's ``pretrained/``."""
    return Path(os.environ[ENV_VAR]).expanduser() if os.environ.get(ENV_VAR) else PACKAGE_DIR


def names() -> list[str]:
    """The shipped models' names, sorted: the folders of :func:`root` that hold a ``card.json``."""
    folder = root()
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if NAME.fullmatch(p.name) and (p / CARD_FILE).is_file())


def describe(name: str) -> dict[str, Any]:
    """A shipped model's ``card.json`` plus ``path`` (its folder); :class:`PretrainedError` for an unknown name."""
    if name not in names():
        raise PretrainedError(f"no shipped model is called {name!r}; {_known()}")
    folder = root() / name
    try:
        card = json.loads((folder / CARD_FILE).read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise PretrainedError(f"{folder / CARD_FILE} is not valid JSON ({one_line(err)})") from None
    return {**card, "path": str(folder)}


def example_paths(name: str) -> list[Path]:
    """The example MIDI files a shipped model carries (card.json's ``examples``), in order; [] for none.
    :class:`PretrainedError` for an unknown name or a listed file that is missing."""
    card = describe(name)
    paths = [Path(card["path"]) / rel for rel in card.get("examples", [])]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise PretrainedError(f"shipped model {name!r}: example {missing[0]} is listed in {CARD_FILE} but missing")
    return paths


def resolve(name_or_path: str | Path) -> Path:
    """The checkpoint folder ``name_or_path`` means: an existing path as it is (a file too, so that the
    checkpoint check can say it is a file), else the folder of the shipped model of that name.

    Raises :class:`PretrainedError` naming the folder that does not exist and the shipped names.
    """
    path = Path(name_or_path)
    if path.exists():
        return path
    text = str(name_or_path)
    if not NAME.fullmatch(text):
        raise PretrainedError(f"checkpoint folder {path} does not exist; {_known()}")
    if text not in names():
        raise PretrainedError(f"checkpoint folder {path} does not exist and {text!r} is no shipped model name; "
                              f"{_known()}")
    return root() / text


def _known() -> str:
    found = names()
    return f"shipped models: {', '.join(found)}" if found else "no models are shipped yet (see `midistruct models`)"


# ---- the model card ------------------------------------------------------------------------------

class Metric(BaseModel):
    """The headline number of a model and the command that measured it."""

    model_config = ConfigDict(extra="forbid")
    name: str
    value: float
    command: str


class Card(BaseModel):
    """What ``midistruct export --card FILE`` reads (YAML or JSON); facts the checkpoint knows
    (parameters, bars, config, steps) are not written here but read from it."""

    model_config = ConfigDict(extra="forbid")
    name: str | None = None  # the output folder's name; when given, it must be that name
    description: str  # one line
    models: str  # what it models, e.g. "4-bar fiddle-tune melodies"
    data: str  # the music it was trained on
    licence: str  # of the weights, which follows from the data's
    metric: Metric
    notes: str = ""  # free text for the model card: limits, how it was chosen

    @field_validator("description", "models", "data", "licence")
    @classmethod
    def _one_line(cls, value: str) -> str:
        if not value.strip() or "\n" in value.strip():
            raise ValueError("must be one non-empty line")
        return value.strip()


def read_card(path: str | Path) -> dict[str, Any]:
    """A card file's mapping (YAML, so JSON too); :class:`PretrainedError` when unreadable."""
    import yaml

    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise PretrainedError(f"card file {path} does not exist") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise PretrainedError(f"card file {path} cannot be read ({one_line(err)})") from None
    if not isinstance(raw, dict):
        raise PretrainedError(f"card file {path} must be a mapping (description:, models:, data:, ...)")
    return raw


def _checked_card(raw: dict[str, Any], name: str) -> Card:
    try:
        card = Card.model_validate(raw)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise PretrainedError(f"model card: {problems}") from None
    if card.name not in (None, name):
        raise PretrainedError(f"model card names {card.name!r} but the output folder is {name!r}")
    return card


# ---- export --------------------------------------------------------------------------------------

def export(checkpoint: str | Path, output: str | Path, *, card: dict[str, Any], dtype: str = "bf16",
           examples: Sequence[str | Path] = ()) -> dict[str, Any]:
    """Write ``checkpoint`` (a folder or shipped name) as a shipped model folder at ``output``.

    The weights are stored in ``dtype`` (``"bf16"`` or ``"fp16"``; :func:`~midistruct.model.checkpoint.load_checkpoint`
    gives float32 back), the trainer state is left out, absolute paths in the run config become relative
    ones (:func:`portable_paths`), and ``card.json`` + ``README.md`` are written from ``card`` (see
    :class:`Card`) and the checkpoint's facts. ``examples`` (MIDI files: held-out, public-domain pieces of a
    few KB) are copied into ``examples/`` and listed in card.json, in order. The folder appears complete or
    not at all; an earlier export there is replaced. Returns the card written.

    Raises :class:`PretrainedError` for a bad name or card, a missing or unreadable example, an output that
    holds something else, a folder (examples included) over :data:`MAX_MODEL_BYTES`, and, when ``output`` is
    in a registry (:data:`PACKAGE_DIR` or :func:`root`), a registry over :data:`MAX_REGISTRY_BYTES` or
    training music that may not ship.
    """
    output = Path(output)
    if not NAME.fullmatch(output.name):
        raise PretrainedError(f"{output}: a model name is lowercase letters, digits, '.', '_', '-' "
                              "(up to 64, starting with a letter or digit)")
    if dtype not in DTYPES:
        raise PretrainedError(f"dtype {dtype!r}; valid: {', '.join(DTYPES)}")
    checked = _checked_card(card, output.name)
    examples = _checked_examples(examples)
    _check_replaceable(output)
    model, tokenizer, meta = load_checkpoint(checkpoint)
    registry = _registry_of(output)
    if registry is not None and (problems := licence_problems(_trained_on(meta))):
        raise PretrainedError(f"{output} is in the shipped models' folder {registry}, and its training music may "
                              f"not ship: {'; '.join(problems)} (src/midistruct/pretrained/README.md)")
    facts = _facts(model, meta, dtype)
    prior = load_prior(resolve(checkpoint))  # sampling's code prior travels with the weights (float16, small)
    if prior is not None:
        facts["code_prior"] = prior_summary(prior)
    staging = output.with_name(f".{output.name}.export-{os.getpid()}")
    try:
        listed = [f"{EXAMPLES_DIR}/{_example_name(p)}" for p in examples]
        _write(staging, model=model, tokenizer=tokenizer, meta=meta, dtype=dtype,
               card={"name": output.name, **checked.model_dump(exclude={"name", "notes"}), **facts,
                     "examples": listed},
               notes=checked.notes)
        _copy_examples(examples, staging / EXAMPLES_DIR)
        if prior is not None:
            prior.save(staging / PRIOR_FILE, half=True)
        _check_size(staging, output, registry)
        replace_dir(staging, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return json.loads((output / CARD_FILE).read_text())


def prior_summary(prior) -> str:
    """One line on a code prior for a model card: its Gaussian and the tags it knows (issue 18)."""
    text = (f"Gaussian over {prior.dim} code dimensions (rank {prior.factor.shape[1]} + diagonal), fitted to "
            f"{prior.windows} training windows"
            + (f"; each sampled bar code snapped to the nearest of {len(prior.bank)} real bars' codes"
               if prior.bank is not None else ""))
    if prior.tags:
        text += "; tags for `--tag`: " + ", ".join(f"{name} ({len(g.values)} values)" for name, g in prior.tags.items())
    return text


def _write(folder: Path, *, model, tokenizer, meta: dict, dtype: str, card: dict, notes: str) -> None:
    """The checkpoint files in ``dtype``, card.json and README.md into ``folder``."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    shipped = {k: v for k, v in meta.items() if k not in ("format", "midistruct_version")}
    shipped["run_config"] = portable_paths(meta["run_config"])
    if "init" in meta:
        shipped["init"] = portable_paths(meta["init"])
    shipped["export"] = {"dtype": DTYPES[dtype], "trained_with": meta.get("midistruct_version")}
    save_checkpoint(folder, model=model.to(getattr(torch, DTYPES[dtype])), tokenizer=tokenizer, meta=shipped,
                    state=None)
    (folder / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n")
    (folder / README_FILE).write_text(model_card(card, notes=notes))


def _checked_examples(examples: Sequence[str | Path]) -> list[Path]:
    """``examples`` as paths, each an existing, readable MIDI file with its own file name."""
    from midistruct.tokens.validate import Skip, load_score

    paths = [Path(p) for p in examples]
    for path in paths:
        if not path.exists():
            raise PretrainedError(f"example {path} does not exist")
        try:
            load_score(path)
        except Skip as reason:
            raise PretrainedError(f"example {path}: {reason}") from None
    seen = [_example_name(p) for p in paths]
    if len(set(seen)) < len(seen):
        twice = next(n for n in seen if seen.count(n) > 1)
        raise PretrainedError(f"two examples would be {EXAMPLES_DIR}/{twice}; each is copied there by its file name")
    return paths


def _example_name(path: Path) -> str:
    """The name an example gets in ``examples/``: its stem + ``.mid`` (the package data pyproject.toml ships)."""
    return f"{path.stem}.mid"


def _copy_examples(examples: list[Path], folder: Path) -> None:
    if examples:
        folder.mkdir()
    for path in examples:
        shutil.copyfile(path, folder / _example_name(path))


def _facts(model, meta: dict, dtype: str) -> dict[str, Any]:
    """What the checkpoint itself says about the model, for card.json."""
    from midistruct import __version__

    run = meta["run_config"]
    c = model.config
    return {"bars": run["segments"]["bars"], "parameters": sum(p.numel() for p in model.parameters()),
            "config": run.get("name"), "steps": meta.get("step"), "dtype": DTYPES[dtype],
            "architecture": f"{c.latent_mode}, d_model {c.d_model}, {c.encoder_layers}+{c.decoder_layers} layers, "
                            f"bar code {c.latent_dim_bar if c.bar_latents else 0}, segment code {c.latent_dim_segment}, "
                            f"{c.conditioning} conditioning",
            "midistruct_version": __version__,
            **({"blocks": {name: part.stop - part.start for name, part in c.block_slices().items()}}
               if c.views else {}),
            **({"fine_tuned_from": _init_text(meta["init"])} if meta.get("init") else {})}


def _blocks_text(blocks: dict[str, int]) -> str:
    """``"content (64 numbers a bar: ...); arrangement (32: ...)"``: each block and what its view shows."""
    return "; ".join(f"{name} ({width}{' numbers a bar' if i == 0 else ''}: {VIEW_TEXT.get(name, name)})"
                     for i, (name, width) in enumerate(blocks.items()))


def _init_text(init: dict[str, Any]) -> str:
    """``"folk-2bar (shipped model, step 2758)"``: the checkpoint a run started from (``midistruct train --init``)."""
    where = portable_paths(init.get("checkpoint", "?"))
    what = ["shipped model"] if init.get("shipped") else []
    what += [f"step {init['step']}"] if init.get("step") is not None else []
    return f"{where} ({', '.join(what)})" if what else where


def model_card(card: dict[str, Any], *, notes: str = "") -> str:
    """The README.md of a shipped model, from its card.json (and the card file's free ``notes``)."""
    m = card["metric"]
    rows = [("what it models", card["models"]), ("bars per window", card["bars"]),
            ("parameters", f"{card['parameters']:,}"), ("architecture", card["architecture"]),
            *([("functional blocks (bar code)", _blocks_text(card["blocks"]))] if card.get("blocks") else []),
            ("config", f"`{card['config']}`"), ("training steps", card["steps"]),
            *([("fine-tuned from", card["fine_tuned_from"])] if card.get("fine_tuned_from") else []),
            ("data", card["data"]),
            ("licence", card["licence"]), ("weights", f"{card['dtype']} safetensors, loaded as float32"),
            *([("sampling", f"from a fitted code prior: {card['code_prior']}")] if card.get("code_prior") else []),
            (m["name"], f"{m['value']:g}, measured by `{m['command']}`")]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    name = card["name"]
    return (f"# {name}\n\n{card['description']}\n\n| | |\n| --- | --- |\n{table}\n\n"
            f"## Use\n\n```bash\nmidistruct reconstruct {name} tune.mid -o out/\n"
            f"midistruct interpolate {name} a.mid b.mid --steps 8 -o out/\n"
            + (f"midistruct sample {name} -n 4 -o out/\n" if card.get("code_prior")
               or "vae" in str(card.get("architecture", "")).split(",")[0] else "")
            + (f"midistruct tags {name}   # what --tag NAME=VALUE takes, e.g. sample {name} --tag mode=minor\n"
               if "tags for `--tag`" in card.get("code_prior", "") else "")
            + "".join(f"midistruct transfer {name} song.mid --{block}-from other.mid -o out/\n"
                      for block in card.get("blocks", {}) if block != "content")
            + "```\n\n"
            f"```python\nfrom midistruct.generation.pipeline import MidiStruct\n"
            f"ms = MidiStruct.from_pretrained({name!r})\n```\n"
            + _examples_section(card.get("examples", []))
            + (f"\n## Notes\n\n{notes.strip()}\n" if notes.strip() else ""))


def _examples_section(examples: list[str]) -> str:
    """The model card's list of the example pieces (relative links, so they work beside the card)."""
    if not examples:
        return ""
    items = "\n".join(f"- [{Path(e).name}]({e})" for e in examples)
    return (f"\n## Examples\n\nPieces to try it on, in `{EXAMPLES_DIR}/`, none of them trained on; "
            f"`midistruct quickstart` interpolates between the first two.\n\n{items}\n")


def portable_paths(value: Any) -> Any:
    """``value`` (a run config) with every absolute path made machine-independent: relative to the current
    folder when inside it, ``~/...`` when inside the home folder, else its last part."""
    if isinstance(value, dict):
        return {k: portable_paths(v) for k, v in value.items()}
    if isinstance(value, list):
        return [portable_paths(v) for v in value]
    if not isinstance(value, str) or not Path(value).is_absolute():
        return value
    path = Path(os.path.abspath(value))
    for base, prefix in ((Path.cwd(), ""), (Path.home(), "~")):
        try:
            rest = path.relative_to(os.path.abspath(base))
        except ValueError:
            continue
        return str(Path(prefix, rest)) if prefix or rest.parts else "."
    return path.name


def licence_problems(run_config: dict[str, Any]) -> list[str]:
    """Why weights trained with ``run_config``'s sources may not ship (empty when they may):
    only :data:`SHIPPABLE_KINDS`, and of music21 only :data:`SHIPPABLE_MUSIC21`."""
    from midistruct.corpus.music21_corpus import COLLECTIONS, DEFAULT_COLLECTIONS

    problems = []
    for source in run_config.get("data", {}).get("sources", []):
        kind = source.get("kind")
        if kind not in SHIPPABLE_KINDS:
            problems.append(f"source kind {kind!r} (shippable: {', '.join(SHIPPABLE_KINDS)})")
        elif kind == "music21":
            wanted = source.get("collections") or list(DEFAULT_COLLECTIONS)
            wanted = list(COLLECTIONS) if wanted == "all" else wanted
            bad = [c for c in wanted if c not in SHIPPABLE_MUSIC21]
            if bad:
                problems.append(f"music21 collections {', '.join(bad)} (shippable: {', '.join(SHIPPABLE_MUSIC21)})")
    return problems


def _trained_on(meta: dict[str, Any]) -> dict[str, Any]:
    """``meta``'s run config with the data sources of the checkpoint it started from (``init``) added: weights
    fine-tuned from a model carry that model's training music too."""
    run = meta["run_config"]
    earlier = (meta.get("init") or {}).get("sources", [])
    return {**run, "data": {**run.get("data", {}), "sources": run.get("data", {}).get("sources", []) + earlier}}


def _registry_of(output: Path) -> Path | None:
    """The registry ``output`` would be a model of, or None when its parent is no registry."""
    parent = Path(os.path.abspath(output)).parent
    for registry in (root(), PACKAGE_DIR):
        if parent == Path(os.path.abspath(registry)):
            return registry
    return None


def _check_replaceable(output: Path) -> None:
    """An export may create ``output``, fill an empty folder, or replace an earlier export; nothing else."""
    if output.is_dir() and any(output.iterdir()) and not (output / CARD_FILE).is_file():
        raise PretrainedError(f"{output} holds files but no {CARD_FILE}: it is not an earlier export; "
                              "choose another output folder")
    if output.exists() and not output.is_dir():
        raise PretrainedError(f"{output} is a file; the output is a folder")


def _check_size(staging: Path, output: Path, registry: Path | None) -> None:
    size = folder_bytes(staging)
    if size > MAX_MODEL_BYTES:
        raise PretrainedError(f"{output} would take {size / 1e6:.1f} MB, over the {MAX_MODEL_BYTES / 1e6:g} MB a "
                              "shipped model may take; export a smaller model (configs/small.yaml is ~14 MB in bf16)")
    if registry is None:
        return
    others = sum(folder_bytes(p) for p in registry.iterdir()
                 if p.is_dir() and p.name not in (output.name, staging.name))
    if others + size > MAX_REGISTRY_BYTES:
        raise PretrainedError(f"{registry} would hold {(others + size) / 1e6:.1f} MB of models, over the "
                              f"{MAX_REGISTRY_BYTES / 1e6:g} MB the package may carry; remove a model first")


def folder_bytes(folder: Path) -> int:
    """The size of every file under ``folder``."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())
