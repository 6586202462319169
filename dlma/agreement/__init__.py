"""Step `agreement`: the paper's first experiment, label agreement with human labels, for every labeller."""
