"""Deterministic, leak-free split assignment from a piece's group."""

from __future__ import annotations

import hashlib

from midistruct.config import SplitConfig


def assign_split(group: str, cfg: SplitConfig) -> str:
    """``"train"``, ``"valid"`` or ``"test"`` for a group, the same on every run and machine.

    A hash of ``(seed, group)`` maps each group to [0, 1); all versions of a song share
    a group, so they share a split. Adding pieces never moves existing ones.
    """
    digest = hashlib.sha256(f"{cfg.seed}:{group}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < cfg.test:
        return "test"
    if u < cfg.test + cfg.valid:
        return "valid"
    return "train"
