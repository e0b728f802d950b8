"""Torch modules, one per file, each with a config dataclass saved inside every checkpoint."""
