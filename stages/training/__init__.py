"""The training loop, optimizer, schedules, runtime set-up and evaluation."""
