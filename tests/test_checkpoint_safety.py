"""Issue 20: no pickle is ever loaded, and damaged checkpoints, trainer states and latents files
fail with one ``midistruct: error:`` line (exit 2), never a traceback or code run from the file."""

from __future__ import annotations

import json
import pickle
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from midistruct.cli import main
from midistruct.config import load_config
from midistruct.model.checkpoint import (
    LEGACY_STATE_FILE, STATE_JSON, STATE_TENSORS, CheckpointError, load_checkpoint, load_state,
)
from midistruct.training.loop import Trainer

REPO = Path(__file__).resolve().parents[1]


class _Touch:
    """Unpickling this opens (creates) ``path``: stands for any command a crafted file could run."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _assert_one_line_error(capsys, *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1 and err.startswith("midistruct: error: "), err
    for needle in needles:
        assert needle in err, err
    return err


@pytest.fixture
def run_copy(checkpoint, tmp_path) -> Path:
    """A copy of the session checkpoint's run folder (``last/`` inside), safe to damage."""
    return Path(shutil.copytree(checkpoint.parent, tmp_path / "run"))


def _train_args(checkpoint: Path, run: Path) -> list[str]:
    data = checkpoint.parents[1] / "data"
    return ["train", "--config", "tiny", "--quiet", "--resume", "--set", f"data.output={data}",
            "--set", f"train.run_dir={run}", "--set", "train.threads=1", "--set", "train.max_steps=2"]


# ---- the trainer state format ---------------------------------------------------------------------

def test_trainer_state_is_safetensors_and_json(checkpoint):
    assert not (checkpoint / LEGACY_STATE_FILE).exists()
    doc = json.loads((checkpoint / STATE_JSON).read_text())
    tensors = load_file(str(checkpoint / STATE_TENSORS))
    assert doc["format"] == 1 and doc["state"]["position"]["step"] == 2
    assert doc["state"]["optimizer"]["state"]["0"]["exp_avg"] == {"__tensor__": "optimizer.state.0.exp_avg"}
    assert tensors["rng.torch"].dtype == torch.uint8 and "optimizer.state.0.exp_avg_sq" in tensors
    state = load_state(checkpoint)
    assert set(state["optimizer"]["state"]) == set(range(len(state["optimizer"]["state"])))  # int keys again
    assert torch.equal(state["optimizer"]["state"][0]["exp_avg"], tensors["optimizer.state.0.exp_avg"])


def _legacy(folder: Path) -> None:
    """Turn ``folder``'s trainer state into the pre-issue-20 ``trainer_state.pt``."""
    state = load_state(folder)
    state["optimizer"]["param_groups"] = [{**g, "betas": tuple(g["betas"])} for g in state["optimizer"]["param_groups"]]
    torch.save({"optimizer": state["optimizer"], "scheduler": state["scheduler"], "position": state["position"],
                "torch_rng": state["rng"]["torch"]}, folder / LEGACY_STATE_FILE)
    (folder / STATE_JSON).unlink()
    (folder / STATE_TENSORS).unlink()


def test_resume_from_legacy_state_is_exact_and_rewrites_it(checkpoint, tmp_path):
    """N steps straight equal N/2, the state turned into a legacy .pt, resume, N/2 (read weights_only)."""
    data = checkpoint.parents[1] / "data"

    def cfg(run):
        return load_config("tiny", [f"data.output={data}", f"train.run_dir={run}", "train.threads=1",
                                    "train.max_steps=4", "train.eval_every=2", "train.save_every=2"])

    full = Trainer(cfg(tmp_path / "a"), progress=False).run()
    first = Trainer(cfg(tmp_path / "b"), progress=False).run(stop_after=2)
    _legacy(tmp_path / "b" / "last")
    rest = Trainer(cfg(tmp_path / "b"), resume=True, progress=False).run()
    assert [r["loss"] for r in first + rest] == [r["loss"] for r in full] and len(rest) == 2
    assert (tmp_path / "b" / "last" / STATE_JSON).is_file()
    assert not (tmp_path / "b" / "last" / LEGACY_STATE_FILE).exists()


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_crafted_pickle_state_runs_nothing(checkpoint, run_copy, tmp_path, capsys, writer):
    """A trainer_state.pt whose unpickling would create a file: resume refuses it, the file never appears."""
    last = run_copy / "last"
    (last / STATE_JSON).unlink()
    (last / STATE_TENSORS).unlink()
    # the payload is live: loaded the unsafe way it would create its file (shown on a harmless copy)
    proof = tmp_path / "proof"
    pickle.loads(pickle.dumps(_Touch(proof)))  # noqa: S301 -- our own payload, to prove it works
    assert proof.exists()
    marker = tmp_path / "pwned"
    payload = {"optimizer": _Touch(marker), "scheduler": {}, "position": {}, "torch_rng": torch.zeros(3)}
    with open(last / LEGACY_STATE_FILE, "wb") as f:
        torch.save(payload, f) if writer == "torch.save" else pickle.dump(payload, f, protocol=2)
    assert main(_train_args(checkpoint, run_copy)) == 2
    _assert_one_line_error(capsys, str(last / LEGACY_STATE_FILE), "was not loaded")
    assert not marker.exists()


def test_no_unsafe_loads_in_the_repository():
    """Every torch.load is weights_only=True, every np.load allow_pickle=False; no pickle.load at all."""
    files = [p for d in ("src", "bench", "docs/scripts", "notebooks") for p in (REPO / d).rglob("*")
             if p.suffix in (".py", ".ipynb")]
    assert files
    for path in files:
        text = path.read_text()
        assert not re.search(r"pickle\.loads?\(|weights_only\s*=\s*False|allow_pickle\s*=\s*True", text), path
        for call in re.findall(r"(?:torch|np|numpy)\.load\([^)]*\)", text):
            assert "weights_only=True" in call or "allow_pickle=False" in call, (path, call)


# ---- damaged model folders --------------------------------------------------------------------------

def _edit_json(name: str, change):
    def damage(folder: Path) -> None:
        data = json.loads((folder / name).read_text())
        change(data)
        (folder / name).write_text(json.dumps(data))
    return damage


def _write(name: str, text: str):
    return lambda folder: (folder / name).write_text(text)


def _truncate(name: str, keep: float):
    def damage(folder: Path) -> None:
        raw = (folder / name).read_bytes()
        (folder / name).write_bytes(raw[: int(len(raw) * keep)])
    return damage


def _drop_tensor(folder: Path) -> None:
    tensors = load_file(str(folder / "model.safetensors"))
    del tensors[sorted(tensors)[0]]
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})


DAMAGES = {
    "weights missing": lambda f: (f / "model.safetensors").unlink(),
    "weights truncated": _truncate("model.safetensors", 0.5),
    "weights header cut": _truncate("model.safetensors", 0.00002),
    "weights lack a tensor": _drop_tensor,
    "config not JSON": _write("config.json", "{not json"),
    "config a list": _write("config.json", "[1, 2]"),
    "config wrong type": _edit_json("config.json", lambda c: c.update(d_model="32")),
    "config missing key": _edit_json("config.json", lambda c: c.pop("d_model")),
    "config bad value": _edit_json("config.json", lambda c: c.update(latent_mode="gan")),
    "config unknown conditioning": _edit_json("config.json", lambda c: c.update(conditioning="nope")),
    "shapes differ from config": _edit_json("config.json", lambda c: c.update(ffn_dim=48)),
    "meta missing": lambda f: (f / "midistruct.json").unlink(),
    "meta not JSON": _write("midistruct.json", "garbage"),
    "meta bad run config": _edit_json("midistruct.json", lambda m: m.update(run_config={"segmentz": {}})),
    "tokenizer missing": lambda f: (f / "miditok.json").unlink(),
    "tokenizer truncated": _truncate("miditok.json", 0.3),
    "tokenizer another vocabulary": _write("miditok.json", "{}"),
    "tokenizer unknown scheme": _edit_json("miditok.json", lambda t: t.update(tokenization="Nope")),
}


def test_intact_copy_reconstructs(checkpoint, tmp_path):
    """The control for the damage cases below: the undamaged copy works."""
    folder = Path(shutil.copytree(checkpoint, tmp_path / "intact"))
    midi = checkpoint.parents[1] / "midi" / "piece0.mid"
    assert main(["reconstruct", str(folder), str(midi), "-o", str(tmp_path / "out")]) == 0


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_damaged_checkpoint_is_one_line(checkpoint, tmp_path, capsys, damage):
    folder = Path(shutil.copytree(checkpoint, tmp_path / "damaged"))
    DAMAGES[damage](folder)
    midi = checkpoint.parents[1] / "midi" / "piece0.mid"
    assert main(["reconstruct", str(folder), str(midi), "-o", str(tmp_path / "out")]) == 2
    _assert_one_line_error(capsys, str(folder))
    with pytest.raises(CheckpointError):
        load_checkpoint(folder)


@pytest.mark.parametrize("which", ["no such folder", "a file"])
def test_not_a_folder_is_one_line(checkpoint, tmp_path, capsys, which):
    path = tmp_path / "damaged" if which == "no such folder" else checkpoint / "model.safetensors"
    midi = checkpoint.parents[1] / "midi" / "piece0.mid"
    assert main(["reconstruct", str(path), str(midi), "-o", str(tmp_path / "out")]) == 2
    _assert_one_line_error(capsys, str(path), "does not exist" if which == "no such folder" else "is a file")


# ---- damaged trainer states ------------------------------------------------------------------------------

def _edit_state(change):
    def damage(folder: Path) -> None:
        doc = json.loads((folder / STATE_JSON).read_text())
        change(doc["state"])
        (folder / STATE_JSON).write_text(json.dumps(doc))
    return damage


def _edit_tensors(change):
    def damage(folder: Path) -> None:
        tensors = load_file(str(folder / STATE_TENSORS))
        change(tensors)
        save_file(tensors, str(folder / STATE_TENSORS))
    return damage


STATE_DAMAGES = {
    "json truncated": (_truncate(STATE_JSON, 0.5), "trainer_state.json is not valid JSON"),
    "tensors truncated": (_truncate(STATE_TENSORS, 0.5), "trainer_state.safetensors is damaged"),
    "json missing": (lambda f: (f / STATE_JSON).unlink(), "trainer_state.json missing"),
    "tensors missing": (lambda f: (f / STATE_TENSORS).unlink(), "trainer_state.safetensors missing"),
    "no position": (_edit_state(lambda s: s.pop("position")), "needs optimizer, scheduler, position, rng"),
    "position lacks epoch": (_edit_state(lambda s: s["position"].pop("epoch")), "position lacks epoch"),
    "position step a string": (_edit_state(lambda s: s["position"].update(step="2")),
                               "position.step: got a str, expected int"),
    "scheduler lacks last_epoch": (_edit_state(lambda s: s["scheduler"].pop("last_epoch")), "last_epoch"),
    "a parameter too few": (_edit_state(lambda s: s["optimizer"]["param_groups"][0]["params"].pop()),
                            "optimizer.param_groups.0.params"),
    "tensor missing": (_edit_tensors(lambda t: t.pop("optimizer.state.0.exp_avg")),
                       "lacks the tensor optimizer.state.0.exp_avg"),
    "tensor shape": (_edit_tensors(lambda t: t.update({"optimizer.state.0.exp_avg": torch.zeros(3, 5)})),
                     "optimizer.state.0.exp_avg is [3, 5]"),
    "rng state": (_edit_tensors(lambda t: t.update({"rng.torch": torch.zeros(3)})), "rng.torch"),
}


@pytest.mark.parametrize("damage", list(STATE_DAMAGES))
def test_damaged_trainer_state_is_one_line(checkpoint, run_copy, capsys, damage):
    change, needle = STATE_DAMAGES[damage]
    change(run_copy / "last")
    assert main(_train_args(checkpoint, run_copy)) == 2
    _assert_one_line_error(capsys, str(run_copy / "last"), needle)


def test_resume_with_damaged_weights_is_one_line(checkpoint, run_copy, capsys):
    _truncate("model.safetensors", 0.5)(run_copy / "last")
    assert main(_train_args(checkpoint, run_copy)) == 2
    _assert_one_line_error(capsys, str(run_copy / "last" / "model.safetensors"), "damaged")


# ---- latents files -----------------------------------------------------------------------------------------

LATENT_FILES = {
    "pickled.npz": lambda p, marker: np.savez(p, z_bar=np.array([_Touch(marker)], dtype=object),
                                              z_segment=np.zeros((1, 2)), meta=json.dumps({})),
    "garbage.npz": lambda p, marker: p.write_bytes(b"PK\x03\x04 not a zip"),
    "garbage.safetensors": lambda p, marker: p.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}"),
    "nometa.safetensors": lambda p, marker: save_file({"z_bar": torch.zeros(1, 2, 3),
                                                       "z_segment": torch.zeros(1, 4)}, p),
}


@pytest.mark.parametrize("name", list(LATENT_FILES))
def test_bad_latents_file_is_one_line(checkpoint, tmp_path, capsys, name):
    path, marker = tmp_path / name, tmp_path / "pwned"
    LATENT_FILES[name](path, marker)
    assert main(["decode", str(checkpoint), str(path), "-o", str(tmp_path / "x.mid")]) == 2
    _assert_one_line_error(capsys, str(path))
    assert not marker.exists()
