"""From MIDI to tokens: validation, miditok tokenization, bar-aligned segmentation."""
