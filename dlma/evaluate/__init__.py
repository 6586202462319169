"""Step `evaluate`: label agreement with human labels, aligned vs base under a registry of judges, the report."""
