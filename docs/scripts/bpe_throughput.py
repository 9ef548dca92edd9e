"""Training throughput on a prepared shard folder: windows/s and tokens/s over a number of training steps
(after 5 warm-up steps), the measurement behind the BPE section of docs/RESULTS.md.

    python docs/scripts/bpe_throughput.py nottingham-small-2bar /tmp/nott-bpe0 100
    python docs/scripts/bpe_throughput.py nottingham-small-2bar /tmp/nott-bpe600 100

One thread, no transposition (BPE shards cannot be transposed), no evaluation or checkpoint during
the timed steps; the run folder goes to a temporary directory.
"""

import sys
import tempfile
import time

from midistruct.config import load_config
from midistruct.training.loop import Trainer

WARMUP = 5


def main(config: str, data: str, steps: str = "100") -> None:
    with tempfile.TemporaryDirectory() as run_dir:
        cfg = load_config(config, [f"data.output={data}", f"train.run_dir={run_dir}", "train.threads=1",
                                   "augment.transpose=[0, 0]", "train.max_steps=100000"])
        trainer = Trainer(cfg, progress=False, overwrite=True)
        batches = trainer.batches()
        for _ in range(WARMUP):
            trainer.train_step(next(batches))
        windows = tokens = 0
        start = time.perf_counter()
        for _ in range(int(steps)):
            batch = next(batches)
            last = trainer.train_step(batch)
            windows += batch["input_ids"].shape[0]
            tokens += int(batch["attention_mask"].sum())
        seconds = time.perf_counter() - start
    print(f"{data}: {steps} steps in {seconds:.1f} s: {windows / seconds:.1f} windows/s, "
          f"{tokens / seconds:.0f} tokens/s, {tokens / windows:.1f} tokens per window; "
          f"last step nll/token {last['nll_per_token']:.3f}")


if __name__ == "__main__":
    main(*sys.argv[1:])
