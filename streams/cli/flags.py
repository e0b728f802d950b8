"""Where flags meet settings: the one place a command's flags override the settings read at start-up,
and where a parser finds the defaults of an options dataclass."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, get_args

from streams.config import Settings

__all__ = ["DATA", "DEVICES", "EPOCHS_HELP", "option_defaults", "with_flags"]

DEVICES: tuple[str, ...] = get_args(Settings.model_fields["device"].annotation)
# The interaction log that train, evaluate, replay and demo read when given no --data.
DATA = Path("../shared/data/wikipedia.csv")
# (names TrainConfig's fields rather than importing it, which would load torch for every command)
EPOCHS_HELP = "passes over the training rows, exactly (default: 2, or more on a small log: min_steps)"


def with_flags(settings: Settings, **flags: object) -> Settings:
    """``settings`` with each flag that was given (not None) in place of its setting."""
    given = {k: v for k, v in flags.items() if v is not None}
    return settings.model_copy(update=given) if given else settings


def option_defaults(options: type) -> dict[str, Any]:
    """The field defaults of an options dataclass, so a parser's defaults are the dataclass's own."""
    return {f.name: f.default for f in dataclasses.fields(options) if f.default is not dataclasses.MISSING}
