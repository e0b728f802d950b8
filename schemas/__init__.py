"""Versioned record contracts: JSON Schema files and the matching Python types. No I/O but reading them."""

from schemas.records import *
from schemas.records import __all__  # noqa: F401
