"""Render generated music for people: piano-roll pictures (PNG) and audio (WAV).

Data flow: generation (symusic Scores) -> render -> CLI and notebooks. ``pianoroll`` draws scores
with matplotlib, ``audio`` synthesizes them (``soundfont``, a numpy SF2 sampler playing pretty_midi's
General MIDI soundfont; else FluidSynth; else plain numpy synthesis), ``outputs`` writes both beside a
command's MIDI files, ``page`` puts pieces' piano rolls and audio on one self-contained HTML page.
Names are re-exported lazily, so ``import midistruct.render`` imports neither matplotlib nor numpy.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "pianoroll_figure": "pianoroll", "draw_pianoroll": "pianoroll", "pianoroll_grid": "pianoroll", "plot_pianorolls": "pianoroll",
    "synthesize": "audio", "write_wav": "audio", "find_soundfont": "audio",
    "render_outputs": "outputs", "write_outputs_page": "outputs", "write_page": "page",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    """Import the submodule that defines ``name`` on first use (PEP 562)."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
