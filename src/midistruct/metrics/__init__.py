"""Scoring music: pure functions over note arrays and token ids, no model code.

``notes`` (note arrays from scores, mir_eval transcription F1), ``steps`` (MusicVAE's 16th-note
melody events and per-step accuracy), ``features`` (musical attributes: note density, pitch range,
syncopation...). Training's validation, generation's attribute vectors and evaluation all score
with these.

Notes are (N, 3) float arrays of onset and duration in quarter notes and MIDI pitch
(:func:`midistruct.metrics.notes.notes_of` makes them from a symusic Score).
"""
