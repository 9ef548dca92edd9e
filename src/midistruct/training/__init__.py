"""Training: the loop (``loop``), validation metrics (``validation``), multi-process setup
(``distributed``). Checkpoint folders are written and read by :mod:`midistruct.model.checkpoint`.
Entry point: ``midistruct train``."""
