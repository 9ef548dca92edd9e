"""Run configuration: every value typed and range-checked at load, one-line errors naming the key or the
file and line, a typed ``model:`` section kept equal to ``MidiStructConfig``, no torch import."""

from __future__ import annotations

import inspect
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import yaml

from midistruct.cli import main
from midistruct.config import CONFIG_DIR, Config, ConfigError, ModelSettings, dump_config, load_config

REPO = Path(__file__).resolve().parents[1]
NAMED = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def _error(*overrides: str, config: str | Path | None = "tiny") -> str:
    with pytest.raises(ConfigError) as info:
        load_config(config, list(overrides))
    message = str(info.value)
    assert "\n" not in message
    return message


# ---- named configs ------------------------------------------------------------------------------


def test_the_main_named_configs_exist():
    assert {"tiny", "small", "base", "music21", "pop909", "nottingham", "quickstart"} <= set(NAMED)


@pytest.mark.parametrize("name", NAMED)
def test_named_config_loads_and_round_trips(name):
    cfg = load_config(name)
    assert cfg.name == name
    again = Config.model_validate(yaml.safe_load(dump_config(cfg)))  # as a run's config.yaml / meta run_config
    assert again == cfg and again.model.overrides() == cfg.model.overrides()


def test_extends_merges_model_sections_in_order():
    lm = load_config("nottingham-lm-2bar").model.overrides()
    # from small, then nottingham-small-2bar, then its own keys
    assert (lm["d_model"], lm["free_bits"], lm["latent_mode"], lm["encoder_layers"], lm["word_dropout"]) == (
        256, 32, "none", 0, 0.0)


def test_config_extends_merges_in_order(tmp_path):
    (tmp_path / "a.yaml").write_text("segments: {bars: 2, hop: 1}\ntrain: {lr: 0.1}\n")
    (tmp_path / "b.yaml").write_text("segments: {bars: 8}\n")
    (tmp_path / "c.yaml").write_text(f"extends: ['{tmp_path}/a.yaml', '{tmp_path}/b.yaml']\ntrain: {{batch_size: 3}}\n")
    cfg = load_config(tmp_path / "c.yaml")
    assert (cfg.segments.bars, cfg.segments.hop, cfg.train.lr, cfg.train.batch_size, cfg.name) == (8, 1, 0.1, 3, "c")
    (tmp_path / "loop.yaml").write_text(f"extends: '{tmp_path}/loop.yaml'\n")
    with pytest.raises(ConfigError, match="extends itself"):
        load_config(tmp_path / "loop.yaml")


def test_config_overrides():
    cfg = load_config("tiny", ["segments.bars=8", "augment.transpose=[-5, 6]", "train.betas=[0.8, 0.9]"])
    assert cfg.segments.bars == 8 and cfg.augment.transpose == (-5, 6) and cfg.train.betas == (0.8, 0.9)
    assert load_config(None, []).train.batch_size == 32  # no file: the sections' defaults


# ---- ranges -------------------------------------------------------------------------------------


@pytest.mark.parametrize("override, expected", [
    ("train.batch_size=0", "train.batch_size: must be > 0 (got 0)"),
    ("train.lr=0", "train.lr: must be > 0"),
    ("train.lr=abc", "train.lr: Input should be a valid number"),
    ("train.weight_decay=-0.1", "train.weight_decay: must be >= 0"),
    ("train.betas=[0.9, 1.0]", "train.betas.1: must be < 1"),
    ("train.betas=[-0.1, 0.9]", "train.betas.0: must be >= 0"),
    ("train.warmup_steps=-1", "train.warmup_steps: must be >= 0"),
    ("train.max_steps=0", "train.max_steps: must be > 0"),
    ("train.max_minutes=-1", "train.max_minutes: must be >= 0"),
    ("train.grad_clip=0", "train.grad_clip: must be > 0"),  # clip_grad_norm_(max_norm=0) zeroes every update
    ("train.beta_max=-0.5", "train.beta_max: must be >= 0"),
    ("train.beta_warmup_steps=-1", "train.beta_warmup_steps: must be >= 0"),
    ("train.log_every=0", "train.log_every: must be > 0"),
    ("train.eval_every=0", "train.eval_every: must be > 0"),
    ("train.save_every=0", "train.save_every: must be > 0"),
    ("train.eval_batches=0", "train.eval_batches: must be > 0"),
    ("train.free_run_samples=0", "train.free_run_samples: must be > 0"),  # evaluate() collates them: none fails
    ("train.threads=-1", "train.threads: must be >= 0"),
    ("train.seed=-1", "train.seed: must be >= 0"),
    ("train.device=tpu", "train.device: Input should be"),
    ("splits.valid=1.0", "splits.valid: must be < 1"),
    ("splits.test=-0.1", "splits.test: must be >= 0"),
    ("splits.test=0.8", "splits.test: valid + test must be < 1"),  # tiny has valid 0.2
    ("segments.bars=0", "segments.bars: must be >= 1 (got 0)"),
    ("segments.hop=-1", "segments.hop: must be >= 0"),
    ("segments.max_tokens=0", "segments.max_tokens: must be > 0"),
    ("segments.min_notes=-1", "segments.min_notes: must be >= 0"),
    ("validation.max_seconds=0", "validation.max_seconds: must be > 0"),
    ("validation.max_bars=0", "validation.max_bars: must be >= 1"),
    ("validation.min_tempo=0", "validation.min_tempo: must be > 0"),
    ("validation.max_tempo=5", "validation.max_tempo: must be > min_tempo (got 5 <= 10)"),
    ("validation.min_notes=-1", "validation.min_notes: must be >= 0"),
    ("tokenizer.pitch_range=[0, 128]", "tokenizer.pitch_range: must be [low, high] with 0 <= low < high <= 127"),
    ("tokenizer.pitch_range=[60, 60]", "tokenizer.pitch_range: must be"),
    ("tokenizer.beat_res=[]", "tokenizer.beat_res: must be"),
    ("tokenizer.beat_res=[[0, 4, 8], [5, 12, 4]]", "tokenizer.beat_res: must be"),  # a gap
    ("tokenizer.beat_res=[[0, 4, 0]]", "tokenizer.beat_res: must be"),
    ("tokenizer.num_velocities=0", "tokenizer.num_velocities: must be >= 1"),
    ("tokenizer.num_velocities=128", "tokenizer.num_velocities: must be <= 127"),
    ("tokenizer.bpe_vocab_size=-1", "tokenizer.bpe_vocab_size: must be >= 0"),
    ("tokenizer.time_signature_range={3: [1, 2]}", "tokenizer.time_signature_range: denominators must be powers of 2"),
    ("tokenizer.scheme=TSD", "tokenizer.scheme: Input should be 'REMI'"),
    ("data.workers=-1", "data.workers: must be >= 0"),
    ("data.sources=[1]", "data.sources.0: Input should be a valid dictionary"),
    ("augment.transpose=[3, -3]", "augment.transpose: must be [low, high] with low <= high"),
    ("model.d_model=0", "model.d_model: must be > 0"),
    ("model.d_model=30", "model.n_heads: must divide d_model (got d_model 30, n_heads 4)"),
    ("model.decoder_layers=0", "model.decoder_layers: must be >= 1"),
    ("model.dropout=1", "model.dropout: must be < 1"),
    ("model.word_dropout=1.0", "model.word_dropout: must be < 1"),
    ("model.free_bits=-1", "model.free_bits: must be >= 0"),
    ("model.bag_of_words=-1", "model.bag_of_words: must be >= 0"),
    ("model.latent_mode=vq", "model.latent_mode: Input should be 'vae', 'ae' or 'none' (got 'vq')"),
    ("model.conditioning=cross", "model.conditioning: Input should be 'add', 'prefix', 'slot' or 'plan'"),
    ("model.d_model=64.5", "model.d_model: Input should be a valid integer"),
])
def test_out_of_range_values_fail_naming_the_key(override, expected):
    assert _error(override).startswith(f"invalid config: {expected}")


def test_two_errors_share_one_line():
    message = _error("train.lr=0", "segments.bars=0")
    assert "segments.bars: must be >= 1" in message and "train.lr: must be > 0" in message


@pytest.mark.parametrize("override", [
    "train.max_minutes=0", "train.warmup_steps=0", "train.beta_warmup_steps=0", "train.beta_max=0",
    "train.weight_decay=0", "train.threads=0", "data.workers=0", "segments.hop=0", "segments.min_notes=0",
    "validation.min_notes=0", "tokenizer.bpe_vocab_size=0", "splits.valid=0", "splits.test=0",
    "augment.transpose=[0, 0]", "tokenizer.pitch_range=[0, 127]", "model.free_bits=272",
])
def test_values_that_mean_off_or_edge_are_accepted(override):
    load_config("tiny", [override])


def test_plain_lm_without_encoder_is_valid():
    assert load_config("tiny", ["model.latent_mode=none", "model.encoder_layers=0"]).model.encoder_layers == 0


# ---- unknown keys -------------------------------------------------------------------------------


@pytest.mark.parametrize("override, expected", [
    ("model.d_modle=64", "model.d_modle: unknown key; did you mean d_model?"),
    ("train.batchsize=4", "train.batchsize: unknown key; did you mean batch_size?"),
    ("segments.barz=2", "segments.barz: unknown key; did you mean bars? valid: bars, hop"),
    ("data.worker=2", "data.worker: unknown key; did you mean workers?"),
    ("tokenizer.pitch_rang=[1, 2]", "tokenizer.pitch_rang: unknown key; did you mean pitch_range?"),
    ("validation.max_temp=9", "validation.max_temp: unknown key; did you mean max_tempo?"),
    ("splits.vaild=0.1", "splits.vaild: unknown key; did you mean valid?"),
    ("augment.transpos=[0, 1]", "augment.transpos: unknown key; did you mean transpose?"),
    ("trian.lr=1", "trian: unknown key; did you mean train?"),
    ("model.zzz=1", "model.zzz: unknown key; valid: d_model, n_heads"),  # nothing close: the list alone
])
def test_unknown_keys_suggest_the_closest(override, expected):
    assert _error(override).startswith(f"invalid config: {expected}")


DATA_KEYS = ("vocab_size", "pad_token_id", "bos_token_id", "eos_token_id", "mask_token_id", "bar_token_id",
             "bar_token_ids")


def test_data_derived_model_keys_are_accepted_but_not_suggested():
    """The data sets the vocabulary and special ids: checkpoints and saved run configs carry them, so they load,
    but the "unknown key" message does not offer them to a user as settings."""
    cfg = load_config("tiny", ["model.vocab_size=300", "model.bar_token_id=4", "model.bar_token_ids=[4, 7]"])
    assert cfg.model.overrides()["bar_token_ids"] == [4, 7]
    for typo in ("model.zzz=1", "model.vocab_sise=3", "model.bar_token=4"):
        message = _error(typo)
        valid = message.split("valid: ", 1)[1].split(", ")
        assert "d_model" in valid and not set(DATA_KEYS) & set(valid)
        assert not any(f"did you mean {key}?" in message for key in DATA_KEYS)


# ---- files and overrides ------------------------------------------------------------------------


@pytest.mark.parametrize("content, expected", [
    (b"train:\n  lr: 1\n  batch_size: [1,\n", r"bad\.yaml, line 4, column 1: invalid YAML: expected the node content"),
    (b"train: {lr: 1}\nsegments: bars: 2\n", r"bad\.yaml, line 2, column 15: invalid YAML: mapping values"),
    (b"- train\n- segments\n", r"bad\.yaml, line 1: must be a mapping of sections .*not a list"),
    (b"# a comment\n\n42\n", r"bad\.yaml, line 3: must be a mapping of sections .*not a int"),
    (b"# parent\ndata: {}\nextends: [tiny, no-such-config]\n", r"bad\.yaml, line 3: extends config 'no-such-config' "
                                                               r"not found; named configs: .*tiny"),
    (b"extends: 3\n", r"bad\.yaml, line 1: extends must be a config name or path"),
    (b"train:\n  run_dir: caf\xe9\n", r"bad\.yaml, line 2: not UTF-8 text \(byte 0xe9\)"),
    (b"train: {}\nname: \"\x01\"\n", r"bad\.yaml, line 2: invalid YAML: unacceptable character U\+0001"),
])
def test_bad_files_name_the_file_and_line(tmp_path, content, expected):
    (tmp_path / "bad.yaml").write_bytes(content)
    with pytest.raises(ConfigError, match=f"^config {tmp_path}/{expected}") as info:
        load_config(tmp_path / "bad.yaml")
    assert "\n" not in str(info.value)


def test_a_bad_parent_names_the_parent(tmp_path):
    (tmp_path / "parent.yaml").write_text("train:\n  batch_size: [\n")
    (tmp_path / "child.yaml").write_text(f"extends: {tmp_path}/parent.yaml\n")
    with pytest.raises(ConfigError, match=r"parent\.yaml, line 3"):
        load_config(tmp_path / "child.yaml")


def test_empty_file_is_the_defaults(tmp_path):
    (tmp_path / "empty.yaml").write_text("# nothing yet\n")
    assert load_config(tmp_path / "empty.yaml").model_dump(exclude={"name"}) == Config().model_dump(exclude={"name"})


@pytest.mark.parametrize("override, expected", [
    ("segments.bars", "override 'segments.bars' must look like section.key=value"),
    ("=3", "override '=3' must look like section.key=value"),
    ("train..lr=3", "override 'train..lr=3' must look like section.key=value"),
    ("train.lr=[1,", "override 'train.lr=[1,': the value is not valid YAML ("),
    ("train.lr.x=1", "override 'train.lr.x=1': 'lr' is not a section"),
])
def test_bad_overrides(override, expected):
    assert _error(override).startswith(expected)


def test_unknown_config_name_lists_the_named_ones():
    assert _error(config="no-such-config").startswith("config 'no-such-config' not found; named configs: base, ")


# ---- the model section --------------------------------------------------------------------------


def test_model_settings_equal_midistruct_config():
    """Same fields, defaults and types as ``MidiStructConfig``'s own keyword arguments: they cannot drift."""
    from midistruct.model import CONDITIONINGS, LATENT_MODES, MidiStructConfig
    from midistruct.model.configuration import ARRANGEMENT_PITCHES, BAR_POOLINGS, BLOCK_POOLINGS

    ours = inspect.signature(MidiStructConfig.__init__).parameters.values()
    ours = {p.name: p for p in ours if p.kind is inspect.Parameter.KEYWORD_ONLY}
    fields = ModelSettings.model_fields
    assert list(fields) == list(ours)
    assert {k: f.default for k, f in fields.items()} == {k: p.default for k, p in ours.items()}
    narrowed = {"latent_mode": LATENT_MODES, "conditioning": tuple(CONDITIONINGS), "bar_pooling": BAR_POOLINGS,
                "arrangement_pitch": ARRANGEMENT_PITCHES, "block_pooling": BLOCK_POOLINGS}  # str there, the names here
    for name, param in ours.items():
        if name in narrowed:
            assert param.annotation is str and typing.get_args(fields[name].annotation) == narrowed[name]
        elif name == "decoder_tags":  # a user names the tags; the model keeps their values (training.loop)
            assert typing.get_args(fields[name].annotation) == (list[str], *typing.get_args(param.annotation))
        else:
            assert fields[name].annotation == param.annotation, name


def test_model_settings_build_the_model_config():
    """Only the keys the config sets reach ``MidiStructConfig``; the data decides vocab and lengths."""
    from midistruct.training.loop import model_config

    cfg = load_config("tiny", ["model.layer_norm_eps=1"])
    assert cfg.model.overrides()["layer_norm_eps"] == 1.0 and "vocab_size" not in cfg.model.overrides()
    from midistruct.tokens.tokenizer import build_tokenizer

    tokenizer = build_tokenizer(cfg.tokenizer)
    built = model_config(cfg, tokenizer)
    assert (built.vocab_size, built.bar_token_id, built.max_bars, built.max_positions) == (len(tokenizer), 4, 2, 257)
    assert built.bar_token_ids is None  # no BPE: the Bar id alone opens a bar
    assert (built.d_model, built.ffn_dim, built.free_bits, built.layer_norm_eps) == (32, 64, 1, 1.0)
    assert built.latent_mode == "vae" and built.dropout == 0.1


def test_run_config_of_older_checkpoints_still_loads():
    """Checkpoints store ``run_config`` (``model`` a plain dict of the keys given); it validates as before."""
    old = load_config("tiny").model_dump(mode="json")
    old["model"] = {"d_model": 32, "n_heads": 4, "bag_of_words": 1.0, "free_bits": 16}
    cfg = Config.model_validate(old)
    assert cfg.model.overrides() == old["model"]
    assert cfg.model_dump(mode="json")["model"] == old["model"]  # saved again as given
    cfg.validation.min_notes = 1  # what MidiStruct does after loading


# ---- through the CLI, and fast ------------------------------------------------------------------


def test_cli_reports_a_bad_value_in_one_line(capsys):
    assert main(["prepare", "--config", "tiny", "--set", "train.batch_size=0"]) == 2
    err = capsys.readouterr().err
    assert err == "midistruct: error: invalid config: train.batch_size: must be > 0 (got 0)\n"
    assert main(["train", "--config", "tiny", "--set", "model.d_modle=64"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "model.d_modle: unknown key; did you mean d_model?" in err


def test_loading_and_a_typo_import_neither_torch_nor_transformers():
    code = (
        "import sys, time\n"
        "import midistruct.config as c\n"
        "c.load_config('tiny')\n"
        "from midistruct.cli import main\n"
        "start = time.perf_counter()\n"
        "assert main(['train', '--config', 'tiny', '--set', 'model.d_modle=64']) == 2\n"
        "elapsed = time.perf_counter() - start\n"
        "heavy = [m for m in ('torch', 'transformers', 'miditok') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "print(elapsed)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert float(done.stdout) < 1.0  # the typo's report, config already imported: milliseconds, not torch's seconds
