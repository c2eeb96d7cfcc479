"""The GPU check's summary: test outcomes, the issue's targets with pass/miss, and the Markdown page.

Pure functions of the parts' records (plain dicts read from their JSON files); no torch, so the
check can summarise whatever its parts left behind, even when a part crashed or ran out of time.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from typing import Any

from benchmarks.targets import (
    CIFAR_TARGET_MINUTES,
    FUSED_IMG_SIZE,
    FUSED_K,
    FUSED_TARGET,
    GPU_MODELS,
    MFU_IMG_SIZE,
    MFU_MODEL,
    MFU_TARGET,
    RATIO_TARGET,
)

PYTEST_LINE = re.compile(r"^(?P<test>\S+::\S+) (?P<outcome>PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)\b", re.MULTILINE)
LOG_OUTCOMES = {"PASSED": "passed", "FAILED": "failed", "ERROR": "error", "SKIPPED": "skipped", "XFAIL": "skipped",
                "XPASS": "passed"}


def junit_summary(path: str) -> dict[str, Any]:
    """Counts and per-test outcomes from a pytest junit XML file."""
    root = ET.parse(path).getroot()
    tests = []
    for case in root.iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}".lstrip(":")
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            found = case.find(tag)
            if found is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                message = (found.get("message") or "").splitlines()[0][:300] if found.get("message") else ""
                break
        tests.append({"test": name, "outcome": outcome, "message": message, "time_s": float(case.get("time", 0))})
    return counted(tests)


def pytest_log_summary(text: str) -> dict[str, Any]:
    """Counts and outcomes from `pytest -v` output: what is left when pytest was stopped before its XML."""
    return counted([{"test": m["test"], "outcome": LOG_OUTCOMES[m["outcome"]], "message": "", "time_s": None}
                    for m in PYTEST_LINE.finditer(text)])


def counted(tests: list[dict[str, Any]]) -> dict[str, Any]:
    counts = {key: sum(t["outcome"] == key for t in tests) for key in ("passed", "failed", "error", "skipped")}
    return {**counts, "tests": tests}


def finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def target(name: str, goal: str, value: float | None, threshold: float, higher_is_better: bool, unit: str,
           conditions: str, as_specified: bool) -> dict[str, Any]:
    """One target: its figure, `pass` / `miss` (or `no figure`), and whether it was measured as the target says."""
    if not finite(value):
        verdict = "no figure"
    else:
        verdict = "pass" if (value >= threshold if higher_is_better else value <= threshold) else "miss"
    return {"name": name, "goal": goal, "value": value if finite(value) else None, "unit": unit,
            "verdict": verdict, "conditions": conditions, "as_specified": bool(as_specified and finite(value))}


def record_of(parts: dict[str, Any], name: str) -> dict[str, Any]:
    return (parts.get(name) or {}).get("record") or {}


def targets(parts: dict[str, Any], device: str) -> list[dict[str, Any]]:
    """The issue's targets against the parts' figures; `as_specified` is false where a figure was taken
    under other conditions (a CPU rehearsal, another size, no compile, K other than 16)."""
    on_gpu = device == "cuda"
    rows = {r["model"]: r for r in record_of(parts, "gpu").get("results", [])}
    out = []
    mfu = rows.get(MFU_MODEL, {})
    out.append(target(
        "mfu", f"engine MFU >= {MFU_TARGET:.0%}, {MFU_MODEL} at {MFU_IMG_SIZE} px, bf16, compiled",
        mfu.get("engine_mfu"), MFU_TARGET, True, "fraction",
        f"{mfu.get('img_size', '?')} px, compiled={mfu.get('compiled')}, {device}",
        on_gpu and mfu.get("img_size") == MFU_IMG_SIZE and mfu.get("compiled") is True))
    for model, px in GPU_MODELS.items():
        row = rows.get(model, {})
        out.append(target(
            f"engine_vs_plain_{model}", f"engine >= {RATIO_TARGET:g}x plain loop, {model} at {px} px", row.get("ratio"),
            RATIO_TARGET, True, "x", f"{row.get('img_size', '?')} px, compiled={row.get('compiled')}, {device}",
            on_gpu and row.get("img_size") == px))
    fused = record_of(parts, "fused")
    settings = fused.get("settings", {})
    out.append(target(
        "fused", f"fused K={FUSED_K} at {FUSED_IMG_SIZE} px >= {FUSED_TARGET:g}x one by one", fused.get("ratio"),
        FUSED_TARGET, True, "x", f"K={settings.get('k', '?')}, {settings.get('img_size', '?')} px, {device}",
        on_gpu and settings.get("k") == FUSED_K and settings.get("img_size") == FUSED_IMG_SIZE))
    cifar = record_of(parts, "cifar_projection")
    cset = cifar.get("settings", {})
    out.append(target(
        "cifar10_lr_wd_minutes", f"projected cifar10_lr_wd (256 trials x 50 epochs) <= {CIFAR_TARGET_MINUTES:g} min",
        cifar.get("projected_minutes"), CIFAR_TARGET_MINUTES, False, "min",
        f"K={cset.get('k', '?')}, {cset.get('fraction', '?')} of an epoch timed, {device}",
        on_gpu and cset.get("k") == FUSED_K))
    return out


def _fmt(value: Any, spec: str = ".3g", suffix: str = "") -> str:
    return f"{format(value, spec)}{suffix}" if finite(value) else "-"


def _table(columns: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "| " + " | ".join("---" for _ in columns) + " |"]
    lines += ["| " + " | ".join(str(c).replace("|", "/") for c in row) + " |" for row in rows]
    return lines + [""]


def _value(t: dict[str, Any]) -> str:
    if t["value"] is None:
        return "-"
    return f"{100 * t['value']:.1f}%" if t["unit"] == "fraction" else f"{t['value']:.3g} {t['unit']}"


def markdown(check: dict[str, Any]) -> str:
    """The Markdown page of a check record (see gpu_check.assemble)."""
    env = check.get("environment") or {}
    where = env.get("gpu") or f"CPU rehearsal ({env.get('cpus', '?')} CPUs): no figure here is a GPU figure"
    lines = [f"# GPU check, {check['date']}: {where}", "",
             f"- command: `{check['command']}`",
             f"- overall: {'every part ran' if check['ok'] else 'a part FAILED'}; wall time {check['wall_s']:.0f} s "
             f"(limit {check['budget_s']:.0f} s for the parts)",
             f"- python {env.get('python', '?')}, torch {env.get('torch', '?')}, timm {env.get('timm', '?')}, "
             f"pydantic {env.get('pydantic', '?')} (from {env.get('pydantic_from', '?')})", ""]
    lines += ["## Parts", ""] + _table(["part", "status", "wall s", "limit s", "note"], [
        [name, p["status"], _fmt(p.get("wall_s"), ".0f"), _fmt(p.get("timeout_s"), ".0f"), p.get("note", "")]
        for name, p in check["parts"].items()])
    lines += ["## Targets", ""] + _table(["target", "measured", "verdict", "measured under"], [
        [t["goal"], _value(t), t["verdict"] if t["as_specified"] or t["verdict"] == "no figure"
         else f"{t['verdict']} (not as specified)", t["conditions"]] for t in check["targets"]])
    tests = (check["parts"].get("cuda_tests") or {}).get("tests") or {}
    if tests.get("tests"):
        lines += ["## CUDA tests", ""] + _table(["test", "outcome", "s", "message"], [
            [t["test"].split("::")[-1], t["outcome"], _fmt(t.get("time_s"), ".1f"), t["message"]]
            for t in tests["tests"]])
    gpu = record_of(check["parts"], "gpu")
    if gpu.get("results"):
        peak = gpu.get("peak", {})
        lines += [f"## Engine vs plain loop (peak {peak.get('dtype', '?')} matmul {_fmt(peak.get('tflops'), '.4g')} "
                  "TFLOP/s)", ""] + _table(
            ["model", "px", "batch", "compiled", "engine img/s", "engine MFU", "warm-up s", "plain img/s", "ratio",
             "errors"],
            [[r["model"], r["img_size"], r["batch_size"], "yes" if r.get("compiled") else "no",
              _fmt(r.get("engine_images_per_s"), ",.0f"), _fmt(100 * r["engine_mfu"] if finite(r.get("engine_mfu"))
                                                               else None, ".1f", "%"),
              _fmt(r.get("engine_warmup_s"), ".1f"), _fmt(r.get("plain_images_per_s"), ",.0f"),
              _fmt(r.get("ratio"), ".2f", "x"), "; ".join(f"{k}: {v}" for k, v in (r.get("errors") or {}).items())]
             for r in gpu["results"]])
    fused = record_of(check["parts"], "fused")
    if fused.get("rows"):
        lines += [f"## Fused trials ({fused['settings']['dataset']} at {fused['settings']['img_size']} px, "
                  f"epochs: {fused['settings']['epochs']})", ""] + _table(
            ["model", "K", "one by one s", "fused s", "ratio", "max abs top-1 diff"],
            [[r["model"], r["k"], _fmt(r["one_by_one_s"], ".1f"), _fmt(r["fused_s"], ".1f"),
              _fmt(r["ratio"], ".2f", "x"), _fmt(r["max_abs_top1_diff"], ".2f")] for r in fused["rows"]])
    cifar = record_of(check["parts"], "cifar_projection")
    if cifar.get("rows"):
        cs = cifar["settings"]
        lines += [f"## {cs['study']} projection (synthetic CIFAR-10 shape, fused K={cs['k']}, "
                  f"{cs['fraction']:g} of each epoch timed, {cs['study_epochs']} epochs per trial)", ""] + _table(
            ["model", "K", "batch", "epoch s", "overhead s", "groups", "projected min"],
            [[r["model"], r["k"], r["batch_size"], _fmt(r["epoch_s"], ".2f"), _fmt(r["overhead_s"], ".1f"),
              r["groups"], _fmt(r["projected_s"] / 60, ".1f")] for r in cifar["rows"]])
        lines += [f"Projected whole study: {_fmt(cifar.get('projected_minutes'), '.1f')} min "
                  f"(target <= {CIFAR_TARGET_MINUTES:g} min).", ""]
    return "\n".join(lines)
