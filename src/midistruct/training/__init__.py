"""Training: the loop (``loop``), validation metrics (``validation``), multi-process setup
(``distributed``), starting from another checkpoint's weights (``finetune``, ``--init``).
Checkpoint folders are written and read by :mod:`midistruct.model.checkpoint`.
Entry point: ``midistruct train``."""
