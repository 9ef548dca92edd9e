"""The peer's model: MusicVAE's flat 2-bar melody VAE (Roberts et al. 2018; magenta ``lstm_models`` and
``base_model``), bottom-up: config, encoder, decoder, the VAE.

Shapes: B batch, S steps (32 for 2 bars), C classes (90), H hidden units, Z latent units, L layers.

As magenta: the encoder reads one-hot steps with a bidirectional LSTM and keeps the last layer's final forward
and backward outputs; ``mu`` is a linear map of them, ``sigma`` a softplus one (both initialised with std
0.001); the decoder's initial LSTM state is ``tanh(dense(z))`` and ``z`` is also concatenated to its input at
every step, the input being the previous step's one-hot class (zeros at the first step); the reconstruction
loss is the cross-entropy summed over the steps, the KL beyond ``free_bits`` (per window) weighted by
``beta = max_beta * (1 - beta_rate ** step)``. Training is teacher-forced (magenta's 2-bar configs add scheduled
sampling, ``inverse_sigmoid`` at rate 1000, which stays under 1% for the first 2,300 steps).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from .grid import N_CLASSES, STEPS_PER_BAR


@dataclass(frozen=True)
class PeerConfig:
    """Model and training settings; stored as ``config.json`` beside the weights."""

    steps: int = 2 * STEPS_PER_BAR
    n_classes: int = N_CLASSES
    enc_hidden: int = 512
    enc_layers: int = 1
    dec_hidden: int = 256
    dec_layers: int = 2
    z_dim: int = 256
    free_bits: float = 0.0  # per window, as magenta's free_bits
    max_beta: float = 0.2
    beta_rate: float = 0.99999
    batch_size: int = 64
    lr: float = 1e-3
    lr_decay: float = 0.9999  # per step: lr = (lr - min_lr) * lr_decay ** step + min_lr
    min_lr: float = 1e-5
    grad_clip: float = 1.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "PeerConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown peer config keys {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
        return cls(**values)


CONFIGS = {
    # magenta's cat-mel_2bar_small (enc [512], dec [256, 256], z 256, free_bits 0, max_beta 0.2), batch 64 for CPU
    "cat-mel_2bar_small": PeerConfig(),
    # the brief's variant: a 2-layer encoder
    "cat-mel_2bar_small-2layer": PeerConfig(enc_layers=2),
    # the KL of magenta's 2-bar drum configs (and of the brief's reading of the paper): 48 free bits, beta 0.2 from
    # the first step; magenta's melody configs use no free bits and anneal beta (above)
    "cat-mel_2bar_small-fb48": PeerConfig(free_bits=48.0, beta_rate=0.0),
    # magenta's cat-mel_2bar_big: z 512, enc [2048], dec [2048] x 3, max_beta 0.5 (a GPU model)
    "cat-mel_2bar_big": PeerConfig(enc_hidden=2048, dec_hidden=2048, dec_layers=3, z_dim=512, max_beta=0.5),
    # for tests
    "tiny": PeerConfig(enc_hidden=16, dec_hidden=16, z_dim=8, batch_size=4),
}


def named_config(name: str) -> PeerConfig:
    """The :data:`CONFIGS` entry ``name``; an unknown name lists the valid ones."""
    if name not in CONFIGS:
        raise KeyError(f"unknown peer config {name!r}; valid: {', '.join(CONFIGS)}")
    return CONFIGS[name]


def _forget_bias(lstm: nn.LSTM) -> nn.LSTM:
    """Forget gates biased to 1 at the start, as in the TensorFlow LSTM cells magenta uses (gates i, f, g, o)."""
    with torch.no_grad():
        for name, bias in lstm.named_parameters():
            if name.startswith("bias_ih"):
                bias[lstm.hidden_size : 2 * lstm.hidden_size] = 1.0
            elif name.startswith("bias_hh"):
                bias[lstm.hidden_size : 2 * lstm.hidden_size] = 0.0
    return lstm


class Encoder(nn.Module):
    """Bidirectional LSTM over one-hot steps; the last layer's final forward and backward outputs."""

    def __init__(self, cfg: PeerConfig):
        super().__init__()
        self.n_classes = cfg.n_classes
        self.lstm = _forget_bias(nn.LSTM(cfg.n_classes, cfg.enc_hidden, num_layers=cfg.enc_layers,
                                         bidirectional=True, batch_first=True))

    def forward(self, classes: torch.Tensor) -> torch.Tensor:
        """(B, S) long -> (B, 2H)."""
        _, (h, _) = self.lstm(F.one_hot(classes, self.n_classes).float())  # h: (L*2, B, H)
        return torch.cat([h[-2], h[-1]], dim=-1)


class Decoder(nn.Module):
    """Autoregressive LSTM over the steps; initial state tanh(dense(z)), z beside each step's input."""

    def __init__(self, cfg: PeerConfig):
        super().__init__()
        self.n_classes, self.layers, self.hidden = cfg.n_classes, cfg.dec_layers, cfg.dec_hidden
        self.z_to_state = nn.Linear(cfg.z_dim, 2 * cfg.dec_layers * cfg.dec_hidden)
        self.lstm = _forget_bias(nn.LSTM(cfg.n_classes + cfg.z_dim, cfg.dec_hidden, num_layers=cfg.dec_layers,
                                         batch_first=True))
        self.out = nn.Linear(cfg.dec_hidden, cfg.n_classes)

    def initial_state(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, Z) -> (h, c), each (L, B, H)."""
        state = torch.tanh(self.z_to_state(z)).view(len(z), 2, self.layers, self.hidden)  # (B, 2, L, H)
        state = state.permute(1, 2, 0, 3).contiguous()  # (2, L, B, H)
        return state[0], state[1]

    def forward(self, classes: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits (B, S, C) of the target ``classes`` (B, S) given ``z`` (B, Z)."""
        previous = F.one_hot(classes[:, :-1], self.n_classes).float()  # (B, S-1, C)
        inputs = F.pad(previous, (0, 0, 1, 0))  # (B, S, C): zeros at the first step
        inputs = torch.cat([inputs, z[:, None].expand(-1, classes.shape[1], -1)], dim=-1)  # (B, S, C+Z)
        out, _ = self.lstm(inputs, self.initial_state(z))  # (B, S, H)
        return self.out(out)

    @torch.no_grad()
    def decode(self, z: torch.Tensor, steps: int, *, temperature: float = 0.0,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, S) classes decoded from ``z`` (B, Z): greedy at ``temperature`` 0, else sampled."""
        state = self.initial_state(z)
        step_input = torch.zeros(len(z), 1, self.n_classes, device=z.device)  # (B, 1, C)
        out = []
        for _ in range(steps):
            hidden, state = self.lstm(torch.cat([step_input, z[:, None]], dim=-1), state)
            logits = self.out(hidden[:, 0])  # (B, C)
            if temperature > 0:
                pick = torch.multinomial(F.softmax(logits / temperature, dim=-1), 1, generator=generator)[:, 0]
            else:
                pick = logits.argmax(-1)
            out.append(pick)
            step_input = F.one_hot(pick, self.n_classes).float()[:, None]
        return torch.stack(out, dim=1)


@dataclass
class PeerOutput:
    """Per-window losses (B,) in nats, the logits (B, S, C) and the posterior (B, Z) mean and scale."""

    recon: torch.Tensor
    kl: torch.Tensor
    logits: torch.Tensor
    mu: torch.Tensor
    sigma: torch.Tensor


class MelodyVAE(nn.Module):
    """Encoder -> q(z|x) = N(mu, sigma^2) -> decoder."""

    def __init__(self, cfg: PeerConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.mu = nn.Linear(2 * cfg.enc_hidden, cfg.z_dim)
        self.sigma = nn.Linear(2 * cfg.enc_hidden, cfg.z_dim)
        for layer in (self.mu, self.sigma):  # magenta: random_normal_initializer(stddev=0.001)
            nn.init.normal_(layer.weight, std=0.001)
            nn.init.zeros_(layer.bias)
        self.decoder = Decoder(cfg)

    def posterior(self, classes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, S) -> mean and scale, each (B, Z)."""
        h = self.encoder(classes)
        return self.mu(h), F.softplus(self.sigma(h))

    def forward(self, classes: torch.Tensor, *, sample: bool = True) -> PeerOutput:
        """Teacher-forced pass over ``classes`` (B, S); z drawn from q (the posterior mean when not ``sample``)."""
        mu, sigma = self.posterior(classes)
        z = mu + sigma * torch.randn_like(mu) if sample else mu
        logits = self.decoder(classes, z)
        recon = F.cross_entropy(logits.transpose(1, 2), classes.long(), reduction="none").sum(-1)  # (B,)
        kl = 0.5 * (sigma.pow(2) + mu.pow(2) - 1.0 - 2.0 * torch.log(sigma.clamp_min(1e-8))).sum(-1)  # (B,)
        return PeerOutput(recon=recon, kl=kl, logits=logits, mu=mu, sigma=sigma)

    def loss(self, out: PeerOutput, *, step: int) -> tuple[torch.Tensor, float]:
        """(the training loss, beta at ``step``): mean recon + beta * mean max(KL - free nats, 0)."""
        beta = self.cfg.max_beta * (1.0 - self.cfg.beta_rate ** step)
        kl_cost = (out.kl - self.cfg.free_bits * math.log(2.0)).clamp_min(0.0)
        return out.recon.mean() + beta * kl_cost.mean(), beta
