"""The runs table, figures, fit tables and the provenance tracer."""
