"""Evaluating a trained checkpoint: held-out reconstruction (``evaluate``, ``midistruct evaluate``),
recurring test windows (``heldout``), interpolation smoothness (``smoothness``), sample statistics
against the data (``statistics``) and latent probes (``probes``). The top floor below the CLI: it
may use generation, training and the model; the scores themselves live in :mod:`midistruct.metrics`.
"""
