"""The GPU comparison's table, target lines and JSON record."""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
from typing import Any, Sequence

import torch

from benchmarks.gpu import Result, Settings, as_dict
from benchmarks.targets import FOUR_GF, MFU_TARGET, RATIO_TARGET
from benchmarks.table import print_table

COLUMNS = ("model", "px", "batch", "GF", "compiled", "engine img/s", "engine MFU", "warm-up s",
           "plain img/s", "plain MFU", "engine/plain")


def machine(device: torch.device) -> dict[str, Any]:
    info = {"host": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "device": str(device)}
    try:
        import timm

        info["timm"] = timm.__version__
    except ImportError:
        pass
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["gpu"] = props.name
        info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
    return info


def _num(value: float, fmt: str) -> str:
    return format(value, fmt) if math.isfinite(value) else "-"


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%" if math.isfinite(value) else "-"


def rows(results: Sequence[Result]) -> list[list[str]]:
    return [[r.model, str(r.img_size), str(r.batch_size), _num(r.gflops, ".3g"), "yes" if r.compiled else "no",
             _num(r.engine_images_per_s, ",.0f"), _pct(r.engine_mfu), _num(r.engine_warmup_s, ".1f"),
             _num(r.plain_images_per_s, ",.0f"), _pct(r.plain_mfu), _num(r.ratio, ".2f") + "x"]
            for r in results]


def target_lines(results: Sequence[Result]) -> list[str]:
    """Each issue target, met or not, per model it applies to."""
    lines = []
    big = [r for r in results if math.isfinite(r.gflops) and r.gflops >= FOUR_GF]
    for r in big:
        verdict = "met" if r.engine_mfu >= MFU_TARGET else "NOT met"
        lines.append(f"MFU >= {MFU_TARGET:.0%} ({r.model}, {r.gflops:.1f} GF): {_pct(r.engine_mfu)} {verdict}")
    for r in results:
        verdict = "met" if r.ratio >= RATIO_TARGET else "NOT met"
        lines.append(f"engine/plain >= {RATIO_TARGET:.0f}x ({r.model}): {_num(r.ratio, '.2f')}x {verdict}")
    for r in results:
        for way, error in r.errors.items():
            lines.append(f"{r.model} {way} failed: {error}")
    return lines


def show(results: Sequence[Result], peak: dict[str, Any], settings: Settings, info: dict[str, Any]) -> None:
    where = info.get("gpu", f"{info['cpus']}-CPU {platform.machine()}")
    compile_note = ("not compiled" if not settings.compile else "compiled" if settings.compile_models is None
                    else f"compiled for {', '.join(sorted(settings.compile_models))} only")
    if settings.device.type == "cuda":
        compile_note += ", channels-last conv stems"
    print(f"\npeak: {peak['tflops']:.4g} TFLOP/s ({peak['dtype']} matmul {peak['size']}^3 on {where}); "
          f"engine {compile_note}, {settings.epochs} timed epochs of {settings.steps} steps after one warm-up epoch; "
          f"plain loop {settings.steps} timed steps, {settings.workers} DataLoader workers")
    if settings.device.type != "cuda":
        print("CPU run: a smoke test of the benchmark, not a GPU figure (fp32 everywhere, no bf16)")
    print_table("Training throughput: engine vs plain PyTorch loop", COLUMNS, rows(results))
    for line in target_lines(results):
        print(line)


def record(results: Sequence[Result], peak: dict[str, Any], settings: Settings, info: dict[str, Any],
           command: str) -> dict[str, Any]:
    return {
        "date": datetime.date.today().isoformat(),
        "command": command,
        "machine": info,
        "settings": {"steps": settings.steps, "epochs": settings.epochs, "warmup_steps": settings.warmup_steps,
                     "workers": settings.workers, "compile": settings.compile,
                     "compile_models": sorted(settings.compile_models) if settings.compile_models is not None else None,
                     "num_classes": settings.num_classes,
                     "engine_channels_last": settings.device.type == "cuda",
                     "float32_matmul_precision": torch.get_float32_matmul_precision()},
        "peak": peak,
        "results": [as_dict(r) for r in results],
    }


def write_json(path: str, data: dict[str, Any]) -> None:
    with open(path, "w") as fh:
        json.dump(data, fh, indent=2)
        fh.write("\n")
