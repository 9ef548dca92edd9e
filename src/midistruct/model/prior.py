"""A Gaussian fitted to a trained model's codes, so that models with deterministic codes can sample too.

A VAE's codes are drawn towards N(0, I), so sampling draws from it. A plain autoencoder
(``latent_mode: ae``) puts its codes wherever they serve reconstruction: N(0, I) says nothing about
where that is. Ghosh et al. (2020, "From variational to deterministic autoencoders") fit a density to
the codes of the training data after training ("ex-post density estimation") and sample from it. Here
the density is one Gaussian over a whole window's codes, ``[z_bar of bar 1 .. bar NB ; z_segment]``
(D = NB * Zb + Zs), with a low-rank-plus-diagonal covariance (probabilistic PCA):

    cov = F F^T + diag(s^2),   F (D, K): the K leading principal directions scaled by their spread,
                               s (D,): what those K directions leave of each coordinate's variance.

With K = D the covariance is the sample covariance itself. The file is ``code_prior.safetensors`` in the
checkpoint folder (float32 ``mean``, ``factor``, ``residual``; the shape facts in the metadata).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from midistruct.errors import MidiStructError

PRIOR_FILE = "code_prior.safetensors"
_META_KEY = "midistruct_code_prior"


class PriorError(MidiStructError, ValueError):
    """A code-prior file that cannot be read, or one that does not fit the model."""


@dataclass
class CodePrior:
    """N(mean, factor factor^T + diag(residual^2)) over ``[z_bar.flatten() ; z_segment]`` of one window."""

    mean: torch.Tensor  # (D,)
    factor: torch.Tensor  # (D, K)
    residual: torch.Tensor  # (D,)
    bars: int  # NB
    bar_dim: int  # Zb (0 for a segment-only model)
    segment_dim: int  # Zs
    windows: int  # how many windows it was fitted on

    @classmethod
    def fit(cls, z_bar: torch.Tensor, z_segment: torch.Tensor, *, rank: int = 128) -> CodePrior:
        """Fit to W windows' codes: ``z_bar`` (W, NB, Zb), ``z_segment`` (W, Zs); ``rank`` caps K (K <= D, W - 1)."""
        if z_bar.ndim != 3 or z_segment.ndim != 2 or len(z_bar) != len(z_segment):
            raise PriorError(f"codes of mismatched shapes: z_bar {list(z_bar.shape)}, z_segment {list(z_segment.shape)}")
        windows, bars, bar_dim = z_bar.shape
        if windows < 2:
            raise PriorError(f"a prior needs the codes of at least 2 windows, got {windows}")
        if rank < 1:
            raise PriorError(f"rank must be >= 1, got {rank}")
        x = torch.cat([z_bar.reshape(windows, -1), z_segment], dim=1).double()  # (W, D)
        mean = x.mean(0)
        centred = (x - mean) / (windows - 1) ** 0.5
        _, spread, directions = torch.linalg.svd(centred, full_matrices=False)  # spread (min(W, D),), directions (., D)
        k = min(rank, len(spread))
        factor = directions[:k].T * spread[:k]  # (D, K)
        variance = (centred**2).sum(0)  # (D,) each coordinate's sample variance
        residual = (variance - (factor**2).sum(1)).clamp(min=0).sqrt()
        return cls(mean.float(), factor.float(), residual.float(), bars, bar_dim, z_segment.shape[1], windows)

    @property
    def dim(self) -> int:
        return self.bars * self.bar_dim + self.segment_dim

    def sample(self, n: int, *, scale: float = 1.0,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` windows' codes: ``z_bar`` (n, NB, Zb) and ``z_segment`` (n, Zs) (torch's global generator by
        default). ``scale`` < 1 draws nearer the mean (every deviation times ``scale``: the truncation trick)."""
        if scale < 0:
            raise PriorError(f"scale must be >= 0, got {scale}")
        k = self.factor.shape[1]
        x = self.mean + scale * (torch.randn(n, k, generator=generator) @ self.factor.T
                                 + torch.randn(n, self.dim, generator=generator) * self.residual)
        z_bar = x[:, : self.bars * self.bar_dim].reshape(n, self.bars, self.bar_dim)
        return z_bar, x[:, self.bars * self.bar_dim :]

    def check(self, *, bars: int, bar_dim: int, segment_dim: int, where: str = "the code prior") -> None:
        """Raise :class:`PriorError` unless the prior describes codes of this shape (a model's window)."""
        if (self.bars, self.bar_dim, self.segment_dim) != (bars, bar_dim, segment_dim):
            raise PriorError(f"{where} is over {self.bars} bar codes of {self.bar_dim} + a segment code of "
                             f"{self.segment_dim}; the model has {bars} x {bar_dim} + {segment_dim}")

    def save(self, path: str | Path) -> Path:
        from safetensors.torch import save_file

        path = Path(path)
        meta = {"format": 1, "bars": self.bars, "bar_dim": self.bar_dim, "segment_dim": self.segment_dim,
                "windows": self.windows}
        tensors = {"mean": self.mean, "factor": self.factor, "residual": self.residual}
        save_file({k: v.float().contiguous() for k, v in tensors.items()}, str(path),
                  metadata={_META_KEY: json.dumps(meta)})
        return path

    @classmethod
    def load(cls, path: str | Path) -> CodePrior:
        """Read a prior file; :class:`PriorError` when it is not one or its tensors disagree with its metadata."""
        from safetensors import SafetensorError, safe_open

        path = Path(path)
        try:
            with safe_open(str(path), framework="pt") as f:
                raw = (f.metadata() or {}).get(_META_KEY)
                if raw is None:
                    raise PriorError(f"{path}: not a code-prior file (written by `midistruct prior`)")
                meta = json.loads(raw)
                prior = cls(f.get_tensor("mean").float(), f.get_tensor("factor").float(),
                            f.get_tensor("residual").float(), int(meta["bars"]), int(meta["bar_dim"]),
                            int(meta["segment_dim"]), int(meta["windows"]))
        except (SafetensorError, OSError, KeyError, ValueError) as err:
            if isinstance(err, PriorError):
                raise
            raise PriorError(f"{path}: unreadable code prior ({type(err).__name__}: {err})") from None
        d = prior.dim
        if prior.mean.shape != (d,) or prior.residual.shape != (d,) or prior.factor.ndim != 2 \
                or prior.factor.shape[0] != d:
            raise PriorError(f"{path}: tensors of shapes {list(prior.mean.shape)}, {list(prior.factor.shape)}, "
                             f"{list(prior.residual.shape)} do not fit its {d} dimensions")
        return prior


def load_prior(folder: str | Path) -> CodePrior | None:
    """The code prior in a checkpoint folder, or None when it has none."""
    path = Path(folder) / PRIOR_FILE
    return CodePrior.load(path) if path.exists() else None
