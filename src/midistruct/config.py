"""Run configuration: named YAML files in ``configs/`` validated by pydantic models.

A config has one section per pipeline stage (``data``, ``tokenizer``, ``segments``,
``validation``, ``splits``, ``augment``, ``model``, ``train``) and one for the main job
(``quickstart``); every section owns its defaults, types and ranges, and
``--set section.key=value`` overrides any field (the
value is parsed as YAML, so ``--set segments.bars=4`` gives an int). Anything wrong --
YAML syntax, an unknown key (with the closest valid one), a value out of range --
fails at load as one :class:`ConfigError` line naming the file and line or the key.
Loading imports neither torch nor transformers.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
    model_serializer,
)

from midistruct.errors import MidiStructError

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"

Fraction = Annotated[float, Field(ge=0.0, lt=1.0)]  # in [0, 1)


class ConfigError(MidiStructError, ValueError):
    """A config file or override is invalid; the message says which field and why."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    """Where the music comes from and where prepared shards go."""

    sources: list[dict[str, Any]] = Field(default_factory=list)  # each checked by midistruct.corpus
    output: str = "data/default"
    workers: int = Field(0, ge=0)  # 0: one per CPU core


class TokenizerSettings(_Section):
    """miditok settings. Only schemes that emit Bar tokens keep bar structure."""

    scheme: Literal["REMI"] = "REMI"
    pitch_range: tuple[int, int] = (21, 109)  # lowest and highest MIDI pitch kept (inclusive)
    beat_res: list[tuple[int, int, int]] = [(0, 4, 8), (4, 12, 4)]  # (beat from, beat to, positions/beat)
    use_velocities: bool = False
    num_velocities: int = Field(32, ge=1, le=127)
    use_tempos: bool = False
    multitrack: Literal["merge", "programs"] = "merge"
    # Denominator -> numerators. /2 meters must be listed or miditok maps them to 4/4.
    time_signature_range: dict[int, list[int]] = {
        8: [3, 6, 9, 12],
        4: [1, 2, 3, 4, 5, 6, 7],
        2: [1, 2, 3, 4],
    }
    bpe_vocab_size: int = Field(0, ge=0)  # 0: no BPE; else learn merges on the train split up to this size
    # Tracks merged: notes that start together (after quantization) in pitch order, repeated pitches
    # at one onset dropped (miditok's remove_duplicated_notes). Off (and with programs kept), notes
    # keep the file's order (time, raw duration, pitch): a chord's order then depends on tick-level
    # timing noise the model has to guess.
    sort_chords: bool = True

    @field_validator("pitch_range")
    @classmethod
    def _pitch_range(cls, v: tuple[int, int]) -> tuple[int, int]:
        if not 0 <= v[0] < v[1] <= 127:  # miditok's own check, made at load
            raise ValueError(f"must be [low, high] with 0 <= low < high <= 127 (got {list(v)})")
        return v

    @field_validator("beat_res")
    @classmethod
    def _beat_res(cls, v: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
        ends = [0] + [stop for _, stop, _ in v[:-1]]
        if not v or any(start != end or stop <= start or res < 1 for (start, stop, res), end in zip(v, ends)):
            raise ValueError("must be [from, to, positions per beat] ranges that start at beat 0 and follow on "
                             f"without gaps, each with to > from and positions >= 1 (got {[list(r) for r in v]})")
        return v

    @field_validator("time_signature_range")
    @classmethod
    def _time_signatures(cls, v: dict[int, list[int]]) -> dict[int, list[int]]:
        for denominator, numerators in v.items():
            if denominator < 1 or denominator & (denominator - 1) or not numerators or min(numerators) < 1:
                raise ValueError("denominators must be powers of 2, each with numerators >= 1 "
                                 f"(got {denominator}: {numerators})")
        return v


class SegmentConfig(_Section):
    """Bar-aligned windows cut from each piece."""

    bars: int = Field(4, ge=1)
    hop: int = Field(0, ge=0)  # 0: same as ``bars`` (no overlap)
    max_tokens: int = Field(1024, gt=0)  # windows longer than this are dropped and counted
    min_notes: int = Field(1, ge=0)  # windows with fewer notes are dropped (silence)

    @property
    def step(self) -> int:
        return self.hop or self.bars


class ValidationConfig(_Section):
    """Limits beyond which a file is skipped (and listed with its reason)."""

    max_seconds: float = Field(3600.0, gt=0)
    max_bars: int = Field(1000, ge=1)
    min_tempo: float = Field(10.0, gt=0)
    max_tempo: float = Field(500.0, gt=0)
    min_notes: int = Field(8, ge=0)
    drop_drums: bool = True

    @field_validator("max_tempo")
    @classmethod
    def _tempo_order(cls, v: float, info: ValidationInfo) -> float:
        low = info.data.get("min_tempo")
        if low is not None and not low < v:
            raise ValueError(f"must be > min_tempo (got {v:g} <= {low:g})")
        return v


class SplitConfig(_Section):
    """Deterministic, leak-free splits: a hash of each piece's group picks its split."""

    valid: float = Field(0.05, ge=0.0, lt=1.0)
    test: float = Field(0.05, ge=0.0, lt=1.0)
    seed: int = 0

    @field_validator("test")
    @classmethod
    def _leaves_train(cls, v: float, info: ValidationInfo) -> float:
        valid = info.data.get("valid")
        if valid is not None and valid + v >= 1.0:
            raise ValueError(f"valid + test must be < 1, leaving pieces to train on (got {valid:g} + {v:g})")
        return v


class AugmentConfig(_Section):
    """Augmentation applied when reading shards for training (stored data stays as is)."""

    transpose: tuple[int, int] = (0, 0)  # inclusive semitone range, e.g. (-5, 6)
    # absolute: pitches as written (and transposed by ``transpose``); canonical: each piece moved to C major /
    # A minor by its key, for training and for every piece the model encodes, the move undone after decoding
    # (midistruct.tokens.key.KEY_MODES; issue 14, item 2). Saved with the checkpoint: generation follows it.
    key: Literal["absolute", "canonical"] = "absolute"

    @field_validator("transpose")
    @classmethod
    def _ordered(cls, v: tuple[int, int]) -> tuple[int, int]:
        if v[0] > v[1]:
            raise ValueError(f"must be [low, high] with low <= high (got {list(v)})")
        return v

    @model_validator(mode="after")
    def _one_key_move(self) -> "AugmentConfig":
        if self.key == "canonical" and self.transpose != (0, 0):
            raise ValueError(f"key: canonical moves every piece to C major / A minor, so random transposition "
                             f"would undo it; set transpose to [0, 0] (got {list(self.transpose)})")
        return self


class ModelSettings(_Section):
    """The autoencoder's hyper-parameters, checked at load without importing torch.

    The fields, defaults and types of ``midistruct.model.MidiStructConfig`` (documented there; a
    test keeps the two equal), with ranges. Only the keys a config sets are passed on and saved
    (:meth:`overrides`): the rest are ``MidiStructConfig``'s defaults, or come from the data
    (vocab_size, bar_token_id, bar_token_ids, max_positions, max_bars; ``training.loop.model_config``).
    """

    vocab_size: int = Field(512, gt=0)
    d_model: int = Field(256, gt=0)
    n_heads: int = Field(4, gt=0)
    encoder_layers: int = Field(4, ge=0)  # 0 with latent_mode none: a plain LM
    decoder_layers: int = Field(4, ge=1)
    ffn_dim: int = Field(1024, gt=0)
    dropout: float | int = Field(0.1, ge=0, lt=1)
    max_positions: int = Field(1024, gt=0)
    max_bars: int = Field(64, gt=0)
    latent_dim_bar: int = Field(64, gt=0)
    latent_dim_segment: int = Field(128, gt=0)
    latent_mode: Literal["vae", "ae", "none"] = "vae"  # model.configuration.LATENT_MODES
    bar_latents: bool = True
    bar_pooling: Literal["mean", "slots", "flat"] = "mean"  # model.configuration.BAR_POOLINGS
    pool_queries: int = Field(8, gt=0)
    pool_slots: int = Field(32, gt=0)
    pool_width: int = Field(32, gt=0)
    conditioning: Literal["add", "prefix", "slot", "plan"] = "add"  # model.modeling.CONDITIONINGS
    decoder_memory: int = Field(0, ge=0)  # every decoder layer attends to M memory vectors of its bar's codes
    arrangement_dim: int = Field(0, ge=0)  # issue 19: an arrangement code per bar beside the content code
    arrangement_layers: int = Field(2, ge=1)
    arrangement_pitch: Literal["rank", "exact"] = "rank"  # model.configuration.ARRANGEMENT_PITCHES; exact: a diagnostic
    block_pooling: Literal["mean", "flat"] = "mean"  # model.configuration.BLOCK_POOLINGS
    performance_dim: int = Field(0, ge=0)  # issue 19: a performance (velocity) code per bar after the arrangement's
    performance_layers: int = Field(1, ge=1)
    free_bits: float | int = Field(0.0, ge=0)
    word_dropout: float | int = Field(0.0, ge=0, lt=1)
    bag_of_words: float | int = Field(0.0, ge=0)
    sequence_head: float | int = Field(0.0, ge=0)
    section_head: float | int = Field(0.0, ge=0)  # issue 18: each bar's content code names its section (POP909)
    section_classes: int = Field(9, ge=1)  # len(midistruct.tags.SECTION_CLASSES)
    # issue 18 item 2: tag names the decoder reads (their values come from the training data, training.loop);
    # {name: values} as a checkpoint's config.json has them (--init, --resume of such a run)
    decoder_tags: list[str] | dict[str, list[str]] | None = None
    tag_dropout: float | int = Field(0.5, ge=0, le=1)  # training hides each tag this often: every tag optional
    tag_adversary: float | int = Field(0.0, ge=0)  # the codes are trained to hide the decoder's tags (Fader networks)
    sequence_head_layers: int = Field(1, ge=0)
    sequence_head_memory: int = Field(0, ge=0)
    sequence_views: bool = False  # issue 19: a sequence head per view, read by the decoder's memory reads
    sequence_slots: int = Field(64, ge=1)
    layer_norm_eps: float = Field(1e-5, gt=0)
    initializer_range: float = Field(0.02, gt=0)
    pad_token_id: int | None = 0
    bos_token_id: int | None = 1
    eos_token_id: int | list[int] | None = 2
    mask_token_id: int = Field(3, ge=0)
    bar_token_id: int = Field(4, ge=0)
    bar_token_ids: list[int] | None = None  # with BPE: every id that opens a bar (issue 13)
    tie_word_embeddings: bool = True
    use_cache: bool = True

    # set by the data (the tokenizer's vocabulary and special ids), not by a user: accepted, since checkpoints and
    # saved run configs carry them, but left out of the keys an "unknown key" message suggests
    DATA_KEYS: ClassVar[frozenset[str]] = frozenset({
        "vocab_size", "pad_token_id", "bos_token_id", "eos_token_id", "mask_token_id", "bar_token_id",
        "bar_token_ids"})

    @field_validator("n_heads")
    @classmethod
    def _divides_width(cls, v: int, info: ValidationInfo) -> int:
        width = info.data.get("d_model")
        if width is not None and v > 0 and width % v:
            raise ValueError(f"must divide d_model (got d_model {width}, n_heads {v})")
        return v

    @model_serializer(mode="wrap")
    def _only_set(self, handler) -> dict[str, Any]:
        # Saved as given, so that a reloaded run config still leaves the data-derived sizes to the data.
        return {k: v for k, v in handler(self).items() if k in self.model_fields_set}

    def overrides(self) -> dict[str, Any]:
        """The keys this config sets, as ``MidiStructConfig`` keyword arguments."""
        return {k: getattr(self, k) for k in type(self).model_fields if k in self.model_fields_set}


class TrainConfig(_Section):
    """Optimisation, schedules, evaluation and checkpoints of ``midistruct train``."""

    run_dir: str = "runs/default"
    batch_size: int = Field(32, gt=0)
    lr: float = Field(5e-4, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    betas: tuple[Fraction, Fraction] = (0.9, 0.98)
    warmup_steps: int = Field(200, ge=0)
    max_steps: int = Field(2000, gt=0)
    max_minutes: float = Field(0.0, ge=0)  # 0: no time limit; else stop (and save) after this long
    grad_clip: float = Field(1.0, gt=0)  # max gradient norm (0 would zero every update, not switch clipping off)
    beta_max: float = Field(0.1, ge=0)  # KL weight reached after beta_warmup_steps (MusicVAE-style annealing)
    beta_warmup_steps: int = Field(1000, ge=0)  # 0: beta_max from the first step
    log_every: int = Field(20, gt=0)
    eval_every: int = Field(250, gt=0)
    eval_batches: int = Field(20, gt=0)
    free_run_samples: int = Field(16, gt=0)  # validation windows decoded free-running at each evaluation
    save_every: int = Field(250, gt=0)
    seed: int = Field(0, ge=0)  # numpy seeds the data order with it, and takes no negative seed
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    dtype: Literal["auto", "bf16", "fp32"] = "auto"  # bf16 autocast where the hardware supports it
    threads: int = Field(0, ge=0)  # torch CPU threads; 0: torch's default
    tensorboard: bool = True


class QuickstartConfig(_Section):
    """``midistruct quickstart``: the shipped model it uses, if any, and the interpolation it writes."""

    # A shipped model's name (`midistruct models`): when it is in this install, quickstart interpolates its two
    # examples and trains nothing (issue 15); when not (or with --train), it prepares the data and trains.
    pretrained: str | None = None
    bars: int = Field(4, ge=1)  # each piece is cut to its first `bars` bars
    steps: int = Field(8, ge=2)  # pieces on the slerp path, both ends included


class Config(_Section):
    """A whole run configuration."""

    name: str = "default"
    data: DataConfig = Field(default_factory=DataConfig)
    tokenizer: TokenizerSettings = Field(default_factory=TokenizerSettings)
    segments: SegmentConfig = Field(default_factory=SegmentConfig)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    splits: SplitConfig = Field(default_factory=SplitConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    model: ModelSettings = Field(default_factory=ModelSettings)
    train: TrainConfig = Field(default_factory=TrainConfig)
    quickstart: QuickstartConfig = Field(default_factory=QuickstartConfig)


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
    key, sep, text = assignment.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(parts):
        raise ConfigError(f"override {assignment!r} must look like section.key=value")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"override {assignment!r}: the value is not valid YAML ({_yaml_problem(err)})") from None
    node = raw
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {assignment!r}: {part!r} is not a section")
    node[parts[-1]] = value


def load_config(name_or_path: str | Path | None = None, overrides: list[str] = ()) -> Config:
    """Load a named or file config, apply ``--set`` overrides, validate."""
    raw: dict[str, Any] = {}
    if name_or_path is not None:
        raw = _read_yaml(resolve_config_path(name_or_path), seen=())
    for assignment in overrides:
        apply_override(raw, assignment)
    return validate_config(raw)


def validate_config(raw: dict[str, Any]) -> Config:
    """A :class:`Config` from a raw dict (a file's, or a checkpoint's ``run_config``); :class:`ConfigError`
    with one line naming every bad key otherwise."""
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_describe(err)) from None


def _read_yaml(path: Path, *, seen: tuple[Path, ...]) -> dict[str, Any]:
    """A config file's dict with its ``extends:`` parents (a name or a list, merged in order) beneath it."""
    if path.resolve() in seen:
        raise ConfigError(f"config {path} extends itself")
    text = _read_text(path)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"config {path}{_yaml_where(err, text)}: invalid YAML: {_yaml_problem(err)}") from None
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ConfigError(f"config {path}, line {_line_of(text)}: must be a mapping of sections "
                          f"(data:, train:, ...), not a {type(raw).__name__}")
    parents = raw.pop("extends", None) or []
    parents = [parents] if isinstance(parents, str) else parents
    if not (isinstance(parents, list) and all(isinstance(p, str) for p in parents)):
        raise ConfigError(f"config {path}, line {_line_of(text, 'extends')}: extends must be a config name or path, "
                          f"or a list of them (got {parents!r})")
    base: dict[str, Any] = {}
    for parent in parents:
        try:
            parent_path = resolve_config_path(parent)
        except ConfigError as err:
            raise ConfigError(f"config {path}, line {_line_of(text, 'extends')}: extends {err}") from None
        base = _deep_merge(base, _read_yaml(parent_path, seen=(*seen, path.resolve())))
    raw = _deep_merge(base, raw)
    raw["name"] = path.stem
    return raw


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"config {path}: cannot be read ({err.strerror or err})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise ConfigError(f"config {path}, line {line}: not UTF-8 text (byte 0x{data[err.start]:02x})") from None


def _yaml_where(err: yaml.YAMLError, text: str) -> str:
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    if mark:
        return f", line {mark.line + 1}, column {mark.column + 1}"
    if isinstance(err, yaml.reader.ReaderError):  # a character YAML refuses: a position, no mark
        return f", line {text[: err.position].count(chr(10)) + 1}"
    return ""


def _yaml_problem(err: yaml.YAMLError) -> str:
    if isinstance(err, yaml.reader.ReaderError):
        code = err.character if isinstance(err.character, int) else ord(err.character)
        return f"unacceptable character U+{code:04X}"
    problem = getattr(err, "problem", None)
    context = getattr(err, "context", None)
    text = f"{problem} ({context})" if problem and context else problem or str(err)
    return " ".join(text.split())


def _line_of(text: str, key: str | None = None) -> int:
    """1-based line of a top-level ``key`` in a YAML document (of the document itself without one)."""
    node = yaml.compose(text)
    if key is not None and isinstance(node, yaml.MappingNode):
        node = next((k for k, _ in node.value if k.value == key), node)
    return node.start_mark.line + 1 if node is not None else 1


def _deep_merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for key, value in top.items():
        out[key] = _deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


_BOUNDS = {"greater_than": ("gt", ">"), "greater_than_equal": ("ge", ">="),
           "less_than": ("lt", "<"), "less_than_equal": ("le", "<=")}


def _describe(err: ValidationError) -> str:
    """One line for all of a validation's errors, each naming its key."""
    lines = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            lines.append(f"{where}: unknown key; {_suggest(e['loc'])}")
        elif e["type"] == "value_error":  # our validators' messages already show the value
            lines.append(f"{where}: {e['msg'].removeprefix('Value error, ')}")
        elif e["type"] in _BOUNDS:
            bound, op = _BOUNDS[e["type"]]
            lines.append(f"{where}: must be {op} {e['ctx'][bound]} (got {_short(e['input'])})")
        else:
            lines.append(f"{where}: {e['msg']} (got {_short(e['input'])})")
    return "invalid config: " + "; ".join(lines)


def _suggest(loc: tuple) -> str:
    """'did you mean X? valid: ...' for an unknown key at ``loc``."""
    valid = _fields_at(loc[:-1])
    close = difflib.get_close_matches(str(loc[-1]), valid, n=1)
    return (f"did you mean {close[0]}? " if close else "") + f"valid: {', '.join(valid)}"


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _fields_at(loc: tuple) -> list[str]:
    """Field names of the config section at ``loc`` a user may set (for 'unknown key' messages): all but
    the section's ``DATA_KEYS``."""
    model: type[BaseModel] = Config
    for part in loc:
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    hidden = getattr(model, "DATA_KEYS", frozenset())
    return [name for name in model.model_fields if name not in hidden]


def dump_config(cfg: Config) -> str:
    """The resolved config as YAML (written next to every output); ``model`` holds the keys set."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
