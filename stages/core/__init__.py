"""Torch-free plumbing every stage uses: user errors, atomic files, code hashes, typed options, run records."""
