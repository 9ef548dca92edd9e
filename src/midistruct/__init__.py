"""midistruct: learn the structure of music from symbolic MIDI.

Data flow, one sub-package per stage:
``corpus`` (sources of MIDI pieces) -> ``tokens`` (validation, miditok tokenization,
bar-aligned segmentation) -> ``shards`` (memory-mapped token arrays on disk) -> ``metrics``
(scores over notes and tokens) -> ``model`` (and its checkpoint folder) -> ``generation`` ->
``training`` -> ``evaluation``; ``cli`` wires them to commands. Imports go one way, down
this list (``tests/test_architecture.py``).

Importing the package is cheap: nothing heavy (torch, miditok) is imported here.
"""

__version__ = "0.1.0"
