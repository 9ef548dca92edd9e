"""Generation: from latents back to music (decoding, constraints on what the decoder may write)."""
