"""Song form (issue 16): sections of a whole song and which of them repeat, from one vector per bar.

The data flow, one module each: ``bars`` (the bar grid of a score and the note features per bar),
``codes`` (a model's bar codes per bar, from overlapping windows), ``segment`` (self-similarity,
boundaries, labels by repetition), ``supervised`` (a boundary head learnt from POP909's phrase labels, its
weights in ``boundary_head.json``), ``analysis`` (:func:`~midistruct.form.analysis.analyse`: score in,
:class:`~midistruct.form.analysis.Form` out), ``output`` (form.json, the PNG, the MIDI with markers),
``evaluate`` (POP909's human phrase labels aligned to the MIDI, boundary and label F-measures), ``view``
(the piano roll with its sections coloured beside the matrix, for notebooks).

Shapes: NB bars, D features per bar.
"""

from midistruct.errors import MidiStructError


class FormError(MidiStructError, ValueError):
    """A song whose form cannot be analysed (missing, not MIDI, no notes, bad meter); one-line message."""
