"""Training: the job, its saved state, the loop, metrics, run record, optimizer, schedules, runtime, evaluation."""
