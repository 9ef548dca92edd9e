"""Do velocity and timing survive the tokenizer, and what do they cost in tokens? (issue 19, item 4)

For each tokenizer setting, POP909 songs (the main arrangement of the first N songs, as `prepare` reads them:
meter from the annotations, moved to the first downbeat, tracks merged) are tokenized and decoded back, and
the decoded notes are matched to the notes the tokenizer read (same pitch, nearest onset within a beat):

- tokens per bar, and the share of 4-bar windows over the model's 1,024 tokens (prepare drops those);
- notes kept; onset error (ms at the song's tempo); micro-timing kept: the correlation between each note's
  offset from the sixteenth-note grid before and after (0 when the grid swallows it);
- velocity: mean absolute error and correlation (without velocity tokens every note decodes at one velocity).

    python docs/scripts/performance_tokens.py --songs 60 --out perf_tokens.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from midistruct.config import load_config
from midistruct.corpus import iter_pieces
from midistruct.metrics.performance import measure

SETTINGS = {
    "content (shipped: no velocity, 8 positions/beat)": {},
    "velocity 16 bins": {"use_velocities": True, "num_velocities": 16},
    "velocity 32 bins": {"use_velocities": True, "num_velocities": 32},
    "velocity 32, 12 positions/beat": {"use_velocities": True, "num_velocities": 32,
                                       "beat_res": [(0, 4, 12), (4, 12, 4)]},
    "velocity 32, 24 positions/beat": {"use_velocities": True, "num_velocities": 32,
                                       "beat_res": [(0, 4, 24), (4, 12, 6)]},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pop909", default="../shared/datasets/pop909")
    parser.add_argument("--songs", type=int, default=60)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    pieces = list(iter_pieces({"kind": "pop909", "path": args.pop909, "versions": False, "limit": args.songs}))
    report = {"command": f"python docs/scripts/performance_tokens.py --songs {args.songs} --out {args.out}",
              "settings": {}}
    for name, overrides in SETTINGS.items():
        start = time.time()
        sets = [f"tokenizer.{k}={json.dumps(v)}" for k, v in overrides.items()]
        cfg = load_config("pop909-4bar", sets)
        found = measure(cfg, pieces, window_tokens=cfg.segments.max_tokens)
        found["seconds"] = round(time.time() - start, 1)
        report["settings"][name] = {"overrides": overrides, **found}
        print(name, json.dumps(found))
    Path(args.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
