"""Can a trained deterministic model's codes be made cheap? (issue 14: "-ELBO within 1.5x the LM's NLL"; docs/RESULTS.md
"How many bits a window costs").

The shipped models' codes were trained for reconstruction alone and cost ~3x a plain LM's NLL as a two-part code.
This turns such a model into a VAE and fine-tunes it with the KL at full weight: the encoder's code projections
become the posterior means (the same weights), their log-variances start at ``2 ln(--sigma0)`` everywhere (a new
half of each projection, zero weights), every other weight is copied, and the run trains with ``latent_mode: vae``,
``free_bits: 0`` and beta rising to ``--beta`` over ``--warmup`` steps. Its validation -ELBO per token is then the
code length the issue asks about (bits-back), and ``midistruct evaluate RUN/best --judge LM`` sets it beside the LM.

    python docs/scripts/rate_finetune.py --init runs/folk-2bar-restart1000/best --config folk-2bar \
        --data /work/data/folk-2bar --run-dir /work/runs/folk-2bar-rate [--steps 1000] [--beta 1] [--warmup 500]

A trainer with ``--resume`` continues the run from its ``last/`` as any VAE run (``midistruct train --config
folk-2bar --set model.latent_mode=vae ... --resume``). Since the sixteenth session ``midistruct train --init MODEL
--set model.latent_mode=vae --set model.free_bits=0 --set train.beta_max=B --set train.beta_warmup_steps=W`` makes
the same conversion (``finetune.becomes_vae``, ``checkpoint.load_grown_weights``; a standard deviation of 0.5).
"""

from __future__ import annotations

import argparse
import math

import torch

from midistruct.config import load_config
from midistruct.model.checkpoint import load_checkpoint
from midistruct.training.loop import Trainer


def variational_state(ae_state: dict, vae_model, *, sigma0: float) -> dict:
    """The AE's weights for the VAE: each latent projection (Z, D) becomes the mean half of (2Z, D), its
    log-variance half zero weights and bias ``2 ln sigma0``; every other tensor as it is (same shapes)."""
    target = vae_model.state_dict()
    out = {}
    for name, tensor in target.items():
        old = ae_state[name]
        if old.shape == tensor.shape:
            out[name] = old
            continue
        if not name.startswith("bottleneck.") or tensor.shape[0] != 2 * old.shape[0]:
            raise ValueError(f"{name}: {list(old.shape)} in the AE, {list(tensor.shape)} in the VAE")
        grown = torch.zeros_like(tensor)
        grown[: old.shape[0]] = old
        if name.endswith("bias"):
            grown[old.shape[0] :] = 2 * math.log(sigma0)
        out[name] = grown
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--init", required=True, help="the deterministic model's checkpoint folder")
    parser.add_argument("--config", required=True, help="the config it was trained with (folk-2bar)")
    parser.add_argument("--data", required=True)
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--beta", type=float, default=1.0, help="KL weight reached after --warmup steps")
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--sigma0", type=float, default=0.5, help="the posterior's first standard deviation")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    ae, _, _ = load_checkpoint(args.init)
    if ae.config.latent_mode != "ae":
        raise SystemExit(f"{args.init} is not a deterministic model (latent_mode {ae.config.latent_mode})")
    cfg = load_config(args.config, [f"data.output={args.data}", f"train.run_dir={args.run_dir}",
                                    f"train.max_steps={args.steps}", "train.max_minutes=0",
                                    f"train.threads={args.threads}", "model.latent_mode=vae", "model.free_bits=0",
                                    f"train.beta_max={args.beta}", f"train.beta_warmup_steps={args.warmup}"])
    trainer = Trainer(cfg)
    trainer.model.load_state_dict(variational_state(ae.state_dict(), trainer.model, sigma0=args.sigma0))
    trainer.run()


if __name__ == "__main__":
    main()
