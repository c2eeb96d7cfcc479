"""Orchestration on Ray: `python -m stability.sweep` validates a study, plans it, runs the missing
trials with Ray Tune (Ray Train for data-parallel trials) and stores each row as it ends."""
