"""Run configuration: named YAML files in ``configs/`` validated by pydantic models.

A config has one section per pipeline stage (``data``, ``tokenizer``, ``segments``,
``validation``, ``splits``); every section owns its defaults, unknown keys fail with
the list of valid ones, and ``--set section.key=value`` overrides any field (the value
is parsed as YAML, so ``--set segments.bars=4`` gives an int).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


class ConfigError(ValueError):
    """A config file or override is invalid; the message says which field and why."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    """Where the music comes from and where prepared shards go."""

    sources: list[dict[str, Any]] = Field(default_factory=list)
    output: str = "data/default"
    workers: int = 0  # 0: one per CPU core


class TokenizerSettings(_Section):
    """miditok settings. Only schemes that emit Bar tokens keep bar structure."""

    scheme: Literal["REMI"] = "REMI"
    pitch_range: tuple[int, int] = (21, 109)
    beat_res: list[tuple[int, int, int]] = [(0, 4, 8), (4, 12, 4)]  # (beat from, beat to, positions/beat)
    use_velocities: bool = False
    num_velocities: int = 32
    use_tempos: bool = False
    multitrack: Literal["merge", "programs"] = "merge"
    # Denominator -> numerators. /2 meters must be listed or miditok maps them to 4/4.
    time_signature_range: dict[int, list[int]] = {
        8: [3, 6, 9, 12],
        4: [1, 2, 3, 4, 5, 6, 7],
        2: [1, 2, 3, 4],
    }
    bpe_vocab_size: int = 0  # 0: no BPE; else learn merges on the train split up to this size
    # Tracks merged: notes that start together (after quantization) in pitch order, repeated pitches
    # at one onset dropped (miditok's remove_duplicated_notes). Off (and with programs kept), notes
    # keep the file's order (time, raw duration, pitch): a chord's order then depends on tick-level
    # timing noise the model has to guess.
    sort_chords: bool = True


class SegmentConfig(_Section):
    """Bar-aligned windows cut from each piece."""

    bars: int = 4
    hop: int = 0  # 0: same as ``bars`` (no overlap)
    max_tokens: int = 1024  # windows longer than this are dropped and counted
    min_notes: int = 1  # windows with fewer notes are dropped (silence)

    @field_validator("bars")
    @classmethod
    def _positive(cls, v: int) -> int:
        if v < 1:
            raise ValueError("segments.bars must be >= 1")
        return v

    @property
    def step(self) -> int:
        return self.hop or self.bars


class ValidationConfig(_Section):
    """Limits beyond which a file is skipped (and listed with its reason)."""

    max_seconds: float = 3600.0
    max_bars: int = 1000
    min_tempo: float = 10.0
    max_tempo: float = 500.0
    min_notes: int = 8
    drop_drums: bool = True


class SplitConfig(_Section):
    """Deterministic, leak-free splits: a hash of each piece's group picks its split."""

    valid: float = 0.05
    test: float = 0.05
    seed: int = 0


class AugmentConfig(_Section):
    """Augmentation applied when reading shards for training (stored data stays as is)."""

    transpose: tuple[int, int] = (0, 0)  # inclusive semitone range, e.g. (-5, 6)


class TrainConfig(_Section):
    """Optimisation, schedules, evaluation and checkpoints of ``midistruct train``."""

    run_dir: str = "runs/default"
    batch_size: int = 32
    lr: float = 5e-4
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.98)
    warmup_steps: int = 200
    max_steps: int = 2000
    max_minutes: float = 0.0  # 0: no time limit; else stop (and save) after this long
    grad_clip: float = 1.0
    beta_max: float = 0.1  # KL weight reached after beta_warmup_steps (MusicVAE-style annealing)
    beta_warmup_steps: int = 1000
    log_every: int = 20
    eval_every: int = 250
    eval_batches: int = 20
    free_run_samples: int = 16  # validation windows decoded free-running at each evaluation
    save_every: int = 250
    seed: int = 0
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    dtype: Literal["auto", "bf16", "fp32"] = "auto"  # bf16 autocast where the hardware supports it
    threads: int = 0  # torch CPU threads; 0: torch's default
    tensorboard: bool = True


class Config(_Section):
    """A whole run configuration."""

    name: str = "default"
    data: DataConfig = Field(default_factory=DataConfig)
    tokenizer: TokenizerSettings = Field(default_factory=TokenizerSettings)
    segments: SegmentConfig = Field(default_factory=SegmentConfig)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    splits: SplitConfig = Field(default_factory=SplitConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    model: dict[str, Any] = Field(default_factory=dict)  # MidiStructConfig fields; checked by model_config()
    train: TrainConfig = Field(default_factory=TrainConfig)


def resolve_config_path(name_or_path: str | Path) -> Path:
    """A path to a YAML file, or the name of one in ``configs/`` (``"tiny"``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    for folder in (Path.cwd() / "configs", CONFIG_DIR):
        named = folder / f"{name_or_path}.yaml"
        if named.is_file():
            return named
    available = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")) if CONFIG_DIR.is_dir() else []
    raise ConfigError(f"config {str(name_or_path)!r} not found; named configs: {', '.join(available)}")


def apply_override(raw: dict[str, Any], assignment: str) -> None:
    """Apply one ``a.b.c=value`` override to a raw config dict in place."""
    if "=" not in assignment:
        raise ConfigError(f"override {assignment!r} must look like section.key=value")
    key, text = assignment.split("=", 1)
    parts = key.strip().split(".")
    node = raw
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {assignment!r}: {part!r} is not a section")
    node[parts[-1]] = yaml.safe_load(text)


def load_config(name_or_path: str | Path | None = None, overrides: list[str] = ()) -> Config:
    """Load a named or file config, apply ``--set`` overrides, validate."""
    raw: dict[str, Any] = {}
    if name_or_path is not None:
        raw = _read_yaml(resolve_config_path(name_or_path), seen=())
    for assignment in overrides:
        apply_override(raw, assignment)
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_describe(err)) from None


def _read_yaml(path: Path, *, seen: tuple[Path, ...]) -> dict[str, Any]:
    """A config file's dict with its ``extends:`` parents (a name or a list, merged in order) beneath it."""
    if path.resolve() in seen:
        raise ConfigError(f"config {path} extends itself")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config {path} is not a mapping")
    parents = raw.pop("extends", None) or []
    base: dict[str, Any] = {}
    for parent in [parents] if isinstance(parents, str) else parents:
        base = _deep_merge(base, _read_yaml(resolve_config_path(parent), seen=(*seen, path.resolve())))
    raw = _deep_merge(base, raw)
    raw["name"] = path.stem
    return raw


def _deep_merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for key, value in top.items():
        out[key] = _deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _describe(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"])
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = f"unknown key; valid: {', '.join(_fields_at(e['loc'][:-1]))}"
        lines.append(f"{where}: {msg}")
    return "invalid config: " + "; ".join(lines)


def _fields_at(loc: tuple) -> list[str]:
    """Field names of the config section at ``loc`` (for 'unknown key' messages)."""
    model: type[BaseModel] = Config
    for part in loc:
        annotation = model.model_fields[str(part)].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def dump_config(cfg: Config) -> str:
    """The resolved config as YAML (written next to every output)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
