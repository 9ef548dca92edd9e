"""Measuring music and models: note-level and MusicVAE-style step metrics, musical attributes,
interpolation smoothness. Pure functions over note arrays; no model code here.

Notes are (N, 3) float arrays of onset and duration in quarter notes and MIDI pitch
(:func:`midistruct.evaluation.notes.notes_of` makes them from a symusic Score).
"""
