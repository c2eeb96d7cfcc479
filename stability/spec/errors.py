"""Errors of invalid input, and the one formatter of pydantic validation errors.

`SpecError`: a study spec or an override is invalid (found before anything runs).
`TrialSetupError`: a trial's input cannot run (device, batch size, image size, model arguments,
teacher checkpoint), found while the trial is set up. Both are the user's to fix: the command
lines report them in one line with exit code 2. Anything else raised inside training is a bug:
a traceback, and a failed trial in a sweep.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ValidationError


class SpecError(ValueError):
    """An invalid study spec or override."""


class TrialSetupError(ValueError):
    """A trial whose input cannot run; the message is one line that says what to change."""


def did_you_mean(key: str, valid: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for a near miss, else ''."""
    hint = difflib.get_close_matches(str(key), list(valid), n=1)
    return f" (did you mean {hint[0]!r}?)" if hint else ""


def check_keys(keys: Iterable[str], valid: Iterable[str], where: str) -> None:
    """ValueError naming the first key that is not valid, with a suggestion and the choices."""
    valid = list(valid)
    for key in keys:
        if key not in valid:
            raise ValueError(f"unknown key {key!r} in {where}{did_you_mean(key, valid)}; valid: {', '.join(valid)}")


def _fields_at(model: Any, loc: tuple) -> list[str]:
    for part in loc:
        field = getattr(model, "model_fields", {}).get(part)
        model = field.annotation if field is not None else None
    return list(getattr(model, "model_fields", {}))


def validation_message(exc: ValidationError, source: str = "", model: type[BaseModel] | None = None,
                       show_input: bool = False) -> str:
    """One line for the first error of a pydantic validation: `source: dotted.key: message`.
    With `model`, an unknown key gets a suggestion and the valid keys at its place."""
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith(("function-", "union[")))
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        fields = _fields_at(model, err["loc"][:-1]) if model is not None else []
        msg = f"unknown key {err['loc'][-1]!r}"
        if fields:
            msg += f"{did_you_mean(err['loc'][-1], fields)}; valid: {', '.join(fields)}"
    elif show_input and "input" in err:
        msg += f" (value {err['input']!r})"
    return ": ".join(part for part in (source, loc, msg) if part)
