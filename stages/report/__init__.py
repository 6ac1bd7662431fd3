"""The runs table, figures, fit tables, the findings, the lineage (provenance) tracer and the docs' generated tables."""
