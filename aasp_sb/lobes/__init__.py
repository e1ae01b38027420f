"""Neural building blocks ("lobes" in SpeechBrain's vocabulary)."""
