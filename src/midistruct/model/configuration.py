"""``MidiStructConfig``: every hyper-parameter of the autoencoder, saved as ``config.json`` with the weights."""

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

from midistruct.tokens.views import ARRANGEMENT_PITCHES  # the views own it

LATENT_MODES = ("vae", "ae", "none")
BAR_POOLINGS = ("mean", "slots", "flat")
BLOCK_POOLINGS = ("mean", "flat")


@strict
class MidiStructConfig(PreTrainedConfig):
    r"""Transformer autoencoder over bar-aligned REMI segments, with a latent per bar and one per segment.

    Sizes:
        vocab_size: tokenizer vocabulary size (``len(tokenizer)``).
        d_model, n_heads, ffn_dim: width, attention heads (``d_model % n_heads == 0``), feed-forward width.
        encoder_layers, decoder_layers: number of pre-LN blocks in each stack.
        max_positions: longest segment, in tokens (learned position table size).
        max_bars: most bars per segment (bar-position table size).
        latent_dim_bar, latent_dim_segment: sizes of the bar codes (Zb) and of the segment code (Zs).

    Variants:
        latent_mode: ``"vae"`` (Gaussian posterior, reparameterised, KL term), ``"ae"`` (deterministic, KL 0)
            or ``"none"``: no encoder and no latent, the decoder alone is a plain causal LM (the likelihood
            peer; it still accepts, and ignores, the codes, which ``encode`` returns as zeros).
        bar_latents: ``False`` keeps only the segment latent (ablation).
        bar_pooling: how a bar's encoder states become its code: ``"mean"`` (the default) or ``"slots"``
            (``modeling.SlotPooling``: ``pool_queries`` learned queries attend to the bar's states, keyed also by
            each token's slot in the bar, so the code can keep the order of the notes; issue 14).
        pool_queries: queries of the ``"slots"`` pooling.
        pool_slots, pool_width: the ``"flat"`` pooling (``modeling.FlatPooling``, issue 14): a bar's first
            ``pool_slots`` token states, each projected to ``pool_width``, concatenated in order and projected to
            the code, so each note's place in the bar has its own weights (later tokens are not pooled).
        conditioning: how the decoder reads the latents; a name from ``modeling.CONDITIONINGS``
            (``"add"``: projected [bar code ; segment code] added to each decoder input embedding;
            ``"prefix"``: latents as prefix vectors the decoder attends to; ``"slot"``: "add" plus the codes read
            out at the within-bar slot of the token to predict, ``FFN(LN(Linear(codes) + query[slot]))``, issue 14,
            slots counted up to ``sequence_slots``; ``"plan"``: "add" plus the sequence head's reading of the codes at
            the bar and slot of the token to predict, needs ``sequence_head > 0``). Checked when the model is built.
        decoder_memory: 0 (the default): the decoder reads the codes only through its conditioning. M > 0: the
            codes of each bar ([bar code ; segment code]) also become M memory vectors, and every decoder layer
            attends to those of its token's bar (``modeling.CodeAttention``; issue 14's "cross-attention from every
            layer"), so each position picks its part of the codes with its own context -- where a code's parts do
            not line up slot by slot with the window, as a functional block's view does not. Its output layers
            start at zero: a checkpoint grown by it (``--init``) decodes as before. Not with "prefix".

    Functional blocks (issue 19):
        arrangement_dim: 0 (the default): one encoder reads the window and its bar codes hold everything. N > 0: two
            encoders read two views of the window (``midistruct.tokens.views``): the main one the *content* (the
            melody and a block chord per beat), a second one of ``arrangement_layers`` blocks the *arrangement*
            (the other notes, each pitch replaced by its register and rank at its onset), whose mean per bar
            becomes an N-wide arrangement code. Each bar code is then ``[content (latent_dim_bar) ; arrangement
            (N)]`` (``bar_code_dim`` wide), and swapping the arrangement part of the codes re-arranges the
            content (``MidiStruct.transfer``). The arrangement code is deterministic in every ``latent_mode``.
        arrangement_layers: transformer blocks of the arrangement encoder.
        arrangement_pitch: ``"rank"`` (the default): the arrangement view writes each pitch as register and rank, so
            the arrangement code cannot hold the harmony. ``"exact"``: the pitches as they are -- a diagnostic
            that leaks the harmony into the arrangement code, to measure what the abstraction costs.
        block_pooling: how the arrangement and performance encoders pool their states into a code per bar:
            ``"mean"`` (the default) averages them (which notes, not in what order); ``"flat"`` lays the bar's first
            ``pool_slots`` states side by side as the main encoder's ``bar_pooling="flat"`` does (order kept).
        performance_dim: 0 (the default): no performance block. N > 0 (with an arrangement block, on a tokenizer with
            velocity tokens): a third encoder of ``performance_layers`` blocks reads the *performance* view (each
            note's position and velocity) into an N-wide code per bar, after the arrangement code; the content and
            arrangement views hold no velocity, so how hard the notes are played can only come from it.
        performance_layers: transformer blocks of the performance encoder.

    Regularisation:
        free_bits: KL allowance in **bits** per latent group (each bar code, and the segment code), as in
            MusicVAE; the penalised KL of a group is ``max(KL_group - free_bits * ln 2, 0)`` nats, per segment.
        word_dropout: probability of replacing a decoder input token by ``mask_token_id`` while training
            (Bowman et al. 2016), to make the decoder lean on the latents.
        bag_of_words: weight of an auxiliary loss (Zhao et al. 2017's bag-of-words loss) that predicts the
            multiset of each bar's tokens from that bar's code and the segment code alone (the segment's tokens
            from the segment code without bar latents), so that the codes must hold the bar's pitches, not
            only what the decoder cannot guess from the previous tokens. 0 disables it (no extra weights).
        sequence_head: weight of an auxiliary loss that asks the codes for each bar's tokens *in order*, not as a
            set (issue 14): a non-autoregressive head reads only [bar code ; segment code] plus a learned query
            per slot (slot k = the bar's k-th token) and predicts every slot's token at once (cross-entropy over
            the bar's real tokens, nats per segment; without bar latents the segment is one "bar"). It trains the
            encoder, never the decoder, and is not used when decoding. 0 disables it (no extra weights).
        section_head: weight of an auxiliary loss that asks each bar's content code which section the bar is in
            (issue 18, item 5: tags as supervision): a linear head over ``section_classes`` classes
            (``midistruct.tags.SECTION_CLASSES``, from POP909's phrase labels), cross-entropy summed over a
            window's labelled bars. It trains the encoder only; unlabelled bars teach nothing. 0 disables it.
        section_classes: how many section classes that head names.
        decoder_tags: ``{name: [value, ...]}``: the tags the decoder reads beside the codes (issue 18, item 2), each
            value a learned vector added to the segment code the decoder reads (index 0 of each tag: not given),
            so a window can be decoded "as a reel" or "in a minor mode". The values are the training data's, each
            with enough windows (``midistruct.shards.dataset.tag_vocabulary``); None (the default): no tags.
        tag_dropout: the chance that training hides each tag of a window (reads it as not given), so that every tag
            is optional when decoding.
        tag_adversary: 0 (the default): none. W > 0 (with ``decoder_tags``): a classifier per decoder tag names the
            window's value from its codes ([segment code ; mean bar code]) and the encoder is trained, through a
            reversed gradient times W, to leave it guessing (Ganin & Lempitsky 2015; Fader networks, Lample et al.
            2017), so that the tags the decoder reads are not also in the codes and the decoder must take them
            from the tag input. The classifier's own loss is ``tag_adversary_loss``.
        sequence_head_layers: transformer blocks over a bar's slots in that head (causal over the slot queries; 0: each
            slot alone).
        sequence_head_memory: 0: the head reads the code as one vector added to each slot's query; M > 0: the
            code becomes M memory vectors that each slot's query attends to (``modeling.CodeReader``), so slot k
            can pick its part of the code (multiplicative, where an added code needs the layers to untangle it;
            issue 14: with "flat" pooling this took the held-out pitch slots from 0.42 to 0.92).
        sequence_views: with functional blocks (issue 19), the sequence head names the tokens of the *content view*
            by their slots in it, from [content code ; segment code], and each other block gets a head of its own
            naming its view from its code: the window's k-th token is not any view's k-th, so a head asked for
            the window's order cannot read it off codes that each hold one view in order. The heads' states are
            then memory the decoder reads by attention (needs ``decoder_memory`` > 0, and conditioning add or
            slot: "plan" picks by the window's slot).
        sequence_slots: the most tokens per bar the head predicts (its slot table); later tokens go unscored. Also
            the slot table of the "slot" conditioning (later tokens share its last slot).
        dropout: dropout in embeddings, attention and feed-forward layers.

    Special ids (miditok REMI with special tokens PAD, BOS, EOS, MASK):
        pad_token_id, bos_token_id, eos_token_id, mask_token_id; bar_token_id is the ``Bar`` id (``RemiVocab.bar_id``,
        4 with miditok's default REMI vocabulary). bar_token_ids: every id that opens a bar when that is more
        than ``bar_token_id`` -- with BPE, each merge starting with ``Bar`` (``RemiVocab.bar_opening_ids``);
        None: ``[bar_token_id]``. The decoder counts these to know each token's bar.
    """

    model_type = "midistruct"
    keys_to_ignore_at_inference = ["cache"]  # the decoder cache, not an output to compare
    # Standard names that generic transformers code (caches, generation) reads.
    attribute_map = {
        "hidden_size": "d_model",
        "num_attention_heads": "n_heads",
        "num_hidden_layers": "decoder_layers",
        "max_position_embeddings": "max_positions",
    }

    vocab_size: int = 512
    d_model: int = 256
    n_heads: int = 4
    encoder_layers: int = 4
    decoder_layers: int = 4
    ffn_dim: int = 1024
    dropout: float | int = 0.1
    max_positions: int = 1024
    max_bars: int = 64
    latent_dim_bar: int = 64
    latent_dim_segment: int = 128
    latent_mode: str = "vae"
    bar_latents: bool = True
    bar_pooling: str = "mean"
    pool_queries: int = 8
    pool_slots: int = 32
    pool_width: int = 32
    conditioning: str = "add"
    decoder_memory: int = 0
    arrangement_dim: int = 0
    arrangement_layers: int = 2
    arrangement_pitch: str = "rank"
    block_pooling: str = "mean"
    performance_dim: int = 0
    performance_layers: int = 1
    free_bits: float | int = 0.0
    word_dropout: float | int = 0.0
    bag_of_words: float | int = 0.0
    sequence_head: float | int = 0.0
    section_head: float | int = 0.0
    section_classes: int = 9
    decoder_tags: dict[str, list[str]] | None = None
    tag_dropout: float | int = 0.5
    tag_adversary: float | int = 0.0
    sequence_head_layers: int = 1
    sequence_head_memory: int = 0
    sequence_views: bool = False
    sequence_slots: int = 64
    layer_norm_eps: float = 1e-5
    initializer_range: float = 0.02
    pad_token_id: int | None = 0
    bos_token_id: int | None = 1
    eos_token_id: int | list[int] | None = 2
    mask_token_id: int = 3
    bar_token_id: int = 4
    bar_token_ids: list[int] | None = None
    tie_word_embeddings: bool = True
    use_cache: bool = True

    def validate_architecture(self):
        """Called by ``@strict`` on construction: reject configs that cannot build a model."""
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be a multiple of n_heads ({self.n_heads})")
        if self.latent_mode not in LATENT_MODES:
            raise ValueError(f"unknown latent_mode {self.latent_mode!r}; valid: {', '.join(LATENT_MODES)}")
        if self.bar_pooling not in BAR_POOLINGS:
            raise ValueError(f"unknown bar_pooling {self.bar_pooling!r}; valid: {', '.join(BAR_POOLINGS)}")
        if not 0.0 <= self.word_dropout < 1.0:
            raise ValueError(f"word_dropout must be in [0, 1), got {self.word_dropout}")
        if self.bag_of_words < 0:
            raise ValueError(f"bag_of_words must be >= 0, got {self.bag_of_words}")
        if self.sequence_head < 0:
            raise ValueError(f"sequence_head must be >= 0, got {self.sequence_head}")
        if self.section_head < 0 or self.section_classes < 1:
            raise ValueError(f"section_head must be >= 0 and section_classes >= 1, got {self.section_head} and "
                             f"{self.section_classes}")
        if self.section_head and not self.bar_latents:
            raise ValueError("section_head names each bar's section from its bar code: it needs bar_latents")
        if not 0.0 <= self.tag_dropout <= 1.0:
            raise ValueError(f"tag_dropout must be in [0, 1], got {self.tag_dropout}")
        empty = [name for name, values in (self.decoder_tags or {}).items() if not values]
        if empty:
            raise ValueError(f"decoder_tags {empty} have no values")
        if self.tag_adversary < 0 or (self.tag_adversary and not self.decoder_tags):
            raise ValueError("tag_adversary must be >= 0 and needs decoder_tags (it hides those tags from the codes)")
        if self.decoder_tags and self.latent_mode == "none":
            raise ValueError("decoder_tags are added to the segment code: they need an encoder (latent_mode vae or ae)")
        if self.sequence_head_layers < 0 or self.sequence_slots < 1:
            raise ValueError("sequence_head_layers must be >= 0 and sequence_slots >= 1")
        if self.pool_slots < 1 or self.pool_width < 1 or self.sequence_head_memory < 0:
            raise ValueError("pool_slots and pool_width must be >= 1, sequence_head_memory >= 0")
        if self.decoder_memory < 0:
            raise ValueError(f"decoder_memory must be >= 0, got {self.decoder_memory}")
        if self.decoder_memory and (self.conditioning == "prefix" or self.latent_mode == "none"):
            raise ValueError("decoder_memory reads the codes beside conditioning add, slot or plan (not prefix), "
                             "and needs an encoder (latent_mode vae or ae)")
        if self.sequence_views and not (self.arrangement_dim and self.sequence_head > 0 and self.decoder_memory
                                        and self.conditioning in ("add", "slot")):
            raise ValueError("sequence_views needs functional blocks (arrangement_dim > 0), a sequence head "
                             "(sequence_head > 0) and decoder_memory > 0, with conditioning add or slot")
        if self.conditioning == "plan" and self.sequence_head <= 0:
            raise ValueError("conditioning 'plan' reads the sequence head: set sequence_head > 0")
        if min(self.arrangement_dim, self.performance_dim) < 0 or min(self.arrangement_layers,
                                                                     self.performance_layers) < 1:
            raise ValueError("arrangement_dim and performance_dim must be >= 0, their layers >= 1")
        if self.arrangement_pitch not in ARRANGEMENT_PITCHES:
            raise ValueError(f"unknown arrangement_pitch {self.arrangement_pitch!r}; valid: "
                             f"{', '.join(ARRANGEMENT_PITCHES)}")
        if self.block_pooling not in BLOCK_POOLINGS:
            raise ValueError(f"unknown block_pooling {self.block_pooling!r}; valid: {', '.join(BLOCK_POOLINGS)}")
        if self.performance_dim and not self.arrangement_dim:
            raise ValueError("a performance block (performance_dim > 0) needs an arrangement block (arrangement_dim > 0)")
        if self.arrangement_dim and (not self.bar_latents or self.latent_mode == "none"):
            raise ValueError("an arrangement block (arrangement_dim > 0) needs bar latents and an encoder "
                             "(bar_latents true, latent_mode vae or ae)")
        if self.arrangement_dim and self.conditioning == "prefix":
            raise ValueError("an arrangement block is read through conditioning add, slot or plan, not prefix")
        if self.free_bits < 0:
            raise ValueError(f"free_bits must be >= 0, got {self.free_bits}")
        if not 0 <= self.bar_token_id < self.vocab_size:
            raise ValueError(f"bar_token_id {self.bar_token_id} outside the vocabulary ({self.vocab_size})")
        outside = [i for i in self.bar_token_ids or [] if not 0 <= i < self.vocab_size]
        if outside:
            raise ValueError(f"bar_token_ids {outside} outside the vocabulary ({self.vocab_size})")

    @property
    def bar_code_dim(self) -> int:
        """Width of each bar code the decoder reads: ``latent_dim_bar`` (+ ``arrangement_dim``), 0 without bar
        latents."""
        return (self.latent_dim_bar + self.arrangement_dim + self.performance_dim) if self.bar_latents else 0

    def block_slices(self) -> dict[str, slice]:
        """Where each functional block lies in a bar code: ``{"content": slice(0, Zb)}``, then
        ``"arrangement"`` and ``"performance"`` in that order for the blocks the model has."""
        blocks, start = {"content": slice(0, self.latent_dim_bar)}, self.latent_dim_bar
        for name, width in (("arrangement", self.arrangement_dim), ("performance", self.performance_dim)):
            if width:
                blocks[name], start = slice(start, start + width), start + width
        return blocks

    def tag_index(self, name: str, value: str | None) -> int:
        """The row of ``value`` in decoder tag ``name``'s embedding: 1 + its place in ``decoder_tags[name]``, 0 for
        None (not given). KeyError for a tag or value the model does not know."""
        if value is None:
            return 0
        values = (self.decoder_tags or {})[name]
        if value not in values:
            raise KeyError(value)
        return 1 + values.index(value)

    @property
    def views(self) -> tuple[str, ...]:
        """The views of a window its encoders read (``midistruct.tokens.views``): () for a model without blocks
        (its encoder reads the window itself), else the content view and one per block."""
        return tuple(self.block_slices()) if self.arrangement_dim else ()

    def view_options(self) -> dict:
        """What ``window_batch`` / ``WindowDataset`` take to build the views this model's encoders read:
        ``views``, ``arrangement_pitch`` and ``max_tokens`` ({} for a model without blocks)."""
        if not self.views:
            return {}
        return {"views": self.views, "arrangement_pitch": self.arrangement_pitch, "max_tokens": self.max_positions - 1}

    @classmethod
    def tiny(cls, *, vocab_size: int = 50, **overrides) -> "MidiStructConfig":
        """A config small enough for unit tests (d_model 32, 2 + 2 layers, no dropout)."""
        sizes = dict(
            vocab_size=vocab_size, d_model=32, n_heads=4, encoder_layers=2, decoder_layers=2, ffn_dim=64,
            dropout=0.0, max_positions=64, max_bars=8, latent_dim_bar=8, latent_dim_segment=16,
        )
        return cls(**{**sizes, **overrides})
