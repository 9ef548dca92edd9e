"""bench/run_all.py: tables from benchmark JSON, written between markers of the results file."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _runner():
    spec = importlib.util.spec_from_file_location("bench_run_all", REPO / "bench" / "run_all.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_flatten_and_table():
    run_all = _runner()
    result = {"speedup": {"1": 6.25, "8": 3.5}, "goal_met": True, "rows": [{"a": 1}, {"a": 2}], "tags": [1, 2]}
    assert run_all.flatten(result) == [("speedup.1", 6.25), ("speedup.8", 3.5), ("goal_met", True),
                                       ("rows.0.a", 1), ("rows.1.a", 2), ("tags", [1, 2])]
    text = run_all.table("generate", ["python", "bench/generate.py"], result)
    assert text.startswith("### generate\n\n`python bench/generate.py`") and "| `speedup.1` | 6.25 |" in text


def test_write_replaces_only_the_marked_block(tmp_path):
    run_all = _runner()
    results = tmp_path / "RESULTS.md"
    results.write_text("# Results\n\nhand-written section\n")
    run_all.write(results, run_all.block(["### one\n"], quick=True))
    first = results.read_text()
    assert first.startswith("# Results\n\nhand-written section\n") and "### one" in first
    results.write_text(first + "\n## after\n")
    run_all.write(results, run_all.block(["### two\n"], quick=True))
    second = results.read_text()
    assert "### one" not in second and "### two" in second and second.count(run_all.START) == 1
    assert "hand-written section" in second and second.rstrip().endswith("## after")
