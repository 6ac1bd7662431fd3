"""The transformer (dense and MoE), its typed configuration, parameter/FLOP counts and checkpoint files."""
