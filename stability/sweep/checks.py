"""Checks a sweep makes before it starts anything (exit 2 with one line when one fails): names
the registries must know, the data, teachers and patch-loss models, a writable storage, a
reachable cluster. Torch is loaded only to open a teacher checkpoint named by path."""

from __future__ import annotations

import difflib
import socket
import tempfile
from pathlib import Path

from stability.cli import UsageError
from stability.spec import SpecError, StudySpec, TrialConfig, TrialSetupError
from stability.sweep.teachers import teacher_is_checkpoint


def check_names(spec: StudySpec) -> None:
    """Names the registries must know: models and dataset (fast; nothing is built or loaded)."""
    from stability.data import list_datasets
    from stability.models import list_models

    known = list_models()
    for entry in spec.model_entries():
        if entry.name not in known:
            hint = difflib.get_close_matches(entry.name, known, n=1)
            extra = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise SpecError(f"models: unknown model {entry.name!r}{extra}; choose from: {', '.join(known)}")
        for opt in entry.optimizers:
            if opt not in spec.optimizers:
                raise SpecError(f"models.{entry.name}.optimizers: {opt!r} is not one of the study's optimizers {sorted(spec.optimizers)}")
    if spec.dataset.name not in list_datasets():
        raise SpecError(f"dataset.name: unknown dataset {spec.dataset.name!r}; choose from: {', '.join(list_datasets())}")


def check_data(spec: StudySpec) -> None:
    """The dataset's files must be there (or downloadable when the spec allows it)."""
    from stability.data import DatasetError, check_dataset

    if spec.dataset.download:
        return
    try:
        check_dataset(spec.dataset.name, spec.dataset.root)
    except DatasetError as exc:
        raise SpecError(f"dataset: {exc}") from None


def check_factors(plan: list[TrialConfig]) -> None:
    """Before anything runs: patch losses only on models with patch tokens; every teacher is a
    known model or a readable checkpoint of ours."""
    from stability.models import has_patch_tokens, list_models
    from stability.train.checkpoint import load_checkpoint

    seen: set[str] = set()
    for cfg in plan:
        if cfg.train.patch_losses.active and not has_patch_tokens(cfg.model):
            raise SpecError(f"train.patch_losses: {cfg.model} has no patch tokens; use the losses with transformer models only")
        distill = cfg.train.distillation
        if not distill.active or distill.teacher in seen:
            continue
        seen.add(distill.teacher)
        if teacher_is_checkpoint(distill.teacher):
            try:
                load_checkpoint(distill.teacher)
            except TrialSetupError as exc:
                raise SpecError(f"train.distillation.teacher: {exc}") from None
        elif distill.teacher not in list_models():
            raise SpecError(f"train.distillation.teacher: {distill.teacher!r} is neither a model name nor a "
                            f"checkpoint file; models: {', '.join(list_models())}")


def check_storage(root: Path) -> None:
    """Fail before any work if the study folder cannot be written (a real probe: root passes
    permission checks that the file system still refuses)."""
    parent = root.absolute()
    while not parent.exists():
        parent = parent.parent
    try:
        if not parent.is_dir():
            raise NotADirectoryError(f"{parent} is not a folder")
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as exc:
        raise UsageError(f"--storage: cannot write to {parent} (needed for {root}): "
                         f"{exc.strerror or exc}; choose a writable folder") from None


def check_address(address: str) -> None:
    """A host:port address must answer within seconds (Ray itself would wait for minutes)."""
    if address == "auto" or address.startswith("ray://"):
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--address {address!r}: expected host:port (e.g. 127.0.0.1:6379) or 'auto'")
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
    except OSError as exc:
        raise UsageError(f"--address {address}: no Ray cluster answers there ({exc.strerror or exc}); "
                         f"start one with `ray start --head` or omit --address to run locally") from None
