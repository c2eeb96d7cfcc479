"""Errors of invalid input, and the one formatter of pydantic validation errors.

`SpecError`: a study spec or an override is invalid (found before anything runs).
`TrialSetupError`: a trial's input cannot run (device, batch size, image size, model arguments,
teacher checkpoint), found while the trial is set up. Both are the user's to fix: the command
lines report them in one line with exit code 2. Anything else raised inside training is a bug:
a traceback, and a failed trial in a sweep.
"""

from __future__ import annotations

import difflib
import reprlib
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ValidationError


class SpecError(ValueError):
    """An invalid study spec or override."""


class TrialSetupError(ValueError):
    """A trial whose input cannot run; the message is one line that says what to change."""


ECHO_LIMIT = 80  # characters of user input a message may echo
MESSAGE_LIMIT = 400  # characters of one validation message (the list of valid keys included)

_repr = reprlib.Repr()  # bounded work even for huge or deeply nested values
_repr.maxlevel, _repr.maxdict, _repr.maxlist, _repr.maxtuple, _repr.maxset = 3, 4, 6, 6, 6
_repr.maxstring, _repr.maxlong, _repr.maxother = ECHO_LIMIT, 40, ECHO_LIMIT


def short(value: Any, limit: int = ECHO_LIMIT, quote: bool = True) -> str:
    """A value as a message may echo it: its repr (a string as is with quote=False), cut to
    `limit` characters, so no input makes a message long."""
    if isinstance(value, str) and not quote:  # unquoted, but still on one line
        text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in value[:limit + 1])
    else:
        try:
            text = _repr.repr(value)
        except ValueError:  # an int past Python's digit limit for str()
            text = f"<a {type(value).__name__} too long to show>"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def did_you_mean(key: str, valid: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for a near miss, else ''."""
    key = str(key)
    if len(key) > ECHO_LIMIT:  # no key that long is a typo of a valid one
        return ""
    hint = difflib.get_close_matches(key, list(valid), n=1)
    return f" (did you mean {hint[0]!r}?)" if hint else ""


def check_keys(keys: Iterable[str], valid: Iterable[str], where: str) -> None:
    """ValueError naming the first key that is not valid, with a suggestion and the choices."""
    valid = list(valid)
    for key in keys:
        if key not in valid:
            raise ValueError(f"unknown key {short(key)} in {where}{did_you_mean(key, valid)}; valid: {', '.join(valid)}")


def _fields_at(model: Any, loc: tuple) -> list[str]:
    for part in loc:
        field = getattr(model, "model_fields", {}).get(part)
        model = field.annotation if field is not None else None
    return list(getattr(model, "model_fields", {}))


def _first_error(exc: ValidationError) -> tuple[dict[str, Any], tuple]:
    """The error to report, and its location. When the first error is a union member refusing the
    input's type (`models.0.str: Input should be a valid string`), the member that took the input
    and failed deeper says more (`models.0.model_args: ...`); its tag is left out of the location."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    loc = tuple(first["loc"])
    if first["type"].endswith("_type") and len(loc) >= 2:
        site = loc[:-1]
        for err in errors[1:]:
            if tuple(err["loc"][:len(site)]) == site and len(err["loc"]) > len(loc):
                return err, site + tuple(err["loc"][len(loc):])
    return first, loc


def validation_message(exc: ValidationError, source: str = "", model: type[BaseModel] | None = None,
                       show_input: bool = False) -> str:
    """One line for the first error of a pydantic validation: `source: dotted.key: message`.
    With `model`, an unknown key gets a suggestion and the valid keys at its place. Echoed input
    (keys, values) is cut to ECHO_LIMIT characters and the message to MESSAGE_LIMIT."""
    err, where = _first_error(exc)
    loc = ".".join(short(p, quote=False) for p in map(str, where) if not p.startswith(("function-", "union[")))
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        fields = _fields_at(model, err["loc"][:-1]) if model is not None else []
        msg = f"unknown key {short(err['loc'][-1])}"
        if fields:
            msg += f"{did_you_mean(err['loc'][-1], fields)}; valid: {', '.join(fields)}"
    elif show_input and "input" in err:
        msg += f" (value {short(err['input'])})"
    return ": ".join(part for part in (source, short(loc, MESSAGE_LIMIT, quote=False), short(msg, MESSAGE_LIMIT, quote=False))
                     if part)
