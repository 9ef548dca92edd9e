"""Shared fixtures. Tests on real corpora are marked ``shared_data`` and use :func:`shared_datasets`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

# The real corpora sit beside the project (../shared/datasets); a user's checkout lacks them.
SHARED_DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """``../shared/datasets``; skips the test with a reason when the folder is absent.

    Use it in tests marked ``@pytest.mark.shared_data``.
    """
    if not SHARED_DATASETS.is_dir():
        pytest.skip(f"real corpora not found at {SHARED_DATASETS} (only on development machines and CI)")
    return SHARED_DATASETS


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny checkpoint trained 2 steps on 10 synthetic 8-bar pieces (its shards beside it in ``data``)."""
    from scores import write_corpus

    from midistruct.config import load_config
    from midistruct.prepare import prepare
    from midistruct.training.loop import Trainer

    root = tmp_path_factory.mktemp("gen")
    write_corpus(root / "midi", n=10, bars=8)
    cfg = load_config("tiny", [f"data.sources=[{{kind: folder, path: '{root / 'midi'}'}}]",
                               f"data.output={root / 'data'}", f"train.run_dir={root / 'run'}", "train.threads=1",
                               "train.max_steps=2", "train.eval_every=2", "train.save_every=2"])
    prepare(cfg, progress=False)
    Trainer(cfg, progress=False).run()
    return root / "run" / "last"


@pytest.fixture
def arrangement_model(checkpoint, tmp_path) -> Path:
    """The session checkpoint grown into a model with an arrangement block (4 numbers a bar) and trained one step
    on its own data; the folder of its ``last`` checkpoint."""
    from midistruct.config import load_config
    from midistruct.training.loop import Trainer

    run = tmp_path / "arrangement-run"
    cfg = load_config("tiny", [f"data.output={checkpoint.parent.parent / 'data'}", f"train.run_dir={run}",
                               "train.threads=1", "model.arrangement_dim=4", "train.max_steps=1", "train.eval_every=1",
                               "train.save_every=1"])
    Trainer(cfg, init=checkpoint, progress=False).run()
    return run / "last"


@pytest.fixture
def registry(tmp_path, monkeypatch) -> Path:
    """An empty registry that names are looked up in (``$MIDISTRUCT_PRETRAINED_DIR``)."""
    from midistruct.model import pretrained

    folder = tmp_path / "registry"
    folder.mkdir()
    monkeypatch.setenv(pretrained.ENV_VAR, str(folder))
    return folder


@pytest.fixture
def shippable(checkpoint, tmp_path) -> Path:
    """A copy of the session checkpoint whose run config says it was trained on music that may ship
    (the licence check reads only the run config; the weights are the tiny model's)."""
    from midistruct.model.checkpoint import META_FILE

    folder = Path(shutil.copytree(checkpoint, tmp_path / "shippable"))
    meta = json.loads((folder / META_FILE).read_text())
    meta["run_config"]["data"]["sources"] = [{"kind": "music21", "collections": ["bach", "oneills1850"]}]
    (folder / META_FILE).write_text(json.dumps(meta))
    return folder
