"""Training throughput and model FLOP utilisation (MFU): the trial engine against a plain PyTorch loop.

Per model, in one process, side by side:

- peak: the measured dense matmul rate (bf16 on CUDA, fp32 on the CPU), best of several timings;
  the denominator of every MFU here.
- engine: `stability.train.engine.run_trial` itself on the `synthetic` dataset (images held and
  augmented on the device, bf16 autocast, fused AdamW, torch.compile and, where the engine has the
  switch, channels-last conv stems on CUDA). The first epoch is warm-up (compile included) and is
  reported separately; images/s comes from the later epochs, timed by the engine's per-epoch
  callback (each interval also holds a tiny validation pass).
- plain: the loop most PyTorch code starts from: fp32, `torch.utils.data.DataLoader` over CPU
  tensors (pinned memory, worker processes), the default (non-fused) AdamW, no compile.

MFU = images/s x 3 x forward FLOPs per image / peak FLOP/s, with forward FLOPs = 2 x the
multiply-adds `stability.models.model_info` counts (forward + backward = 3 forwards).

Run it with `python -m benchmarks gpu` (see `--help`); it needs torch, timm and the engine's own
imports only (no Ray, Optuna or Plotly).
"""

from __future__ import annotations

import gc
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from stability.cli import first_line

LR, WEIGHT_DECAY, LABEL_SMOOTHING = 5e-4, 0.05, 0.1  # the engine's recipe defaults apart from lr/wd
VAL_IMAGES = 32  # validation images per engine epoch: enough for the engine's metrics, cheap to run
PLAIN_POOL_IMAGES = 2048  # distinct CPU images behind the plain loop's DataLoader (sampled repeatedly)


class BenchError(ValueError):
    """Bad benchmark input; reported as one line."""


@dataclass(frozen=True)
class Case:
    """One model at one resolution and batch size."""

    model: str
    img_size: int
    batch_size: int


DEFAULT_CASES = (
    Case("vit_p_1gf", 224, 256),
    Case("vit_c_1gf", 224, 256),
    Case("vit_p_4gf", 224, 256),
    Case("deit_small", 224, 256),
    Case("vit_p_tiny", 32, 1024),
)


@dataclass(frozen=True)
class Settings:
    device: torch.device
    steps: int = 50  # optimizer steps per engine epoch, and timed steps of the plain loop
    epochs: int = 2  # timed engine epochs after the warm-up epoch
    warmup_steps: int = 5  # untimed plain-loop steps
    workers: int = 4  # plain loop's DataLoader workers
    compile: bool = True
    num_classes: int = 1000
    matmul_size: int = 8192
    compile_models: frozenset[str] | None = None  # with compile on: compile only these models (None = every model)

    def compiles(self, model: str) -> bool:
        """Whether the engine runs `model` under torch.compile."""
        return self.compile and (self.compile_models is None or model in self.compile_models)


@dataclass
class Result:
    model: str
    img_size: int
    batch_size: int
    params: int = 0
    gflops: float = math.nan  # forward GMACs per image (model_info)
    engine_images_per_s: float = math.nan
    engine_warmup_s: float = math.nan  # first epoch minus a timed one: start-up and compile
    engine_reported_images_per_s: float = math.nan  # run_trial's own figure (warm-up epoch included)
    plain_images_per_s: float = math.nan
    engine_mfu: float = math.nan
    plain_mfu: float = math.nan
    ratio: float = math.nan  # engine / plain images/s
    compiled: bool = False  # the engine ran under torch.compile
    errors: dict[str, str] = field(default_factory=dict)


def resolve_cases(models: list[str] | None, img_size: int | None, batch_size: int | None) -> list[Case]:
    """The default cases, or the named models (default case size, else 224 px and batch 256)."""
    from stability.models import list_models

    defaults = {case.model: case for case in DEFAULT_CASES}
    names = models or list(defaults)
    unknown = [name for name in names if name not in list_models()]
    if unknown:
        raise BenchError(f"unknown model(s) {', '.join(unknown)}; choose from: {', '.join(list_models())}")
    cases = []
    for name in names:
        base = defaults.get(name, Case(name, 224, 256))
        cases.append(Case(name, img_size or base.img_size, batch_size or base.batch_size))
    for case in cases:
        check_builds(case)
    return cases


def check_builds(case: Case) -> None:
    """Build the model on the meta device (no memory, no compute) to reject bad sizes up front."""
    from stability.models import build_model

    try:
        with torch.device("meta"):
            build_model(case.model, 10, case.img_size)
    except ValueError as exc:
        raise BenchError(f"{case.model} at {case.img_size} px: {exc}") from None


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def release_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def measure_peak(device: torch.device, size: int, repeats: int = 5, products: int = 10) -> dict[str, Any]:
    """Best dense matmul rate of `repeats` timings of `products` size^3 products (bf16 on CUDA)."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):
        torch.matmul(a, b)
    best = math.inf
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        for _ in range(products):
            torch.matmul(a, b)
        synchronize(device)
        best = min(best, (time.perf_counter() - start) / products)
    del a, b
    release_memory(device)
    return {"tflops": 2 * size**3 / best / 1e12, "dtype": str(dtype).removeprefix("torch."), "size": size}


def engine_run(case: Case, settings: Settings) -> dict[str, float]:
    """Time `run_trial` on synthetic data; the first epoch is warm-up."""
    from stability.spec.trial import TrialConfig
    from stability.train.engine import run_trial

    torch.compiler.reset()  # a fresh compile per model, as in a new trial process
    val_images = min(VAL_IMAGES, case.batch_size)
    cfg = TrialConfig(
        model=case.model, optimizer="adamw", lr=LR, weight_decay=WEIGHT_DECAY, epochs=1 + settings.epochs,
        dataset={"name": "synthetic", "img_size": case.img_size,
                 "options": {"train_size": case.batch_size * settings.steps, "val_size": val_images,
                             "num_classes": settings.num_classes}},
        train={"batch_size": case.batch_size, "compile": settings.compiles(case.model), "precision": "bf16",
               "warmup_epochs": 0, "label_smoothing": LABEL_SMOOTHING, "eval_batch_size": val_images,
               "channels_last": True},
    )
    stamps: list[float] = []
    start = time.perf_counter()
    metrics = run_trial(cfg, device=settings.device, on_epoch=lambda _point: stamps.append(time.perf_counter()))
    if metrics["status"] != "ok" or len(stamps) != 1 + settings.epochs:
        raise RuntimeError(f"engine trial ended {metrics['status']} after {len(stamps)} epochs")
    epoch_s = (stamps[-1] - stamps[0]) / settings.epochs
    return {"images_per_s": case.batch_size * settings.steps / epoch_s,
            "warmup_s": stamps[0] - start - epoch_s,
            "reported_images_per_s": metrics["images_per_s"],
            "params": metrics["params"], "gflops": metrics["gflops"]}


def plain_run(case: Case, settings: Settings) -> dict[str, float]:
    """A plain fp32 loop fed by a DataLoader of CPU tensors; the first `warmup_steps` are untimed."""
    from torch.utils.data import DataLoader, RandomSampler, TensorDataset

    from stability.models import build_model

    device = settings.device
    torch.manual_seed(0)
    model = build_model(case.model, settings.num_classes, case.img_size).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    pool = min(max(case.batch_size, PLAIN_POOL_IMAGES), case.batch_size * (settings.warmup_steps + settings.steps))
    dataset = TensorDataset(torch.randn(pool, 3, case.img_size, case.img_size),
                            torch.randint(0, settings.num_classes, (pool,)))
    total_steps = settings.warmup_steps + settings.steps
    loader = DataLoader(dataset, batch_size=case.batch_size, drop_last=True, num_workers=settings.workers,
                        sampler=RandomSampler(dataset, num_samples=total_steps * case.batch_size),
                        pin_memory=device.type == "cuda")
    model.train()
    start = time.perf_counter()
    for step, (x, y) in enumerate(loader):
        if step == settings.warmup_steps:
            synchronize(device)
            start = time.perf_counter()
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss = F.cross_entropy(model(x), y, label_smoothing=LABEL_SMOOTHING)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    synchronize(device)
    elapsed = time.perf_counter() - start
    if not math.isfinite(loss.item()):
        raise RuntimeError("plain loop: non-finite loss")
    return {"images_per_s": case.batch_size * settings.steps / elapsed}


def mfu(images_per_s: float, gflops: float, peak_tflops: float) -> float:
    """Model FLOP utilisation: 3 forwards (forward + backward) of 2 x gflops GFLOP per image."""
    return images_per_s * 3 * 2 * gflops * 1e9 / (peak_tflops * 1e12)


def run_case(case: Case, settings: Settings, peak_tflops: float, log=print) -> Result:
    """Engine then plain loop on one case; a failure (e.g. out of memory) is recorded, not raised."""
    result = Result(case.model, case.img_size, case.batch_size, compiled=settings.compiles(case.model))
    for way in ("engine", "plain"):
        log(f"{case.model} @ {case.img_size} px, batch {case.batch_size}: {way} ...")
        try:
            out = (engine_run if way == "engine" else plain_run)(case, settings)
        except (RuntimeError, ValueError) as exc:  # torch.OutOfMemoryError is a RuntimeError
            result.errors[way] = first_line(exc)
            log(f"  {way} failed: {result.errors[way]}")
            continue
        finally:
            release_memory(settings.device)
        if way == "engine":
            result.params, result.gflops = out["params"], out["gflops"]
            result.engine_images_per_s, result.engine_warmup_s = out["images_per_s"], out["warmup_s"]
            result.engine_reported_images_per_s = out["reported_images_per_s"]
        else:
            result.plain_images_per_s = out["images_per_s"]
    if math.isnan(result.gflops):
        result.gflops = model_gflops(case)
    result.engine_mfu = mfu(result.engine_images_per_s, result.gflops, peak_tflops)
    result.plain_mfu = mfu(result.plain_images_per_s, result.gflops, peak_tflops)
    result.ratio = result.engine_images_per_s / result.plain_images_per_s
    return result


def model_gflops(case: Case) -> float:
    from stability.models import build_model, model_info

    with torch.device("meta"):
        model = build_model(case.model, 10, case.img_size)
    return float(model_info(model, case.img_size)["gflops"])


def as_dict(result: Result) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(result).items()}
