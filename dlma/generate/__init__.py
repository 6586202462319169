"""Step `generate`: sample one response per context, batched, with left padding."""
