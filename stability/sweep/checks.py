"""Checks a sweep makes before it starts anything (exit 2 with one line when one fails): names
the registries must know, the data, every planned trial's input (image size, model_args, batch
size), teachers and patch-loss models, a writable storage, a reachable cluster. Torch is loaded
only to open a teacher checkpoint named by path; the rest reads torch-free tables
(`stability.models.catalog`, `stability.data.checks`)."""

from __future__ import annotations

import json
import socket

from stability.cli import UsageError
from stability.spec import SpecError, StudySpec, TrialConfig, TrialSetupError
from stability.spec.errors import did_you_mean
from stability.sweep.teachers import teacher_is_checkpoint


def check_names(spec: StudySpec) -> None:
    """Names the registries must know: models and dataset (fast; nothing is built or loaded)."""
    from stability.data import list_datasets
    from stability.models import list_models

    known = list_models()
    for entry in spec.model_entries():
        if entry.name not in known:
            raise SpecError(f"models: unknown model {entry.name!r}{did_you_mean(entry.name, known)}; "
                            f"choose from: {', '.join(known)}")
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


def check_factors(plan: list[TrialConfig], workers_per_trial: int = 1) -> None:
    """Before anything runs: every trial's input fits its model and data (`check_trials`), patch
    losses only on models with patch tokens; every teacher is a known model or a readable checkpoint
    of ours that fits the data."""
    from stability.data.checks import data_shape, resolve_img_size
    from stability.models import has_patch_tokens, list_models
    from stability.models.catalog import check_model_input
    from stability.train.teacher import check_teacher_fits, load_checkpoint

    check_trials(plan, workers_per_trial)
    seen: set[str] = set()
    for cfg in plan:
        if cfg.train.patch_losses.active and not has_patch_tokens(cfg.model):
            raise SpecError(f"train.patch_losses: {cfg.model} has no patch tokens; use the losses with transformer models only")
        distill = cfg.train.distillation
        ds = cfg.dataset
        key = json.dumps([distill.teacher, ds.model_dump(mode="json")], sort_keys=True, default=str)
        if not distill.active or key in seen:
            continue
        seen.add(key)
        img_size = resolve_img_size(ds.name, ds.img_size)  # checked by check_trials
        if teacher_is_checkpoint(distill.teacher):
            try:
                check_teacher_fits(load_checkpoint(distill.teacher), **data_shape(ds.name, img_size, ds.options))
            except TrialSetupError as exc:
                raise SpecError(f"train.distillation.teacher: {exc}") from None
        elif distill.teacher not in list_models():
            raise SpecError(f"train.distillation.teacher: {distill.teacher!r} is neither a model name nor a "
                            f"checkpoint file; models: {', '.join(list_models())}")
        else:  # the sweep trains it on the study's data: it must take the study's images
            try:
                check_model_input(distill.teacher, img_size, {})
            except TrialSetupError as exc:
                raise SpecError(f"train.distillation.teacher {distill.teacher}: {exc}") from None


def check_trials(plan: list[TrialConfig], workers_per_trial: int = 1) -> None:
    """What every planned trial would otherwise find out only once it runs (and fail with, retry
    after retry), checked from torch-free tables once per distinct (model, data, model_args, batch
    size): the image size against the dataset's range and the model's patches and stem, model_args
    against what the model's builder accepts, dataset.options against the loader's, and the batch
    size against the workers and the training-set size."""
    from stability.data.checks import (
        DatasetError,
        check_batch_size,
        check_dataset_options,
        resolve_img_size,
    )
    from stability.models.catalog import check_model_args, check_model_input

    seen: set[str] = set()
    for cfg in plan:
        ds = cfg.dataset
        key = json.dumps([cfg.model, ds.model_dump(mode="json"), cfg.model_args, cfg.train.batch_size],
                         sort_keys=True, default=str)
        if key in seen:
            continue
        seen.add(key)
        try:
            check_dataset_options(ds.name, ds.options)
            img_size = resolve_img_size(ds.name, ds.img_size)
            check_model_args(cfg.model, cfg.model_args)
            check_model_input(cfg.model, img_size, cfg.model_args)
            check_batch_size(ds.name, ds.options, cfg.train.batch_size, workers_per_trial)
        except (DatasetError, TrialSetupError) as exc:
            raise SpecError(str(exc)) from None


def check_storage(root) -> None:
    """Fail before any work if the study folder cannot be written (`files.probe_folder`: a real
    probe). On an object store (`root` an ObjectPath) a missing bucket or missing or refused
    credentials end the run in one line."""
    from stability.results.files import probe_folder
    from stability.results.storage import ObjectPath

    try:
        probe_folder(root)
    except (OSError, ValueError) as exc:  # pyarrow: OSError (missing bucket, refused credentials), ArrowInvalid
        if isinstance(root, ObjectPath):
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise UsageError(f"--storage: cannot write to {root}: {first}; check that the bucket exists and that "
                             f"the store's credentials are set in the environment") from None
        raise UsageError(f"--storage: cannot write to {getattr(exc, 'filename', None) or root} (needed for {root}): "
                         f"{getattr(exc, 'strerror', None) or exc}; choose a writable folder") from None


def check_address(address: str) -> None:
    """A host:port address must answer within seconds (Ray itself would wait for minutes), and a
    cluster with token authentication must take this machine's token (Ray would retry for ~20 s);
    token mode is turned on for this process when the cluster asks for it and a token is at hand
    (`cluster.prepare_token_auth`)."""
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
    from stability.sweep.cluster import prepare_token_auth

    prepare_token_auth(address)
