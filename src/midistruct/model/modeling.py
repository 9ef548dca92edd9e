"""The transformer autoencoder: encoder -> bar and segment latents -> latent-conditioned causal decoder.

Read bottom-up, in build order: token helpers, attention, block, encoder, latent bottleneck, KL,
decoder conditionings (a registry), decoder, the sequence head (an auxiliary loss on the codes), outputs,
the model.

Shape letters used in the comments:
    B  batch                 T  tokens in this call        S  keys seen by attention (cached + new)
    D  d_model               H  attention heads            Dh head width, D // H
    Dff ffn_dim              V  vocabulary size
    NB bars in the segment   Zb bar latent size            Zs segment latent size
    P  prefix vectors ahead of the tokens (0 for "add" conditioning, NB + 1 for "prefix")
    K  slots per bar in the sequence head (slot k: the bar's k-th token)
    M  learned queries of the "slots" bar pooling
    G  decoder tags (``config.decoder_tags``)

Data contract (see ``midistruct.shards.dataset``): ``input_ids``, ``attention_mask``, ``bar_ids``,
``labels`` are (B, T), right-padded; every segment starts with a ``Bar`` token and ends with EOS.
The decoder reads ``[BOS] + input_ids[:, :-1]`` and predicts ``input_ids``. It finds each token's bar by
counting the tokens that open a bar in its own input (``count_bars`` over ``config.bar_token_ids``: the
``Bar`` id, and under BPE every merge that starts with ``Bar``), in training and in generation alike, so
the bar code a token sees never depends on information the generator lacks.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import Cache, DynamicCache
from transformers.utils import ModelOutput

from midistruct.model.configuration import MidiStructConfig

# --------------------------------------------------------------------------- token helpers


def shift_right(input_ids: torch.Tensor, *, bos_token_id: int) -> torch.Tensor:
    """Decoder input for teacher forcing: ``[BOS] + input_ids[:, :-1]`` (B, T)."""
    bos = input_ids.new_full((input_ids.shape[0], 1), bos_token_id)
    return torch.cat([bos, input_ids[:, :-1]], dim=1)


def count_bars(input_ids: torch.Tensor, *, bar_token_ids) -> torch.Tensor:
    """Bar index of each token (B, T): tokens that open a bar seen so far, inclusive, minus one; 0 before the first.

    ``bar_token_ids`` (an int or a sequence of ids) are the ids that open a bar: the ``Bar`` id, and with BPE
    also every merge that starts with ``Bar`` (``RemiVocab.bar_opening_ids``), since there the ``Bar`` id alone
    hardly ever appears (issue 13). On a segment this reproduces the data pipeline's ``bar_ids`` at real
    tokens; on the shifted decoder input it gives ``[0] + bar_ids[:, :-1]``, which is what the decoder uses.
    """
    opens = torch.isin(input_ids, torch.as_tensor(bar_token_ids, device=input_ids.device))
    return (opens.long().cumsum(dim=1) - 1).clamp(min=0)


def bar_slots(bar_ids: torch.Tensor) -> torch.Tensor:
    """Index of each token within its bar (B, T), the bar's first token 0, for ``bar_ids`` (B, T) of a segment."""
    B, T = bar_ids.shape
    steps = torch.arange(T, device=bar_ids.device).expand(B, T)  # (B, T)
    first = torch.ones_like(bar_ids, dtype=torch.bool)
    first[:, 1:] = bar_ids[:, 1:] != bar_ids[:, :-1]  # (B, T): a bar's first token
    return steps - torch.cummax(torch.where(first, steps, 0), dim=1).values


def count_slots(input_ids: torch.Tensor, *, bar_token_ids) -> torch.Tensor:
    """Slot of the token each decoder input predicts (B, T): its index within its bar (the Bar token is slot 0),
    i.e. tokens since the last Bar, inclusive; 0 before the first Bar (BOS predicts the first Bar). A bar's last
    input gets one past its bar's slots (the next Bar belongs to the next bar)."""
    B, T = input_ids.shape
    steps = torch.arange(T, device=input_ids.device).expand(B, T)  # (B, T)
    opens = torch.isin(input_ids, torch.as_tensor(bar_token_ids, device=input_ids.device))  # (B, T), see count_bars
    last_bar = torch.cummax(torch.where(opens, steps, -1), dim=1).values  # (B, T)
    return torch.where(last_bar >= 0, steps - last_bar + 1, 0)


def check_length(end: int, max_positions: int) -> None:
    """A clear error instead of an embedding IndexError when a sequence outgrows the position table."""
    if end > max_positions:
        raise ValueError(f"sequence reaches position {end}, beyond max_positions={max_positions}")


def causal_mask(q_len: int, k_len: int, device: torch.device) -> torch.Tensor:
    """Boolean (T, S) mask for the last ``q_len`` of ``k_len`` positions: query i sees keys j <= S - T + i."""
    return torch.ones(q_len, k_len, dtype=torch.bool, device=device).tril(diagonal=k_len - q_len)


# --------------------------------------------------------------------------- transformer block


class SelfAttention(nn.Module):
    """Multi-head self-attention on ``scaled_dot_product_attention``; optionally appends to a KV cache."""

    def __init__(self, config: MidiStructConfig, *, layer_idx: int | None = None):
        super().__init__()
        self.n_heads = config.n_heads
        self.dropout = config.dropout
        self.layer_idx = layer_idx
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model)
        self.out = nn.Linear(config.d_model, config.d_model)

    def forward(self, x, *, attn_mask=None, is_causal: bool = False, cache: Cache | None = None):
        B, T, D = x.shape
        qkv = self.qkv(x).view(B, T, 3, self.n_heads, D // self.n_heads)  # (B, T, 3, H, Dh)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # 3 x (B, H, T, Dh)
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)  # (B, H, S, Dh)
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal, dropout_p=p)
        # y: (B, H, T, Dh)
        return self.out(y.transpose(1, 2).reshape(B, T, D))  # (B, T, D)


class FeedForward(nn.Module):
    def __init__(self, config: MidiStructConfig):
        super().__init__()
        self.up = nn.Linear(config.d_model, config.ffn_dim)
        self.down = nn.Linear(config.ffn_dim, config.d_model)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x):
        h = F.gelu(self.up(x))  # (B, T, Dff)
        return self.drop(self.down(h))  # (B, T, D)


class Block(nn.Module):
    """Pre-LN transformer block: ``x + attn(ln(x))`` then ``x + ffn(ln(x))``."""

    def __init__(self, config: MidiStructConfig, *, layer_idx: int | None = None):
        super().__init__()
        self.ln_attn = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.attn = SelfAttention(config, layer_idx=layer_idx)
        self.ln_ffn = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.ffn = FeedForward(config)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x, *, attn_mask=None, is_causal: bool = False, cache: Cache | None = None):
        x = x + self.drop(self.attn(self.ln_attn(x), attn_mask=attn_mask, is_causal=is_causal, cache=cache))
        return x + self.ffn(self.ln_ffn(x))  # (B, T, D)


# --------------------------------------------------------------------------- encoder


class Encoder(nn.Module):
    """Bidirectional pre-LN transformer over a segment: token + position + bar-position embeddings."""

    def __init__(self, config: MidiStructConfig, *, layers: int | None = None):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.d_model)
        self.embed_positions = nn.Embedding(config.max_positions, config.d_model)
        self.embed_bars = nn.Embedding(config.max_bars, config.d_model)
        self.drop = nn.Dropout(config.dropout)
        layers = config.encoder_layers if layers is None else layers
        self.blocks = nn.ModuleList(Block(config) for _ in range(layers))
        self.norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)

    def forward(self, input_ids, *, attention_mask, bar_ids):
        check_length(input_ids.shape[1], self.embed_positions.num_embeddings)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.embed_tokens(input_ids) + self.embed_positions(positions) + self.embed_bars(bar_ids)  # (B, T, D)
        x = self.drop(x)
        keep = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T): padding is never a key
        for block in self.blocks:
            x = block(x, attn_mask=keep)
        return self.norm(x)  # (B, T, D)


# --------------------------------------------------------------------------- latent bottleneck


def pool_bars(states, *, attention_mask, bar_ids, n_bars: int):
    """Mean of the real tokens' states per bar, with ``index_add`` (no loop over bars).

    Returns (means (B, NB, D) float32, bar_mask (B, NB) bool: the bar has at least one real token).
    """
    B, T, D = states.shape
    weight = attention_mask.float()  # (B, T)
    slot = (bar_ids + n_bars * torch.arange(B, device=bar_ids.device)[:, None]).flatten()  # (B*T,) into B*NB slots
    values = (states.float() * weight[..., None]).flatten(0, 1)  # (B*T, D)
    sums = values.new_zeros(B * n_bars, D).index_add(0, slot, values)  # (B*NB, D)
    counts = weight.new_zeros(B * n_bars).index_add(0, slot, weight.flatten())  # (B*NB,)
    means = sums / counts.clamp(min=1.0)[:, None]
    return means.view(B, n_bars, D), counts.view(B, n_bars) > 0


def pool_segment(states, *, attention_mask):
    """Mean of the real tokens' states (B, D), float32."""
    weight = attention_mask.float()[..., None]  # (B, T, 1)
    return (states.float() * weight).sum(1) / weight.sum(1).clamp(min=1.0)


class SlotPooling(nn.Module):
    """Order-aware bar pooling (``bar_pooling="slots"``, issue 14): M learned queries attend to a bar's token
    states, whose keys also carry each token's slot within the bar (``bar_slots``); the M read-outs, concatenated,
    are projected back to D. A query can learn to read "the bar's k-th pitch", so the bar code can keep the order
    of the notes, which a mean of the states blurs. It starts close to a mean (near-uniform attention)."""

    def __init__(self, config: MidiStructConfig):
        super().__init__()
        self.queries = nn.Embedding(config.pool_queries, config.d_model)
        self.slots = nn.Embedding(config.sequence_slots, config.d_model)
        self.key = nn.Linear(config.d_model, config.d_model)
        self.value = nn.Linear(config.d_model, config.d_model)
        self.out = nn.Linear(config.pool_queries * config.d_model, config.d_model)

    def forward(self, states, *, attention_mask, bar_ids, n_bars: int):
        """Returns (pooled (B, NB, D) float32, bar_mask (B, NB) bool), as ``pool_bars``."""
        D = states.shape[-1]
        slot = bar_slots(bar_ids).clamp(max=self.slots.num_embeddings - 1)  # (B, T)
        keys = self.key(states) + self.slots(slot)  # (B, T, D)
        scores = torch.einsum("md,btd->bmt", self.queries.weight, keys) / math.sqrt(D)  # (B, M, T)
        bars = torch.arange(n_bars, device=bar_ids.device)
        in_bar = (bar_ids[:, None, :] == bars[None, :, None]) & attention_mask.bool()[:, None, :]  # (B, NB, T)
        scores = scores[:, None].masked_fill(~in_bar[:, :, None, :], torch.finfo(scores.dtype).min)  # (B, NB, M, T)
        read = scores.softmax(-1) @ self.value(states)[:, None]  # (B, NB, M, T) @ (B, 1, T, D) -> (B, NB, M, D)
        return self.out(read.flatten(-2)).float(), in_bar.any(-1)  # (B, NB, D), (B, NB)


class FlatPooling(nn.Module):
    """Order-keeping bar pooling (``bar_pooling="flat"``, issue 14): a bar's first ``pool_slots`` token states,
    each projected to ``pool_width``, laid side by side in slot order and projected to D. Each slot has its own
    weights into the code, so "the pitch of the bar's k-th token" needs no learned binding of content to place
    (a mean must learn it in the encoder; ``SlotPooling`` by attention). Tokens past the last slot are left out."""

    def __init__(self, config: MidiStructConfig):
        super().__init__()
        self.n_slots = config.pool_slots
        self.down = nn.Linear(config.d_model, config.pool_width)
        self.out = nn.Linear(config.pool_slots * config.pool_width, config.d_model)

    def forward(self, states, *, attention_mask, bar_ids, n_bars: int):
        """Returns (pooled (B, NB, D) float32, bar_mask (B, NB) bool), as ``pool_bars``."""
        B, T, _ = states.shape
        K, real, slot = self.n_slots, attention_mask.bool(), bar_slots(bar_ids)  # slot: (B, T)
        keep = real & (slot < K)  # (B, T)
        small = self.down(states) * keep[..., None]  # (B, T, R)
        cell = torch.where(keep, bar_ids.clamp(max=n_bars - 1) * K + slot, n_bars * K)  # (B, T)
        grid = small.new_zeros(B, n_bars * K + 1, small.shape[-1])  # one spare cell for the tokens left out
        grid = grid.scatter_add(1, cell[..., None].expand_as(small), small)[:, :-1]  # (B, NB * K, R)
        bar_mask = torch.zeros(B, n_bars + 1, dtype=torch.bool, device=bar_ids.device)
        bar_mask.scatter_(1, torch.where(real, bar_ids.clamp(max=n_bars - 1), n_bars), True)
        return self.out(grid.reshape(B, n_bars, -1)).float(), bar_mask[:, :n_bars]  # (B, NB, D), (B, NB)


class LatentHead(nn.Module):
    """Pooled state -> (mu, logvar) for a Gaussian posterior, or (z, None) when deterministic."""

    def __init__(self, d_model: int, latent_dim: int, *, variational: bool):
        super().__init__()
        self.variational = variational
        self.proj = nn.Linear(d_model, 2 * latent_dim if variational else latent_dim)

    def forward(self, pooled):
        out = self.proj(pooled.to(self.proj.weight.dtype))  # (..., 2Z) or (..., Z)
        if not self.variational:
            return out, None
        mu, logvar = out.float().chunk(2, dim=-1)  # (..., Z) each
        return mu, logvar


def reparameterize(mu, logvar, *, sample: bool):
    """``mu + sigma * eps`` when sampling a Gaussian posterior, else ``mu`` (posterior mean, or the AE code)."""
    if logvar is None or not sample:
        return mu
    return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)


def gaussian_kl(mu, logvar):
    """KL(N(mu, exp(logvar)) || N(0, I)) in nats, summed over the last (latent) dimension."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(-1)


@dataclass
class Latents(ModelOutput):
    """What the encoder gives the decoder. ``z_*`` are the codes the decoder reads; ``mu_*``/``logvar_*`` the
    posterior (``logvar_*`` is None in "ae" mode; all ``*_bar`` are None when ``bar_latents`` is False).

    z_bar, mu_bar, logvar_bar: (B, NB, Zb).  z_segment, mu_segment, logvar_segment: (B, Zs).
    bar_mask: (B, NB) bool, True where the segment has that bar (segments in a batch differ in length).
    """

    z_bar: torch.Tensor | None = None
    z_segment: torch.Tensor | None = None
    mu_bar: torch.Tensor | None = None
    logvar_bar: torch.Tensor | None = None
    mu_segment: torch.Tensor | None = None
    logvar_segment: torch.Tensor | None = None
    bar_mask: torch.Tensor | None = None

    def codes(self) -> dict[str, torch.Tensor]:
        """The decoder's keyword arguments: ``model.generate(input_ids=bos, **latents.codes())``."""
        return {"z_bar": self.z_bar, "z_segment": self.z_segment}


class Bottleneck(nn.Module):
    """Encoder states -> bar latents (pooled per bar: a mean, or ``SlotPooling``) and a segment latent
    (mean-pooled over the segment)."""

    def __init__(self, config: MidiStructConfig):
        super().__init__()
        variational = config.latent_mode == "vae"
        self.segment = LatentHead(config.d_model, config.latent_dim_segment, variational=variational)
        self.bar = self.bar_pool = None
        if config.bar_latents:
            self.bar = LatentHead(config.d_model, config.latent_dim_bar, variational=variational)
            pools = {"slots": SlotPooling, "flat": FlatPooling}
            self.bar_pool = pools[config.bar_pooling](config) if config.bar_pooling in pools else None  # None: mean

    def forward(self, states, *, attention_mask, bar_ids, sample: bool) -> Latents:
        mu_s, logvar_s = self.segment(pool_segment(states, attention_mask=attention_mask))  # (B, Zs)
        z_s = reparameterize(mu_s, logvar_s, sample=sample)
        latents = Latents(z_segment=z_s, mu_segment=mu_s, logvar_segment=logvar_s)
        if self.bar is None:
            return latents
        n_bars = int((bar_ids * attention_mask).max()) + 1
        pool = pool_bars if self.bar_pool is None else self.bar_pool
        pooled, bar_mask = pool(states, attention_mask=attention_mask, bar_ids=bar_ids, n_bars=n_bars)
        # pooled: (B, NB, D)
        mu_b, logvar_b = self.bar(pooled)  # (B, NB, Zb)
        latents.z_bar = reparameterize(mu_b, logvar_b, sample=sample)
        latents.mu_bar, latents.logvar_bar, latents.bar_mask = mu_b, logvar_b, bar_mask
        return latents


class BlockEncoder(nn.Module):
    """A functional block (issue 19): an encoder of ``layers`` blocks over one view of a window
    (``midistruct.tokens.views``: the arrangement's or the performance's), its states pooled per bar (averaged, or
    ``block_pooling="flat"``: side by side in order, :class:`FlatPooling`) and projected to a ``dim``-wide code per
    bar (deterministic)."""

    def __init__(self, config: MidiStructConfig, *, layers: int, dim: int):
        super().__init__()
        self.encoder = Encoder(config, layers=layers)
        self.pool = FlatPooling(config) if config.block_pooling == "flat" else None  # None: the mean
        self.code = nn.Linear(config.d_model, dim)

    def forward(self, input_ids, *, attention_mask, bar_ids, n_bars: int):
        """Codes (B, NB, dim) float32 for the view (B, T'); bars the view lacks get the code of no notes (the
        mean of nothing is 0)."""
        states = self.encoder(input_ids, attention_mask=attention_mask, bar_ids=bar_ids)
        pool = pool_bars if self.pool is None else self.pool
        pooled, _ = pool(states, attention_mask=attention_mask, bar_ids=bar_ids.clamp(max=n_bars - 1), n_bars=n_bars)
        return self.code(pooled.to(self.code.weight.dtype)).float()


# --------------------------------------------------------------------------- decoder conditionings


def bar_code_rows(z_bar, z_segment):
    """[bar code ; segment code] per bar (B, NB, Zb + Zs); without bar latents (``z_bar`` None) the segment code
    alone, as one bar (B, 1, Zs)."""
    if z_bar is None:
        return z_segment[:, None, :]
    return torch.cat([z_bar, z_segment[:, None, :].expand(-1, z_bar.shape[1], -1)], dim=-1)


def per_decoding(cache: Cache | None, name: str, compute):
    """``compute()``, and while decoding with a cache, once per decoding: the codes do not change from token to token,
    so what is made of them alone (the plan, the decoder's memory and its keys and values) is kept on the cache under
    ``name`` and made again when the cache is empty (a new decoding)."""
    if cache is None:
        return compute()
    kept = getattr(cache, name, None)
    if kept is None or cache.get_seq_length() == 0:
        kept = compute()
        setattr(cache, name, kept)
    return kept


def gather_bar_codes(z_bar, bar_index):
    """The code of each token's bar: z_bar (B, NB, Zb) at bar_index (B, T) -> (B, T, Zb).

    Tokens past the last coded bar (a generator that writes more bars than it was given) reuse the last code."""
    index = bar_index.clamp(max=z_bar.shape[1] - 1)[..., None].expand(-1, -1, z_bar.shape[-1])
    return torch.gather(z_bar, 1, index)


class AddConditioning(nn.Module):
    """Each decoder input embedding gets ``Linear([code of its bar ; segment code])`` added (the baseline)."""

    def __init__(self, config: MidiStructConfig):
        super().__init__()
        in_dim = config.latent_dim_segment + config.bar_code_dim
        self.proj = nn.Linear(in_dim, config.d_model)
        self.proj.is_code_projection = True  # initialised small (MidiStructPreTrainedModel._init_weights)

    def n_prefix(self, *, z_bar, z_segment) -> int:
        return 0

    @staticmethod
    def token_codes(x, *, bar_index, z_bar, z_segment):
        """[code of each token's bar ; segment code] (B, T, Zb + Zs), or the segment code alone (B, T, Zs)."""
        B, T, _ = x.shape
        codes = z_segment[:, None, :].expand(B, T, -1)  # (B, T, Zs)
        if z_bar is not None:
            codes = torch.cat([gather_bar_codes(z_bar, bar_index), codes], dim=-1)  # (B, T, Zb + Zs)
        return codes

    def forward(self, x, *, bar_index, z_bar, z_segment, with_prefix: bool, slot_index=None, plan=None):
        codes = self.token_codes(x, bar_index=bar_index, z_bar=z_bar, z_segment=z_segment)
        return x + self.proj(codes.to(self.proj.weight.dtype))  # (B, T, D)


class SlotConditioning(AddConditioning):
    """"add", plus the codes read out at the slot of the token to predict (issue 14): each decoder input also
    gets ``FFN(LN(Linear([bar code ; segment code]) + query[slot]))``, slot = ``count_slots``, so the decoder is
    handed "the bar's k-th token" from the code instead of having to find it there itself."""

    def __init__(self, config: MidiStructConfig):
        super().__init__(config)
        in_dim = config.latent_dim_segment + config.bar_code_dim
        self.slot_proj = nn.Linear(in_dim, config.d_model)
        self.slots = nn.Embedding(config.sequence_slots, config.d_model)
        self.norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.ffn = FeedForward(config)  # its output layer starts small (_init_weights): "add" at first

    def forward(self, x, *, bar_index, z_bar, z_segment, with_prefix: bool, slot_index=None, plan=None):
        if slot_index is None:
            raise ValueError("slot conditioning needs the slot of each decoder input (count_slots)")
        codes = self.token_codes(x, bar_index=bar_index, z_bar=z_bar, z_segment=z_segment).to(self.proj.weight.dtype)
        slots = self.slots(slot_index.clamp(max=self.slots.num_embeddings - 1))  # (B, T, D)
        readout = self.ffn(self.norm(self.slot_proj(codes) + slots))  # (B, T, D)
        return x + self.proj(codes) + readout  # (B, T, D)


class PlanConditioning(AddConditioning):
    """"add", plus the sequence head's reading of the codes at the bar and slot of the token to predict (issue 14):
    ``plan`` (B, NB, K, D) is ``SequenceHead.hidden`` of the codes, which that head's loss trains to name each
    slot's token; the decoder input that predicts slot k of bar n gets ``Linear(plan[n, k])``, so the decoder is
    handed the head's reading of the code for exactly that token (slots past K share the last)."""

    def __init__(self, config: MidiStructConfig):
        super().__init__(config)
        self.plan_proj = nn.Linear(config.d_model, config.d_model)

    def forward(self, x, *, bar_index, z_bar, z_segment, with_prefix: bool, slot_index=None, plan=None):
        if plan is None or slot_index is None:
            raise ValueError("plan conditioning needs the sequence head's plan and each decoder input's slot")
        B, NB, K, _ = plan.shape
        rows = torch.arange(B, device=x.device)[:, None]
        picked = plan[rows, bar_index.clamp(max=NB - 1), slot_index.clamp(max=K - 1)]  # (B, T, D)
        added = super().forward(x, bar_index=bar_index, z_bar=z_bar, z_segment=z_segment, with_prefix=with_prefix)
        return added + self.plan_proj(picked.to(self.plan_proj.weight.dtype))  # (B, T, D)


class PrefixConditioning(nn.Module):
    """The latents become P = NB + 1 vectors ahead of the tokens: bar k's code (plus a bar-position embedding
    k, so that tokens of bar k can find it), then the segment code. They enter the KV cache on the first step."""

    def __init__(self, config: MidiStructConfig):
        super().__init__()
        self.segment_proj = nn.Linear(config.latent_dim_segment, config.d_model)
        self.bar_proj = nn.Linear(config.bar_code_dim, config.d_model) if config.bar_latents else None
        self.bar_positions = nn.Embedding(config.max_bars, config.d_model) if config.bar_latents else None

    def n_prefix(self, *, z_bar, z_segment) -> int:
        return 1 + (z_bar.shape[1] if z_bar is not None else 0)

    def forward(self, x, *, bar_index, z_bar, z_segment, with_prefix: bool, slot_index=None, plan=None):
        if not with_prefix:
            return x
        dtype = self.segment_proj.weight.dtype
        prefix = [self.segment_proj(z_segment.to(dtype))[:, None, :]]  # (B, 1, D)
        if z_bar is not None:
            bars = torch.arange(z_bar.shape[1], device=z_bar.device)
            prefix.insert(0, self.bar_proj(z_bar.to(dtype)) + self.bar_positions(bars))  # (B, NB, D)
        return torch.cat([*prefix, x], dim=1)  # (B, P + T, D)


class NoConditioning(nn.Module):
    """The decoder ignores the codes: a plain causal LM (``latent_mode="none"``)."""

    def __init__(self, config: MidiStructConfig):
        super().__init__()

    def n_prefix(self, *, z_bar, z_segment) -> int:
        return 0

    def forward(self, x, *, bar_index, z_bar, z_segment, with_prefix: bool, slot_index=None, plan=None):
        return x


CONDITIONINGS: dict[str, type[nn.Module]] = {"add": AddConditioning, "prefix": PrefixConditioning,
                                             "slot": SlotConditioning, "plan": PlanConditioning}


def build_conditioning(config: MidiStructConfig) -> nn.Module:
    """The conditioning named by ``config.conditioning``; an unknown name lists the valid ones.
    With ``latent_mode="none"`` there is nothing to read: :class:`NoConditioning`."""
    if config.conditioning not in CONDITIONINGS:
        raise ValueError(f"unknown conditioning {config.conditioning!r}; valid: {', '.join(sorted(CONDITIONINGS))}")
    if config.latent_mode == "none":
        return NoConditioning(config)
    return CONDITIONINGS[config.conditioning](config)


# --------------------------------------------------------------------------- decoder


class MemoryAttention(nn.Module):
    """Multi-head attention from queries to a set of memory vectors: the one reading mechanism of
    :class:`CodeAttention` (the decoder's reads of its bar's codes) and :class:`CodeReader` (the sequence head's)."""

    def __init__(self, config: MidiStructConfig):
        super().__init__()
        self.n_heads = config.n_heads
        self.query = nn.Linear(config.d_model, config.d_model)
        self.key_value = nn.Linear(config.d_model, 2 * config.d_model)
        self.out = nn.Linear(config.d_model, config.d_model)

    def keys_values(self, memory):
        """Keys and values of memory (B, S, D): 2 x (B, H, S, Dh)."""
        B, S, D = memory.shape
        k, v = self.key_value(memory).view(B, S, 2, self.n_heads, D // self.n_heads).permute(2, 0, 3, 1, 4)
        return k, v

    def attend(self, queries, keys_values, *, mask=None, dropout: float = 0.0):
        """Read-outs (B, T, D) for queries (B, T, D) (before :attr:`query`) and :meth:`keys_values`; ``mask``
        (B, 1, T, S) True where a query may look."""
        B, T, D = queries.shape
        q = self.query(queries).view(B, T, self.n_heads, D // self.n_heads).transpose(1, 2)  # (B, H, T, Dh)
        k, v = keys_values
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)  # (B, H, T, Dh)
        return self.out(y.transpose(1, 2).reshape(B, T, D))


class CodeAttention(MemoryAttention):
    """Cross-attention from decoder states to the memory vectors of each token's bar (``decoder_memory`` M > 0):
    the query is the decoder's own state, so a position picks the part of its bar's codes it needs by what it has
    decoded so far -- e.g. "the third melody note" where the content code holds the melody by its own slots, not
    by the window's. Pre-LN; its output layer starts at zero (``zero_init``), so a grown checkpoint decodes as
    before until it learns to read."""

    def __init__(self, config: MidiStructConfig):
        super().__init__(config)
        self.dropout = config.dropout
        self.norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        nn.init.zeros_(self.out.weight)
        self.out.zero_init = True  # and again in MidiStructPreTrainedModel._init_weights, which redraws every layer

    def keys_values(self, memory):
        """The memory's (B, NB, M, D) keys and values, 2 x (B, H, NB * M, Dh): fixed while decoding, so kept on
        the cache."""
        return super().keys_values(memory.flatten(1, 2))

    def forward(self, x, *, memory, bar_index, keys_values=None):
        """Read-outs (B, T, D) for states x (B, T, D), memory (B, NB, M, D) and each state's bar (B, T); a token
        past the last coded bar reads the last bar's memory, as ``gather_bar_codes`` does. ``keys_values``:
        :meth:`keys_values` of the memory, when already computed."""
        NB, M = memory.shape[1], memory.shape[2]
        key_bar = torch.arange(NB, device=x.device).repeat_interleave(M)  # (NB * M,)
        own = bar_index.clamp(max=NB - 1)[:, None, :, None] == key_bar  # (B, 1, T, NB * M)
        return self.attend(self.norm(x), self.keys_values(memory) if keys_values is None else keys_values,
                           mask=own, dropout=self.dropout if self.training else 0.0)


class TagCodes(nn.Module):
    """``config.decoder_tags`` (issue 18, item 2): each tag's value a learned vector the size of the segment code,
    row 0 of each tag standing for "not given"; a window's tags sum to one vector (B, Zs) that the decoder reads
    added to the segment code, so every way the codes reach the decoder (added, plan, memory) carries the tags."""

    def __init__(self, config: MidiStructConfig):
        super().__init__()
        self.names = list(config.decoder_tags)
        self.tables = nn.ModuleList(nn.Embedding(1 + len(config.decoder_tags[n]), config.latent_dim_segment)
                                    for n in self.names)

    def forward(self, tag_ids):
        """``tag_ids`` (B, G), column g the value index of tag ``names[g]`` (0: not given) -> (B, Zs)."""
        if tag_ids.shape[-1] != len(self.tables):
            raise ValueError(f"tag_ids has {tag_ids.shape[-1]} columns; this model reads {len(self.tables)} tags "
                             f"({', '.join(self.names)})")
        return sum(table(tag_ids[:, g]) for g, table in enumerate(self.tables))  # (B, Zs)


class _Reverse(torch.autograd.Function):
    """Identity forward, gradient times ``-scale`` backward (the gradient reversal layer)."""

    @staticmethod
    def forward(ctx, x, scale: float):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.scale * grad, None


class TagAdversary(nn.Module):
    """``config.tag_adversary``: one classifier per decoder tag naming the window's value from its codes, read through
    a gradient reversal layer, so that the encoder learns to hide the tags the decoder reads (Fader networks)."""

    def __init__(self, config: MidiStructConfig):
        super().__init__()
        width = config.latent_dim_segment + config.bar_code_dim
        self.scale = float(config.tag_adversary)
        self.heads = nn.ModuleList(nn.Sequential(nn.Linear(width, config.d_model), nn.GELU(),
                                                 nn.Linear(config.d_model, len(values)))
                                   for values in config.decoder_tags.values())

    def forward(self, codes, tag_ids):
        """Summed cross-entropy (B,) of each given tag (``tag_ids`` (B, G), 0 not given) from ``codes`` (B, Zs + Zb),
        and how many of them each head named right (G,)."""
        x = _Reverse.apply(codes, self.scale)
        nll, right = codes.new_zeros(codes.shape[0]), []
        for g, head in enumerate(self.heads):
            logits = head(x.to(head[0].weight.dtype)).float()  # (B, values)
            target = tag_ids[:, g] - 1  # -1: not given
            nll = nll + F.cross_entropy(logits, target.clamp(min=0), reduction="none") * (target >= 0)
            right.append(((logits.argmax(-1) == target) & (target >= 0)).sum())
        return nll, torch.stack(right)


class Decoder(nn.Module):
    """Causal pre-LN transformer reading token + position + bar-position embeddings and the latents."""

    def __init__(self, config: MidiStructConfig):
        super().__init__()
        self.max_bars = config.max_bars
        self.embed_tokens = nn.Embedding(config.vocab_size, config.d_model)
        self.embed_positions = nn.Embedding(config.max_positions, config.d_model)
        self.embed_bars = nn.Embedding(config.max_bars, config.d_model)
        self.conditioning = build_conditioning(config)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config, layer_idx=i) for i in range(config.decoder_layers))
        self.norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.n_memory = config.decoder_memory
        self.memory = self.memory_norm = self.reads = None  # decoder_memory: each layer reads its bar's codes
        if self.n_memory:
            self.memory = nn.Linear(config.latent_dim_segment + config.bar_code_dim, self.n_memory * config.d_model)
            self.memory_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
            self.reads = nn.ModuleList(CodeAttention(config) for _ in range(config.decoder_layers))

    def code_memory(self, z_bar, z_segment):
        """The memory vectors (B, NB, M, D) of each bar's codes (:func:`bar_code_rows`)."""
        codes = bar_code_rows(z_bar, z_segment)  # (B, NB, Zb + Zs)
        memory = self.memory(codes.to(self.memory.weight.dtype))  # (B, NB, M * D)
        return self.memory_norm(memory.view(*codes.shape[:2], self.n_memory, -1))  # (B, NB, M, D)

    def cached_tokens(self, cache: Cache | None, *, z_bar, z_segment) -> int:
        """How many tokens (not prefix vectors) the cache already holds."""
        seen = cache.get_seq_length() if cache is not None else 0
        return seen - self.conditioning.n_prefix(z_bar=z_bar, z_segment=z_segment) if seen else 0

    def embed(self, input_ids, *, bar_index, start: int):
        check_length(start + input_ids.shape[1], self.embed_positions.num_embeddings)
        positions = torch.arange(start, start + input_ids.shape[1], device=input_ids.device)
        bars = self.embed_bars(bar_index.clamp(max=self.max_bars - 1))
        return self.embed_tokens(input_ids) + self.embed_positions(positions) + bars  # (B, T, D)

    def forward(self, input_ids, *, bar_index, z_bar, z_segment, cache: Cache | None = None, slot_index=None,
                plan=None, memory=None):
        """``memory`` (B, NB, S, D): what the memory reads attend to in each bar (``MidiStructModel.decoder_memory``),
        needed when the decoder has them."""
        if self.reads is not None and memory is None:
            raise ValueError("this decoder reads memory (decoder_memory > 0): pass MidiStructModel.decoder_memory(...)")
        T = input_ids.shape[1]
        seen = cache.get_seq_length() if cache is not None else 0
        start = self.cached_tokens(cache, z_bar=z_bar, z_segment=z_segment)
        x = self.embed(input_ids, bar_index=bar_index, start=start)
        x = self.conditioning(x, bar_index=bar_index, slot_index=slot_index, z_bar=z_bar, z_segment=z_segment,
                              with_prefix=seen == 0, plan=plan)
        x = self.drop(x)  # (B, P + T, D) on the first step, else (B, T, D)
        # Nothing cached: plain causal attention. Otherwise the new queries see all the cache and their past.
        mask = None if seen == 0 else causal_mask(x.shape[1], seen + x.shape[1], x.device)  # (T, S)
        read_bars = bar_index if z_bar is not None else torch.zeros_like(bar_index)
        kvs = [None] * len(self.blocks)
        if self.reads is not None and cache is not None:  # the memory's keys and values, once per decoding
            kvs = per_decoding(cache, "midistruct_memory_kv", lambda: [read.keys_values(memory) for read in self.reads])
        for i, block in enumerate(self.blocks):
            x = block(x, attn_mask=mask, is_causal=seen == 0, cache=cache)
            if self.reads is not None:  # never with a prefix (configuration), so x is (B, T, D) like bar_index
                x = x + self.drop(self.reads[i](x, memory=memory, bar_index=read_bars, keys_values=kvs[i]))
        return self.norm(x[:, -T:])  # (B, T, D): the prefix positions predict nothing


# --------------------------------------------------------------------------- sequence head (auxiliary)


def slot_targets(labels, bar_ids, *, n_bars: int, max_slots: int) -> torch.Tensor:
    """Each bar's labelled tokens in order, (B, NB, K): ``[b, n, k]`` is the k-th token of bar n of row b,
    -100 past the bar's end. K = the longest bar's token count, at most ``max_slots`` (later tokens dropped)."""
    B = labels.shape[0]
    slot = bar_slots(bar_ids)  # (B, T): index within its bar
    real = labels != -100
    n_slots = min(int(slot[real].max()) + 1 if real.any() else 1, max_slots)
    keep = real & (slot < n_slots)
    spare = n_bars * n_slots  # one scratch cell for the tokens left out
    where = torch.where(keep, bar_ids.clamp(max=n_bars - 1) * n_slots + slot, spare)  # (B, T)
    targets = labels.new_full((B, spare + 1), -100).scatter_(1, where, labels.masked_fill(~keep, -100))
    return targets[:, :spare].view(B, n_bars, n_slots)


class CodeReader(MemoryAttention):
    """Reads a code by attention (``sequence_head_memory`` = M > 0, issue 14): [bar code ; segment code] becomes M
    memory vectors, and each query (one per slot) attends to them, so slot k can pick its part of the code.
    Added to the query instead, the code is the same vector at every slot and only the layers after it can
    untangle which part belongs where; on held-out Nottingham this reader with "flat" pooling took the codes from
    0.42 to 0.92 of the pitch slots in 1,000 steps (docs/RESULTS.md)."""

    def __init__(self, config: MidiStructConfig, in_dim: int):
        super().__init__(config)
        self.n_memory = config.sequence_head_memory
        self.memory = nn.Linear(in_dim, self.n_memory * config.d_model)

    def forward(self, codes, queries):
        """Read-outs (N, K, D) for codes (N, Zb + Zs) and queries (N, K, D)."""
        N, K, D = queries.shape
        memory = self.memory(codes).view(N, self.n_memory, D)  # (N, M, D)
        return self.attend(queries, self.keys_values(memory))


class SequenceHead(nn.Module):
    """Non-autoregressive: every token of a bar, slot by slot, from [bar code ; segment code] alone (issue 14).

    Slot k's input is a learned query for k plus the code: projected and added (``sequence_head_memory`` 0), or
    read by attention (:class:`CodeReader`, then a feed-forward layer). ``sequence_head_layers`` blocks let the
    slots agree (causally over the queries, so slot k's prediction does not depend on how many slots the batch
    needs; no token is fed back), a linear layer names each slot's token. Unlike the bag of words it scores
    order: the codes must say which pitch comes first, not only which pitches occur. Its hidden states are the
    "plan" the decoder reads with ``conditioning="plan"``."""

    def __init__(self, config: MidiStructConfig, *, in_dim: int | None = None):
        """``in_dim``: the width of the codes it reads (default: [bar code ; segment code])."""
        super().__init__()
        in_dim = config.latent_dim_segment + config.bar_code_dim if in_dim is None else in_dim
        self.reader = CodeReader(config, in_dim) if config.sequence_head_memory > 0 else None
        if self.reader is None:
            self.code_proj = nn.Linear(in_dim, config.d_model)
        else:
            self.read_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
            self.read_ffn = FeedForward(config)
        self.slots = nn.Embedding(config.sequence_slots, config.d_model)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.sequence_head_layers))
        self.norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.out = nn.Linear(config.d_model, config.vocab_size)

    def hidden(self, codes, *, n_slots: int):
        """The slots' final states (B, NB, K, D) for codes (B, NB, Zb + Zs) and K = ``n_slots``."""
        B, NB, _ = codes.shape
        queries = self.slots.weight[:n_slots]  # (K, D)
        if self.reader is None:
            x = self.code_proj(codes.to(self.code_proj.weight.dtype))[:, :, None, :] + queries  # (B, NB, K, D)
            x = x.flatten(0, 1)  # (B * NB, K, D)
        else:
            x = queries.expand(B * NB, n_slots, -1)  # (B * NB, K, D)
            x = x + self.reader(codes.flatten(0, 1).to(queries.dtype), x)
            x = x + self.read_ffn(self.read_norm(x))
        for block in self.blocks:
            x = block(x, is_causal=True)
        return self.norm(x).view(B, NB, n_slots, -1)  # (B, NB, K, D)

    def forward(self, codes, *, n_slots: int):
        """Logits (B, NB, K, V) for codes (B, NB, Zb + Zs) and K = ``n_slots``."""
        return self.out(self.hidden(codes, n_slots=n_slots))


# --------------------------------------------------------------------------- outputs


@dataclass
class MidiStructOutput(ModelOutput):
    """Output of ``MidiStructModel.forward``. Losses are scalars, batch means.

    loss: ``recon_loss + beta * kl_loss + config.bag_of_words * bow_loss + config.sequence_head * seq_loss
        + config.section_head * section_loss + tag_adversary_loss``
        (when ``labels`` are given).
    recon_loss: token negative log-likelihood summed over a segment (nats per segment).
    token_nll: the same per real token (nats per token), for perplexity-style logging.
    kl, kl_bar, kl_segment: raw KL to the prior in nats per segment (all bars summed; 0 in "ae" mode).
    kl_loss: the KL after free bits, the term ``beta`` multiplies.
    bow_loss: with ``config.bag_of_words``, the NLL of each token under its bar's bag-of-words prediction from
        the codes alone, summed over a segment (nats per segment).
    seq_loss: with ``config.sequence_head``, the sequence head's NLL of each bar's tokens in order from the codes
        alone, summed over a segment (nats per segment).
    section_loss: with ``config.section_head`` and ``section_ids``, the section head's cross-entropy of each
        labelled bar's section from its content code, summed over a segment.
    tag_adversary_loss: with ``config.tag_adversary`` and ``tag_ids``, the adversary's cross-entropy of the given
        tags from the codes, summed over a window's tags (added to ``loss`` as it is; the encoder gets its gradient
        reversed, times ``tag_adversary``); ``tag_adversary_right`` (G,): the given tags it named right, per tag.
    logits: (B, T, V).
    cache: the decoder's cache when ``use_cache``, under the name ``generate`` reads back after each step
        (transformers >= 5.24; earlier versions called it ``past_key_values``).
    z_*, mu_*, logvar_*, bar_mask: as in ``Latents``; feed ``mu_bar[bar_mask]`` / ``mu_segment`` to ``latent_usage``.
    """

    loss: torch.Tensor | None = None
    recon_loss: torch.Tensor | None = None
    token_nll: torch.Tensor | None = None
    kl: torch.Tensor | None = None
    kl_bar: torch.Tensor | None = None
    kl_segment: torch.Tensor | None = None
    kl_loss: torch.Tensor | None = None
    bow_loss: torch.Tensor | None = None
    seq_loss: torch.Tensor | None = None
    section_loss: torch.Tensor | None = None
    tag_adversary_loss: torch.Tensor | None = None
    tag_adversary_right: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    cache: Cache | None = None
    z_bar: torch.Tensor | None = None
    z_segment: torch.Tensor | None = None
    mu_bar: torch.Tensor | None = None
    logvar_bar: torch.Tensor | None = None
    mu_segment: torch.Tensor | None = None
    logvar_segment: torch.Tensor | None = None
    bar_mask: torch.Tensor | None = None


# --------------------------------------------------------------------------- the model


class MidiStructPreTrainedModel(PreTrainedModel):
    config_class = MidiStructConfig
    main_input_name = "input_ids"
    _supports_sdpa = True

    def _init_weights(self, module):
        """transformers' defaults (normal(0, initializer_range), zero biases, unit norms), with the residual
        projections scaled by 1/sqrt(2 * layers) as in GPT-2 and the "add" code projection by 1/sqrt(fan_in)."""
        super()._init_weights(module)
        layers = self.config.encoder_layers + self.config.decoder_layers
        std = self.config.initializer_range / math.sqrt(2 * layers)
        if isinstance(module, SelfAttention):
            init.normal_(module.out.weight, mean=0.0, std=std)
        elif isinstance(module, FeedForward):
            init.normal_(module.down.weight, mean=0.0, std=std)
        elif isinstance(module, nn.Linear) and getattr(module, "zero_init", False):
            init.zeros_(module.weight)  # CodeAttention's output: a grown decoder starts as the checkpoint's
        elif isinstance(module, nn.Linear) and getattr(module, "is_code_projection", False):
            # Scaled so that the added code starts as large as a token embedding (std initializer_range),
            # not sqrt(Zb + Zs) times larger: a sampled, noisy code must not drown the tokens it is added to.
            init.normal_(module.weight, mean=0.0, std=self.config.initializer_range / math.sqrt(module.in_features))


class MidiStructModel(MidiStructPreTrainedModel, GenerationMixin):
    """Encoder -> bar/segment latents -> causal decoder, trained as a (beta-)VAE or a plain autoencoder.

    Training: ``model(**batch, beta=beta)`` returns a ``MidiStructOutput`` with the loss.
    Encoding: ``latents = model.encode(input_ids, attention_mask, bar_ids)``.
    Decoding: ``model.generate(input_ids=bos, z_bar=..., z_segment=..., max_new_tokens=...)``; the latents
    travel as the two keyword tensors ``z_bar`` (B, NB, Zb) and ``z_segment`` (B, Zs) (``**latents.codes()``),
    so ``generate`` expands them for beams / several return sequences like any batch tensor.
    """

    _tied_weights_keys = {"lm_head.weight": "decoder.embed_tokens.weight"}

    def __init__(self, config: MidiStructConfig):
        super().__init__(config)
        plain_lm = config.latent_mode == "none"
        self.encoder = None if plain_lm else Encoder(config)
        self.bottleneck = None if plain_lm else Bottleneck(config)
        self.arrangement = self.performance = None  # the functional blocks beside the content (issue 19)
        if config.arrangement_dim:
            self.arrangement = BlockEncoder(config, layers=config.arrangement_layers, dim=config.arrangement_dim)
        if config.performance_dim:
            self.performance = BlockEncoder(config, layers=config.performance_layers, dim=config.performance_dim)
        self.decoder = Decoder(config)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.bow_head = None  # the bag-of-words head: [bar code ; segment code] -> token logits
        if config.bag_of_words > 0 and not plain_lm:
            in_dim = config.latent_dim_segment + config.bar_code_dim
            self.bow_head = nn.Linear(in_dim, config.vocab_size)
        self.view_heads = None  # sequence_views: the sequence head names the content view, each block's head its own
        if config.sequence_views:
            self.sequence_head = SequenceHead(config, in_dim=config.latent_dim_bar + config.latent_dim_segment)
            self.view_heads = nn.ModuleDict({name: SequenceHead(config, in_dim=part.stop - part.start)
                                             for name, part in list(config.block_slices().items())[1:]})
        else:
            self.sequence_head = SequenceHead(config) if config.sequence_head > 0 and not plain_lm else None
        # section supervision (issue 18): each bar's content code names its section
        self.section_head = (nn.Linear(config.latent_dim_bar, config.section_classes)
                             if config.section_head > 0 and not plain_lm else None)
        # tags the decoder reads beside the codes (issue 18, item 2)
        self.tag_codes = TagCodes(config) if config.decoder_tags else None
        self.tag_adversary = TagAdversary(config) if config.tag_adversary > 0 else None
        self.post_init()
        self._default_init_place_parts()

    def _default_init_place_parts(self):
        """Issue 14: the parts that write and read the codes by place (``FlatPooling``; a sequence head with a
        ``CodeReader``) start at PyTorch's default scales (slot queries N(0, 1), linear layers Kaiming-uniform), as
        in the runs that found them (docs/scripts/issue14_code_pitch.py). At ``initializer_range`` 0.02 every
        slot's query is nearly the same vector, every slot reads the same mixture of the code, and the codes
        learnt pitch no faster than with an added code (0.29 of the pitch slots after 1,250 steps)."""
        parts = [getattr(self.bottleneck, "bar_pool", None) if self.bottleneck is not None else None]
        parts.append(self.sequence_head if self.sequence_head is not None and self.sequence_head.reader else None)
        parts.extend(head for head in (self.view_heads or {}).values() if head.reader)
        for part in parts:
            if isinstance(part, (FlatPooling, SequenceHead)):
                for module in part.modules():
                    if module is not part and hasattr(module, "reset_parameters"):
                        module.reset_parameters()

    @property
    def bar_token_ids(self) -> list[int]:
        """The ids that open a bar (see ``count_bars``): ``config.bar_token_ids``, else ``[config.bar_token_id]``."""
        return self.config.bar_token_ids or [self.config.bar_token_id]

    def get_input_embeddings(self):
        return self.decoder.embed_tokens

    def get_output_embeddings(self):
        return self.lm_head

    def encode(self, input_ids, attention_mask=None, bar_ids=None, *, sample: bool | None = None,
               **views) -> Latents:
        """Latents of a batch of segments (B, T). ``attention_mask`` defaults to ``input_ids != pad``, ``bar_ids``
        to counting Bar tokens. ``sample`` (default: ``self.training``) draws z from the posterior, else z = mu.

        With functional blocks (``config.views``) the encoders read the window's views instead of ``input_ids``:
        ``content_ids``, ``arrangement_ids`` (and ``performance_ids``), each with ``<view>_mask`` and
        ``<view>_bar_ids`` (B, T'), as ``window_batch(..., **config.view_options())`` and the training batches give them
        (``midistruct.tokens.views``); ``z_bar`` is then ``[content ; arrangement ; performance]`` per bar
        (``config.block_slices()``), and ``mu_bar`` / ``logvar_bar`` describe the content part."""
        unknown = sorted(set(views) - set(self.VIEW_KEYS))
        if unknown:
            raise TypeError(f"encode() got unexpected keyword arguments {unknown}")
        blocks = self.config.views
        if blocks:
            missing = [f"{v}_ids" for v in blocks if views.get(f"{v}_ids") is None]
            if missing:
                raise ValueError(f"this model has functional blocks: pass the views {', '.join(missing)} (with their "
                                 "masks and bar ids), e.g. from window_batch(windows, vocab, **config.view_options())")
            input_ids, attention_mask, bar_ids = (views.get(f"content_{k}") for k in ("ids", "mask", "bar_ids"))
        if attention_mask is None:
            attention_mask = (input_ids != self.config.pad_token_id).long()
        if bar_ids is None:
            bar_ids = count_bars(input_ids, bar_token_ids=self.bar_token_ids)
        if int(bar_ids.max()) >= self.config.max_bars:
            raise ValueError(f"segment has bar index {int(bar_ids.max())}, max_bars is {self.config.max_bars}")
        if self.encoder is None:  # latent_mode "none": zero codes, which the decoder ignores
            return self._zero_latents(attention_mask, bar_ids)
        states = self.encoder(input_ids, attention_mask=attention_mask, bar_ids=bar_ids)  # (B, T, D)
        sample = self.training if sample is None else sample
        latents = self.bottleneck(states, attention_mask=attention_mask, bar_ids=bar_ids, sample=sample)
        for name in blocks[1:]:
            ids, mask, bars = (views.get(f"{name}_{k}") for k in ("ids", "mask", "bar_ids"))
            mask = (ids != self.config.pad_token_id).long() if mask is None else mask
            bars = count_bars(ids, bar_token_ids=self.bar_token_ids) if bars is None else bars
            code = getattr(self, name)(ids, attention_mask=mask, bar_ids=bars, n_bars=latents.z_bar.shape[1])
            latents.z_bar = torch.cat([latents.z_bar, code.to(latents.z_bar.dtype)], dim=-1)  # (B, NB, ...)
        return latents

    # the keyword arguments of encode (and forward) that carry a window's views
    VIEW_KEYS = tuple(f"{view}_{k}" for view in ("content", "arrangement", "performance")
                      for k in ("ids", "mask", "bar_ids"))

    def encode_batch(self, batch: dict, *, sample: bool | None = None) -> Latents:
        """``encode`` of a collated batch (``window_batch`` / ``collate``): its input ids, mask, bar ids and, when
        it has them, the views an arrangement block reads."""
        views = {k: batch[k] for k in self.VIEW_KEYS if k in batch}
        return self.encode(batch["input_ids"], batch["attention_mask"], batch["bar_ids"], sample=sample, **views)

    def _zero_latents(self, attention_mask, bar_ids) -> Latents:
        B, cfg = attention_mask.shape[0], self.config
        z_segment = attention_mask.new_zeros((B, cfg.latent_dim_segment), dtype=torch.float32)
        latents = Latents(z_segment=z_segment, mu_segment=z_segment)
        if cfg.bar_latents:
            n_bars = int((bar_ids * attention_mask).max()) + 1
            latents.z_bar = latents.mu_bar = z_segment.new_zeros((B, n_bars, cfg.latent_dim_bar))
            latents.bar_mask = torch.zeros((B, n_bars), dtype=torch.bool, device=bar_ids.device)
            latents.bar_mask.scatter_(1, (bar_ids * attention_mask), True)
        return latents

    def decoder_forward(
        self,
        decoder_input_ids,
        *,
        z_bar=None,
        z_segment=None,
        decoder_bar_ids=None,
        decoder_slot_ids=None,
        tag_ids=None,
        cache: Cache | None = None,
        use_cache: bool = False,
    ) -> MidiStructOutput:
        """Decoder logits (B, T, V) for decoder inputs (B, T) that start with BOS (or continue ``cache``).

        ``decoder_bar_ids`` (and ``decoder_slot_ids``) default to counting Bar tokens in ``decoder_input_ids``
        (``count_bars``, ``count_slots``); with a non-empty cache they must be given (the count depends on the
        tokens already in the cache). ``tag_ids`` (B, G): the decoder tags' value indices (``config.tag_index``;
        None: none given), for a model with ``decoder_tags`` (:meth:`tagged_segment`).
        """
        self._check_codes(z_bar, z_segment)
        z_segment = self.tagged_segment(z_segment, tag_ids)
        if cache is None and use_cache:
            cache = DynamicCache()
        if decoder_bar_ids is None or decoder_slot_ids is None:
            if cache is not None and cache.get_seq_length() > 0:
                raise ValueError("decoder_bar_ids and decoder_slot_ids are required when continuing from a cache")
            decoder_bar_ids = count_bars(decoder_input_ids, bar_token_ids=self.bar_token_ids)
            decoder_slot_ids = count_slots(decoder_input_ids, bar_token_ids=self.bar_token_ids)
        hidden = self.decoder(
            decoder_input_ids, bar_index=decoder_bar_ids, slot_index=decoder_slot_ids, z_bar=z_bar,
            z_segment=z_segment, cache=cache, plan=self._plan_for(z_bar, z_segment, decoder_slot_ids, cache),
            memory=self._memory_for(z_bar, z_segment, cache),
        )  # (B, T, D)
        return MidiStructOutput(logits=self.lm_head(hidden), cache=cache if use_cache else None)

    def tagged_segment(self, z_segment, tag_ids):
        """The segment code the decoder reads: ``z_segment`` (B, Zs) plus the tags' vectors (:class:`TagCodes`) for a
        model with ``decoder_tags``, every tag "not given" where ``tag_ids`` (B, G) is None; as it is otherwise
        (``tag_ids`` must then be None)."""
        if self.tag_codes is None:
            if tag_ids is not None:
                raise ValueError("this model reads no decoder tags (config.decoder_tags is empty): pass tag_ids=None")
            return z_segment
        if tag_ids is None:
            tag_ids = torch.zeros((z_segment.shape[0], len(self.tag_codes.tables)), dtype=torch.long,
                                  device=z_segment.device)
        return z_segment + self.tag_codes(tag_ids).to(z_segment.dtype)  # (B, Zs)

    def tag_dropout(self, tag_ids):
        """Each tag of each window read as "not given" (0) with probability ``config.tag_dropout`` while training."""
        hide = torch.rand(tag_ids.shape, device=tag_ids.device) < self.config.tag_dropout
        return tag_ids.masked_fill(hide, 0)

    def _plan_for(self, z_bar, z_segment, slot_ids, cache: Cache | None):
        """The plan for one decoder call. While decoding token by token (a cache), the codes are fixed, so the
        plan is computed once for all ``sequence_slots`` and kept on the cache: the sequence head is causal over
        its slots, so slot k's state does not depend on how many slots are computed. Recomputing it at every
        token made a 16-bar window take minutes to decode."""
        if cache is None or self.config.conditioning != "plan" or self.sequence_head is None:
            return self.plan(z_bar, z_segment, slot_ids=slot_ids)
        full = slot_ids.new_full((1, 1), self.config.sequence_slots - 1)
        return per_decoding(cache, "midistruct_plan", lambda: self.plan(z_bar, z_segment, slot_ids=full))

    def _memory_for(self, z_bar, z_segment, cache: Cache | None):
        """:meth:`decoder_memory` for one decoder call, once per decoding (:func:`per_decoding`; the view heads are
        causal over their slots, as for the plan)."""
        if self.decoder.reads is None:
            return None
        return per_decoding(cache, "midistruct_memory", lambda: self.decoder_memory(z_bar, z_segment))

    def decoder_memory(self, z_bar, z_segment):
        """What the decoder's memory reads attend to in each bar (B, NB, S, D): ``decoder_memory`` vectors made
        from the bar's codes, then with ``sequence_views`` the states of each view's sequence head at all
        :meth:`view_memory_slots` slots (the content view's, then each block's). None without memory reads."""
        if self.decoder.reads is None:
            return None
        memory = self.decoder.code_memory(z_bar, z_segment)  # (B, NB, M, D)
        if self.view_heads is None:
            return memory
        codes, slots = self.view_codes(z_bar, z_segment), self.view_memory_slots()
        plans = [head.hidden(codes[name], n_slots=slots[name])
                 for name, head in self.view_sequence_heads().items()]  # each (B, NB, K_view, D)
        return torch.cat([memory, *(p.to(memory.dtype) for p in plans)], dim=2)  # (B, NB, M + views * K, D)

    def view_memory_slots(self) -> dict[str, int]:
        """How many of each view head's slots join the decoder's memory: ``sequence_slots``, at most
        ``pool_slots`` where the view's encoder pools "flat" (``bar_pooling`` for the content, ``block_pooling``
        for the blocks), which writes no later token into the codes in order."""
        cfg = self.config
        flat = {name: (cfg.bar_pooling if name == "content" else cfg.block_pooling) == "flat"
                for name in self.view_sequence_heads()}
        return {name: min(cfg.sequence_slots, cfg.pool_slots) if f else cfg.sequence_slots for name, f in flat.items()}

    def view_sequence_heads(self) -> dict[str, "SequenceHead"]:
        """``sequence_views``: each view's sequence head, the content view's first."""
        return {"content": self.sequence_head, **(self.view_heads or {})}

    def view_codes(self, z_bar, z_segment) -> dict[str, torch.Tensor]:
        """``sequence_views``: what each view's head reads per bar: [content code ; segment code] (B, NB, Zb + Zs),
        and each block's own code (B, NB, width)."""
        slices = self.config.block_slices()
        segment = z_segment[:, None, :].expand(-1, z_bar.shape[1], -1)
        codes = {"content": torch.cat([z_bar[..., slices["content"]], segment], dim=-1)}
        codes.update({name: z_bar[..., slices[name]] for name in self.view_heads or {}})
        return codes

    def plan(self, z_bar, z_segment, *, slot_ids):
        """``conditioning="plan"``: the sequence head's states (B, NB, K, D) for the codes, K covering the
        slots in ``slot_ids`` (B, T); None for every other conditioning."""
        if self.config.conditioning != "plan" or self.sequence_head is None:
            return None
        codes = bar_code_rows(z_bar, z_segment)  # (B, NB, Zb + Zs)
        n_slots = min(int(slot_ids.max()) + 1, self.config.sequence_slots)
        return self.sequence_head.hidden(codes, n_slots=n_slots)

    def _check_codes(self, z_bar, z_segment):
        if z_segment is None:
            raise ValueError("decoding needs z_segment (and z_bar unless bar_latents=False); see Latents.codes()")
        if self.config.bar_latents and z_bar is None:
            raise ValueError("this model has bar latents: pass z_bar (B, NB, Zb) along with z_segment")
        if z_bar is not None and z_bar.shape[-1] != self.config.bar_code_dim:
            raise ValueError(f"bar codes are {z_bar.shape[-1]} wide; this model reads {self.config.bar_code_dim} "
                             f"({self.config.block_slices()})")

    def word_dropout(self, decoder_input_ids):
        """Replace decoder inputs by MASK with probability ``config.word_dropout`` (never BOS or PAD)."""
        special = (decoder_input_ids == self.config.bos_token_id) | (decoder_input_ids == self.config.pad_token_id)
        coin = torch.rand(decoder_input_ids.shape, device=decoder_input_ids.device)
        drop = (coin < self.config.word_dropout) & ~special
        return decoder_input_ids.masked_fill(drop, self.config.mask_token_id)

    def kl_terms(self, latents: Latents):
        """Raw KL per segment (bars summed, segment) and the free-bits penalty, each (B,), in nats.

        Free bits as in MusicVAE, per example, per latent group: each bar code and the segment code may hold
        ``free_bits`` bits before KL is penalised (``max(KL_group - free_bits * ln 2, 0)``)."""
        zeros = latents.z_segment.new_zeros(latents.z_segment.shape[0])
        if latents.logvar_segment is None:  # "ae": deterministic codes
            return zeros, zeros, zeros
        free = self.config.free_bits * math.log(2.0)
        kl_segment = gaussian_kl(latents.mu_segment, latents.logvar_segment)  # (B,)
        penalty = (kl_segment - free).clamp(min=0.0)
        kl_bar = zeros
        if latents.mu_bar is not None:
            per_bar = gaussian_kl(latents.mu_bar, latents.logvar_bar) * latents.bar_mask  # (B, NB)
            kl_bar = per_bar.sum(-1)
            penalty = penalty + ((per_bar - free).clamp(min=0.0) * latents.bar_mask).sum(-1)
        return kl_bar, kl_segment, penalty

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        bar_ids=None,
        labels=None,
        *,
        decoder_input_ids=None,
        decoder_bar_ids=None,
        decoder_slot_ids=None,
        z_bar=None,
        z_segment=None,
        content_ids=None,
        content_mask=None,
        content_bar_ids=None,
        arrangement_ids=None,
        arrangement_mask=None,
        arrangement_bar_ids=None,
        performance_ids=None,
        performance_mask=None,
        performance_bar_ids=None,
        section_ids=None,
        tag_ids=None,
        beta: float = 1.0,
        sample: bool | None = None,
        cache: Cache | None = None,
        use_cache: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> MidiStructOutput:
        """Autoencode ``input_ids`` (B, T), or decode given latents.

        With ``z_segment`` (and ``z_bar``) given, the encoder is skipped and ``decoder_input_ids`` are decoded
        (the generation path). Otherwise ``input_ids`` are encoded and the decoder reads ``shift_right(input_ids)``
        (unless ``decoder_input_ids`` are given). ``labels`` (B, T) -100 at padding -> ``loss``; ``beta`` weighs
        the KL (the trainer anneals it); ``sample`` as in ``encode``; ``cache`` continues a decoder cache.
        ``content_*`` / ``arrangement_*`` / ``performance_*``: the views a model with blocks reads (see ``encode``).
        ``section_ids`` (B, NB): each bar's section class (-100 unlabelled), for ``config.section_head``'s loss.
        ``tag_ids`` (B, G): the window's decoder tags (``config.decoder_tags``; 0 not given), hidden at random while
        training (``config.tag_dropout``).
        Any other keyword is a ``TypeError``, except transformers' generic ``output_attentions``,
        ``output_hidden_states``, ``cache_position`` and ``position_ids``, which are accepted and ignored.
        """
        # transformers' model-agnostic keywords (generate keeps them in its model_kwargs; our
        # prepare_inputs_for_generation does not pass them on, but another caller may)
        ignored = {"output_attentions", "output_hidden_states", "cache_position", "position_ids"}
        unknown = sorted(set(kwargs) - ignored)
        if unknown:
            raise TypeError(f"forward() got unexpected keyword arguments {unknown}")
        latents, views = None, {}
        if z_segment is None and input_ids is None:
            raise ValueError("pass input_ids to autoencode, or z_segment (and z_bar) to decode; see Latents.codes()")
        if z_segment is None:
            views = {"content_ids": content_ids, "content_mask": content_mask, "content_bar_ids": content_bar_ids,
                     "arrangement_ids": arrangement_ids, "arrangement_mask": arrangement_mask,
                     "arrangement_bar_ids": arrangement_bar_ids, "performance_ids": performance_ids,
                     "performance_mask": performance_mask, "performance_bar_ids": performance_bar_ids}
            views = {k: v for k, v in views.items() if v is not None}
            latents = self.encode(input_ids, attention_mask, bar_ids, sample=sample, **views)
            z_bar, z_segment = latents.z_bar, latents.z_segment
        if decoder_input_ids is None:
            decoder_input_ids = shift_right(input_ids, bos_token_id=self.config.bos_token_id)
        if decoder_bar_ids is None and (cache is None or cache.get_seq_length() == 0):
            # counted before word dropout, which may hide Bar tokens
            decoder_bar_ids = count_bars(decoder_input_ids, bar_token_ids=self.bar_token_ids)
        if decoder_slot_ids is None and (cache is None or cache.get_seq_length() == 0):
            decoder_slot_ids = count_slots(decoder_input_ids, bar_token_ids=self.bar_token_ids)
        if self.training and self.config.word_dropout > 0:
            decoder_input_ids = self.word_dropout(decoder_input_ids)
        true_tags = tag_ids  # the adversary reads every given tag; the decoder only those training does not hide
        if self.training and tag_ids is not None and self.config.tag_dropout > 0:
            tag_ids = self.tag_dropout(tag_ids)
        out = self.decoder_forward(
            decoder_input_ids, z_bar=z_bar, z_segment=z_segment, decoder_bar_ids=decoder_bar_ids,
            decoder_slot_ids=decoder_slot_ids, tag_ids=tag_ids, cache=cache, use_cache=bool(use_cache),
        )
        terms = {} if latents is None else self.latent_terms(latents, logits=out.logits, labels=labels, beta=beta,
                                                             bar_ids=bar_ids, views=views, section_ids=section_ids,
                                                             tag_ids=true_tags)
        return MidiStructOutput(logits=out.logits, cache=out.cache, **terms)

    @staticmethod
    def bar_codes(latents: Latents, bar_ids):
        """[bar code ; segment code] per bar (B, NB, Zb + Zs) and ``bar_ids`` (B, T) clamped to them; without bar
        latents the segment code alone, as one bar (B, 1, Zs), and every token in bar 0."""
        codes = bar_code_rows(latents.z_bar, latents.z_segment)  # (B, NB, Zb + Zs)
        if latents.z_bar is None:
            return codes, torch.zeros_like(bar_ids)
        return codes, bar_ids.clamp(max=codes.shape[1] - 1)

    def bag_of_words_nll(self, latents: Latents, *, labels, bar_ids):
        """Summed NLL (B,) of each labelled token under a softmax over the vocabulary predicted from the
        codes of its bar alone: the bar's tokens as a multiset, order ignored (``config.bag_of_words``)."""
        codes, bar_ids = self.bar_codes(latents, bar_ids)  # (B, NB, Zb+Zs), (B, T)
        logp = F.log_softmax(self.bow_head(codes.to(self.bow_head.weight.dtype)).float(), dim=-1)  # (B, NB, V)
        real = labels != -100
        per_token = logp[torch.arange(labels.shape[0], device=labels.device)[:, None], bar_ids, labels.clamp(min=0)]
        return -(per_token * real).sum(-1)  # (B,)

    def sequence_nll(self, latents: Latents, *, labels, bar_ids):
        """Summed NLL (B,) of each bar's tokens, slot by slot, under the sequence head (``config.sequence_head``)."""
        codes, bar_ids = self.bar_codes(latents, bar_ids)  # (B, NB, Zb+Zs), (B, T)
        return self._slot_nll(self.sequence_head, codes, labels=labels, bar_ids=bar_ids)

    def view_sequence_nll(self, latents: Latents, views: dict):
        """``sequence_views``: summed NLL (B,) of each view's tokens, slot by slot in its bars, under its own head
        (:meth:`view_codes`); ``views`` holds ``<view>_ids`` (B, T') and, optionally, ``_mask`` and ``_bar_ids``."""
        codes = self.view_codes(latents.z_bar, latents.z_segment)
        total = 0.0
        for name, head in self.view_sequence_heads().items():
            ids = views.get(f"{name}_ids")
            if ids is None:
                raise ValueError(f"sequence_views scores each view: pass {name}_ids (window_batch(..., "
                                 "**config.view_options()))")
            mask, bars = views.get(f"{name}_mask"), views.get(f"{name}_bar_ids")
            mask = ids != self.config.pad_token_id if mask is None else mask.bool()
            bars = count_bars(ids, bar_token_ids=self.bar_token_ids) if bars is None else bars
            bars = bars.clamp(max=codes[name].shape[1] - 1)
            total = total + self._slot_nll(head, codes[name], labels=ids.masked_fill(~mask, -100), bar_ids=bars)
        return total  # (B,)

    def _slot_nll(self, head, codes, *, labels, bar_ids):
        """Summed NLL (B,) of ``labels`` (B, T) slot by slot in their bars ``bar_ids`` under ``head`` reading
        ``codes`` (B, NB, in)."""
        targets = slot_targets(labels, bar_ids, n_bars=codes.shape[1], max_slots=self.config.sequence_slots)
        logits = head(codes, n_slots=targets.shape[-1]).float()  # (B, NB, K, V)
        nll = F.cross_entropy(logits.flatten(0, 2), targets.flatten(), ignore_index=-100, reduction="none")
        return nll.view(targets.shape).sum((1, 2))  # (B,)

    def latent_terms(self, latents: Latents, *, logits, labels, beta: float, bar_ids=None,
                     views: dict | None = None, section_ids=None, tag_ids=None) -> dict[str, torch.Tensor]:
        """The latent fields of ``MidiStructOutput``, its KL terms and, with ``labels``, its losses
        (``bar_ids`` (B, T), the bar of each label, for the bag-of-words and sequence losses; ``views``, the
        window's views, for the sequence loss of ``sequence_views``; ``section_ids`` (B, NB), for the section
        head's)."""
        kl_bar, kl_segment, penalty = self.kl_terms(latents)
        terms = {name: getattr(latents, name) for name in Latents.__dataclass_fields__}
        terms["kl"] = (kl_bar + kl_segment).mean()
        terms.update(kl_bar=kl_bar.mean(), kl_segment=kl_segment.mean(), kl_loss=penalty.mean())
        if labels is None:
            return terms
        nll = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100, reduction="sum")
        terms["recon_loss"] = nll / labels.shape[0]
        terms["token_nll"] = nll / (labels != -100).sum().clamp(min=1)
        terms["loss"] = terms["recon_loss"] + beta * terms["kl_loss"]
        if bar_ids is None:
            bar_ids = count_bars(labels.clamp(min=0), bar_token_ids=self.bar_token_ids)  # as encode does
        if self.bow_head is not None:
            terms["bow_loss"] = self.bag_of_words_nll(latents, labels=labels, bar_ids=bar_ids).mean()
            terms["loss"] = terms["loss"] + self.config.bag_of_words * terms["bow_loss"]
        if self.sequence_head is not None:
            if self.view_heads is not None:
                terms["seq_loss"] = self.view_sequence_nll(latents, views or {}).mean()
            else:
                terms["seq_loss"] = self.sequence_nll(latents, labels=labels, bar_ids=bar_ids).mean()
            terms["loss"] = terms["loss"] + self.config.sequence_head * terms["seq_loss"]
        if self.section_head is not None and section_ids is not None:
            terms["section_loss"] = self.section_nll(latents, section_ids).mean()
            terms["loss"] = terms["loss"] + self.config.section_head * terms["section_loss"]
        if self.tag_adversary is not None and tag_ids is not None:
            nll, right = self.tag_adversary(self.window_codes(latents), tag_ids)
            terms["tag_adversary_loss"] = nll.mean()
            terms["tag_adversary_right"] = right
            # the heads learn at full rate; the reversed gradient (times tag_adversary) teaches the encoder to hide
            terms["loss"] = terms["loss"] + terms["tag_adversary_loss"]
        return terms

    @staticmethod
    def window_codes(latents: Latents) -> torch.Tensor:
        """[segment code ; mean of the window's bar codes] (B, Zs + Zb): what the tag adversary reads."""
        if latents.z_bar is None:
            return latents.z_segment
        mask = latents.bar_mask.unsqueeze(-1).to(latents.z_bar.dtype)  # (B, NB, 1)
        mean = (latents.z_bar * mask).sum(1) / mask.sum(1).clamp(min=1)  # (B, Zb)
        return torch.cat([latents.z_segment, mean.to(latents.z_segment.dtype)], dim=-1)

    def section_logits(self, z_bar) -> torch.Tensor:
        """(B, NB, section_classes) logits of each bar's section from its content code (``config.section_head``)."""
        content = z_bar[..., self.config.block_slices()["content"]]  # (B, NB, Zb)
        return self.section_head(content.to(self.section_head.weight.dtype)).float()

    def section_nll(self, latents: Latents, section_ids) -> torch.Tensor:
        """Summed cross-entropy (B,) of each labelled bar's section (``section_ids`` (B, NB'), -100 unlabelled)
        from the bar's content code, under ``section_head``; bars past the codes' count are left out."""
        n = min(latents.z_bar.shape[1], section_ids.shape[1])
        logits = self.section_logits(latents.z_bar[:, :n])  # (B, n, C)
        per_bar = F.cross_entropy(logits.transpose(1, 2), section_ids[:, :n], ignore_index=-100, reduction="none")
        return per_bar.sum(-1)  # (B,)

    def prepare_inputs_for_generation(
        self, input_ids, *, cache=None, z_bar=None, z_segment=None, tag_ids=None, use_cache=None, **kwargs
    ):
        """``generate`` hook: the decoder inputs not yet in the cache, and their bar index counted on the
        whole sequence so far (``input_ids`` (B, T) is the full generated sequence, starting with BOS).
        ``generate`` passes the decoder cache as ``cache``."""
        bar_index = count_bars(input_ids, bar_token_ids=self.bar_token_ids)  # (B, T)
        slot_index = count_slots(input_ids, bar_token_ids=self.bar_token_ids)  # (B, T)
        done = self.decoder.cached_tokens(cache, z_bar=z_bar, z_segment=z_segment)
        return {
            "decoder_input_ids": input_ids[:, done:],
            "decoder_bar_ids": bar_index[:, done:],
            "decoder_slot_ids": slot_index[:, done:],
            "z_bar": z_bar,
            "z_segment": z_segment,
            "tag_ids": tag_ids,
            "cache": cache,
            "use_cache": use_cache,
        }


# --------------------------------------------------------------------------- diagnostics


def latent_usage(mu: torch.Tensor, *, threshold: float = 0.01) -> dict[str, float]:
    """Active units (Burda et al. 2016): latent dimensions whose posterior mean varies over the data,
    ``Var_x[mu(x)] > threshold``. ``mu`` is (N, Z), e.g. ``out.mu_segment`` or ``out.mu_bar[out.bar_mask]``;
    few active units means posterior collapse. One example has no variance: every unit counts as inactive."""
    flat = mu.detach().float().reshape(-1, mu.shape[-1])  # (N, Z)
    variance = flat.var(dim=0) if len(flat) > 1 else flat.new_zeros(flat.shape[-1])  # (Z,)
    active = int((variance > threshold).sum())
    return {
        "active_units": active,
        "total_units": mu.shape[-1],
        "active_fraction": active / mu.shape[-1],
        "mean_variance": float(variance.mean()),
    }
