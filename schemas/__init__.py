"""Versioned record contracts: JSON Schema files and the matching Python types. No I/O but reading them."""

from schemas import records
from schemas.records import *  # noqa: F403  (the package's public names are exactly records')

__all__ = records.__all__
