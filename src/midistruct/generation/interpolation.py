"""Paths between latent codes: spherical (slerp) and linear (lerp) interpolation."""

from __future__ import annotations

import torch

METHODS = ("slerp", "lerp")


def lerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    return (1 - t) * a + t * b


def slerp(a: torch.Tensor, b: torch.Tensor, t: float, *, eps: float = 1e-7) -> torch.Tensor:
    """Spherical interpolation along the last dimension (Shoemake 1985), as MusicVAE uses.

    Falls back to lerp where the two vectors are (anti)parallel.
    """
    a_n = a / a.norm(dim=-1, keepdim=True).clamp_min(eps)
    b_n = b / b.norm(dim=-1, keepdim=True).clamp_min(eps)
    omega = torch.acos((a_n * b_n).sum(-1, keepdim=True).clamp(-1 + eps, 1 - eps))  # (..., 1)
    so = torch.sin(omega)
    out = (torch.sin((1 - t) * omega) / so) * a + (torch.sin(t * omega) / so) * b
    return torch.where(so.abs() < 1e-4, lerp(a, b, t), out)


def path(a: torch.Tensor, b: torch.Tensor, steps: int, *, method: str = "slerp") -> list[torch.Tensor]:
    """``steps`` codes from ``a`` to ``b`` inclusive (``steps >= 2``), the endpoints exactly ``a`` and ``b``."""
    if method not in METHODS:
        raise ValueError(f"unknown interpolation method {method!r}; valid: {', '.join(METHODS)}")
    if steps < 2:
        raise ValueError(f"interpolation needs at least 2 steps, got {steps}")
    fn = slerp if method == "slerp" else lerp
    inner = [fn(a, b, i / (steps - 1)) for i in range(1, steps - 1)]
    return [a.clone(), *inner, b.clone()]  # the endpoints exactly: they must decode as the inputs do
