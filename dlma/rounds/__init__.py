"""Iterative rounds: the aligned model of round k-1 generates, scores (as its own judge) and
trains on the pairs of round k (Self-Rewarding LMs, iterative DPO), each round a DVC stage."""
