"""Prepared data on disk: one folder per corpus, one sub-folder per split.

Layout of a shard folder (written by :mod:`.writer`, read by :mod:`.reader`)::

    manifest.json          format version, resolved config, tokenizer hash, counts, sources
    miditok.json           the tokenizer that made the tokens
    config.yaml            the resolved run config
    report.tsv             every skipped file with its one-line reason
    <split>/tokens.bin     (T,) token ids of all pieces of the split, piece after piece
    <split>/bars.bin       (T,) bar index of each token within its piece
    <split>/windows.bin    (W, 4) int64 rows: start, end, piece, first bar
    <split>/pieces.jsonl   one JSON line per piece: id, group, tags, tokens, bars, windows

Beside it while a prepare runs: ``<folder>.lock`` (one prepare per output) and the temporaries
``<folder>.partial-PID`` (and ``.base-PID`` with BPE), renamed into place or removed; a killed run's
are removed by the next one. A run that skipped every file writes ``<folder>.report.tsv`` instead
and leaves the folder as it was. Only a folder with exactly this layout is ever replaced.

A window is ``tokens[start:end]``; its bar indices are ``bars[start:end] - first bar``.
Storing pieces once and windows as index rows keeps overlapping windows free.
"""

FORMAT_VERSION = 1
SPLITS = ("train", "valid", "test")
MANIFEST = "manifest.json"
