"""Config validation and the study grid; torch-free, imported by the Snakefile."""
