"""Exports and imports: Hugging Face transformers and nanotron checkpoint formats."""
