"""Step `score`: label each generated pair with a margin (a registry of labellers), plus reference log-probs."""
