"""Dataset checks that need no torch: the error type, the default root, option and size checks.

Kept apart from `base` so that validating a study (the sweep driver, `--dry-run`) does not import torch.
"""

from __future__ import annotations

import os


class DatasetError(ValueError):
    """A dataset is missing, unreadable or misconfigured; the message is one line."""


def default_root() -> str:
    """Where datasets are looked for when no root is given: $STABILITY_DATA or ~/data."""
    return os.path.abspath(os.path.expanduser(os.environ.get("STABILITY_DATA", "~/data")))


def check_options(name: str, options: dict, allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        valid = ", ".join(allowed) if allowed else "none"
        raise DatasetError(f"{name}: unknown dataset option(s) {', '.join(unknown)}; valid: {valid}")


def check_img_size(name: str, img_size: int, lo: int, hi: int) -> int:
    if isinstance(img_size, bool) or not isinstance(img_size, int) or not lo <= img_size <= hi:
        raise DatasetError(f"{name}: img_size must be an integer in [{lo}, {hi}], got {img_size!r}")
    return img_size
