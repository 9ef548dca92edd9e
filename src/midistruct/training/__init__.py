"""Training: the loop (``loop``), validation metrics (``metrics``), checkpoints (``checkpoint``),
multi-process setup (``distributed``). Entry point: ``midistruct train``."""
