"""The engine: the fold of interactions into user and item state, with no Kafka (start at
engine/pipeline.py)."""
