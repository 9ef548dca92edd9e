"""The model stage: a transformer autoencoder with bar and segment latents (``MidiStructModel``).

Importing this package imports torch and transformers, and registers the model with
``AutoConfig`` / ``AutoModel`` so a checkpoint folder loads with ``AutoModel.from_pretrained(path)``.
:mod:`midistruct.model.checkpoint` owns the whole checkpoint folder (weights, tokenizer, run config,
trainer state) and its one loader, ``load_checkpoint``; :mod:`midistruct.model.pretrained` finds the
shipped models by name and exports them.
"""

from transformers import AutoConfig, AutoModel

from midistruct.model.configuration import LATENT_MODES, MidiStructConfig
from midistruct.model.modeling import (
    CONDITIONINGS,
    Latents,
    MidiStructModel,
    MidiStructOutput,
    count_bars,
    latent_usage,
    shift_right,
)

AutoConfig.register(MidiStructConfig.model_type, MidiStructConfig)
AutoModel.register(MidiStructConfig, MidiStructModel)

__all__ = [
    "CONDITIONINGS",
    "LATENT_MODES",
    "Latents",
    "MidiStructConfig",
    "MidiStructModel",
    "MidiStructOutput",
    "count_bars",
    "latent_usage",
    "shift_right",
]
