"""Scaling laws: forms, objective, fitter, bootstrap, diagnostics and the planner."""
