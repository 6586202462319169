"""Step `filter`: scored samples -> preference pairs (chosen, rejected, margin)."""
