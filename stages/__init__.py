"""Stages of the upcycling scaling-law workflow; each module runs as ``python -m stages.X``."""
