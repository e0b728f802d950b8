"""Offline work on logs: reading them, chronological protocols, training, the streaming evaluator and
its baselines, cold-start evaluation and synthetic logs."""
