"""Checkpoint surgery: a dense checkpoint becomes an MoE (upcycling) or a larger model."""
