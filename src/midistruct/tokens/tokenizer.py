"""Build, save and load the miditok tokenizer described by a config.

The tokenizer is saved beside every artifact (shards, checkpoints) under
:data:`TOKENIZER_FILE` -- not ``tokenizer.json``, which transformers' AutoTokenizer
would try to read as one of its own.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from midistruct.config import TokenizerSettings

TOKENIZER_FILE = "miditok.json"

# Schemes whose token streams carry Bar tokens, so windows can be cut at bar lines.
# TSD / MIDILike have no bars; Octuple and MuMIDI drop everything after bar 60;
# CPWord uses several vocabularies at once (not supported by the model yet).
BAR_SCHEMES = ("REMI",)


def miditok_config(settings: TokenizerSettings):
    """The ``miditok.TokenizerConfig`` for these settings."""
    import miditok

    return miditok.TokenizerConfig(
        pitch_range=tuple(settings.pitch_range),
        beat_res={(a, b): res for a, b, res in settings.beat_res},
        use_velocities=settings.use_velocities,
        num_velocities=settings.num_velocities,
        use_tempos=settings.use_tempos,
        use_time_signatures=True,
        time_signature_range={int(k): list(v) for k, v in settings.time_signature_range.items()},
        use_programs=settings.multitrack == "programs",
        one_token_stream_for_programs=True,
        special_tokens=["PAD", "BOS", "EOS", "MASK"],
        encode_ids_split="bar",
        # per track in miditok; with programs kept, a pitch may repeat at an onset under another program
        remove_duplicated_notes=settings.sort_chords and settings.multitrack == "merge",
    )


def build_tokenizer(settings: TokenizerSettings):
    """A fresh (untrained) miditok tokenizer for these settings."""
    import miditok

    if settings.scheme not in BAR_SCHEMES:
        raise ValueError(f"tokenizer scheme {settings.scheme!r} keeps no bar structure; valid: {BAR_SCHEMES}")
    return getattr(miditok, settings.scheme)(miditok_config(settings))


def settings_hash(settings: TokenizerSettings, tokenizer=None) -> str:
    """Short stable hash of the tokenizer settings (and learned BPE merges, if any).

    Shards or checkpoints with another hash are refused: their ids mean other tokens.
    """
    dump = settings.model_dump(mode="json")
    if not dump["sort_chords"]:  # added later: off is the old behaviour, so old shards keep their hash
        del dump["sort_chords"]
    text = json.dumps(dump, sort_keys=True)
    if tokenizer is not None and tokenizer.is_trained:
        text += tokenizer._model.to_str()
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def save_tokenizer(tokenizer, folder: Path) -> Path:
    """Write the tokenizer into ``folder`` and return the file's path."""
    path = Path(folder) / TOKENIZER_FILE
    tokenizer.save(path)
    return path


def load_tokenizer(folder: Path):
    """Load the tokenizer saved in ``folder`` (a shard set or a checkpoint)."""
    import miditok

    path = Path(folder) / TOKENIZER_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no {TOKENIZER_FILE} in {folder}")
    params = json.loads(path.read_text())
    scheme = params.get("tokenization", "REMI")
    return getattr(miditok, scheme)(params=path)


def decode_ids(tokenizer, ids) -> "symusic.Score":  # noqa: F821
    """Decode one token stream (a window or a whole piece) to a symusic Score.

    Handles both single-stream layouts: programs in the stream (``multitrack:
    programs``) and one merged track. Writing the result is the caller's job
    (``score.dump_midi(path)``; miditok's ``output_path`` is unreliable).
    """
    from miditok import TokSequence

    seq = TokSequence(ids=[int(i) for i in ids], are_ids_encoded=tokenizer.is_trained)
    if tokenizer.is_trained:  # BPE ids back to base ids first
        tokenizer.decode_token_ids(seq)
    if tokenizer.config.use_programs and tokenizer.config.one_token_stream_for_programs:
        return tokenizer.decode(seq)
    return tokenizer.decode([seq])


# miditok puts the special tokens first, in the order given in ``miditok_config``.
PAD_ID, BOS_ID, EOS_ID, MASK_ID = 0, 1, 2, 3


def strip_special(ids) -> list[int]:
    """Token ids up to the first EOS, without BOS / PAD / MASK (a generated row -> a window)."""
    out = []
    for i in ids:
        i = int(i)
        if i == EOS_ID:
            break
        if i not in (BOS_ID, PAD_ID, MASK_ID):
            out.append(i)
    return out
