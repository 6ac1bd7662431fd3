"""Scaling laws: forms, objective, fitter, bootstrap, quality and diagnostics, and the planner over fitted laws."""
