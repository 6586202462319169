"""Step `prepare` (and the sets `evaluate` reads): load prompt and preference-pair sets into one normal form."""
