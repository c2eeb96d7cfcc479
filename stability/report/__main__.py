"""`python -m stability.report DIR [DIR ...]`: the stability report of one or more studies.

Reads each results folder (schema v1), computes the statistics and figures with `analysis`,
and writes one self-contained HTML file (plotly.js inlined, no network requests). `--json`
prints the summary on stdout; `--export-dir` writes every figure as SVG for papers. Knob
columns with a few values (factors, e.g. `distillation.type`) get EDFs split by them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from stability.cli import UsageError, fail
from stability.results.schema import BASE_COLUMNS, OUTCOME_COLUMNS, REQUIRED_COLUMNS

EXPORT_HINT = ("install kaleido (pip install kaleido) and Chrome/Chromium (e.g. apt-get install chromium, "
               "or point BROWSER_PATH at a Chrome binary)")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m stability.report",
        description="Write the stability report (EDFs, statistics, KS tests) of one or more result folders "
                    "as one offline HTML file.",
        epilog="examples:\n  python -m stability.report runs/default\n"
               "  python -m stability.report runs/a runs/b --out compare.html --json > summary.json\n"
               "  python -m stability.report runs/default --export-dir figures/",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("dirs", nargs="+", metavar="DIR", help="a study's results folder (<storage>/<study>)")
    p.add_argument("--out", default=None, help="HTML file to write (default: DIR/report.html for one folder, "
                                               "./report.html for several)")
    p.add_argument("--json", action="store_true",
                   help="print the summary (groups, KS tests, patch similarity by layer, factors) as JSON on stdout")
    p.add_argument("--export-dir", default=None, metavar="D", help="also write every figure as SVG into D")
    p.add_argument("--split-by", action="append", default=[], metavar="COLUMN",
                   help="split groups further by a trials column (repeatable), e.g. a sampled knob such as "
                        "mixup or patch_losses.cosine; knobs with 2-8 values get their own EDF sections anyway")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resamples (default: 0)")
    return p.parse_args(argv)


# --- loading ----------------------------------------------------------------------------------

def load(dirs: list[str]) -> tuple[pd.DataFrame, pd.DataFrame, list[dict[str, Any]]]:
    """Trials and curves of every folder, concatenated, and one record per folder (path,
    study names, spec). Study names that repeat across folders get the folder appended."""
    from stability.results.store import read_study

    loaded = []
    for d in dict.fromkeys(dirs):  # a folder named twice is read once
        path = Path(d)
        if not path.is_dir():
            raise UsageError(f"{d}: no such results folder")
        try:
            res = read_study(path)
        except FileNotFoundError:
            raise UsageError(f"{d}: holds no results (expected {path / 'trials.parquet'})") from None
        except Exception as exc:  # a damaged or foreign Parquet file
            raise UsageError(f"{d}: cannot read results: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
        if res.trials.empty:
            raise UsageError(f"{d}: holds no results (trials.parquet has no rows)")
        missing = [c for c in REQUIRED_COLUMNS if c not in res.trials]
        if missing:
            raise UsageError(f"{d}: trials table lacks column(s) {', '.join(missing)}; not a stability results folder")
        loaded.append(res)
    names = [set(r.trials["study"].astype(str)) for r in loaded]
    trials, curves, records = [], [], []
    for res, own in zip(loaded, names):
        t, c = res.trials.copy(), res.curves.copy()
        t["study"], c["study"] = t["study"].astype(str), c["study"].astype(str)
        clash = {s for s in own if sum(s in other for other in names) > 1}
        for s in clash:
            label = f"{s} ({res.path})"
            t.loc[t["study"] == s, "study"] = label
            c.loc[c["study"] == s, "study"] = label
        trials.append(t)
        curves.append(c)
        records.append({"path": str(res.path), "studies": sorted(t["study"].unique()), "spec": res.spec})
    return pd.concat(trials, ignore_index=True), pd.concat(curves, ignore_index=True), records


# --- summary ----------------------------------------------------------------------------------

def _json_value(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _json_value(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_value(v) for v in x]
    if hasattr(x, "item") and not isinstance(x, (str, bytes)):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if x is pd.NA:
        return None
    return x


def summary(trials: pd.DataFrame, split_by: list[str], params: list[str], seed: int = 0,
            factors: list[str] = ()) -> dict[str, Any]:
    """The summary as plain data: `groups`, `ks` (model pairs), `ks_optimizers`,
    `patch_cos_sim_by_layer` (per group and block: n, median, q25, q75, mean; empty when the
    study recorded none) and `factors` (per factor column: its levels and the groups split by it)."""
    from analysis import factor_levels, group_stats, ks_models, ks_optimizers, layer_similarity_table

    stats = group_stats(trials, split_by, params, seed=seed)
    ks = ks_models(trials, split_by)
    ks_opt = ks_optimizers(trials, split_by)
    return _json_value({
        "groups": stats.to_dict(orient="records"),
        "ks": ks.to_dict(orient="records"),
        "ks_optimizers": ks_opt.to_dict(orient="records"),
        "patch_cos_sim_by_layer": layer_similarity_table(trials, split_by).to_dict(orient="records"),
        "factors": [{"column": f, "levels": factor_levels(trials, f),
                     "groups": group_stats(trials, [*split_by, f], params, seed=seed).to_dict(orient="records")}
                    for f in factors],
    })


def write_atomic(path: Path, text: str) -> None:
    """Write text through a temporary file renamed into place, with the usual permissions."""
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-report-", suffix=".html", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --- export -----------------------------------------------------------------------------------

def export_figures(figures: list[tuple[str, Any]], out_dir: Path) -> list[Path]:
    """Write each figure as `<name>.svg` into out_dir; RuntimeError with what to install when
    the machine cannot render them."""
    try:
        import kaleido  # noqa: F401
    except ImportError:
        raise RuntimeError(f"static export needs kaleido: {EXPORT_HINT}") from None
    import plotly.io as pio

    from analysis.plots import figure_to_svg_name

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{figure_to_svg_name(name)}.svg" for name, _ in figures]
    try:
        pio.write_images([fig for _, fig in figures], paths, format="svg")
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RuntimeError(f"static export failed ({first[:200]}): {EXPORT_HINT}") from None
    return paths


# --- the verb ---------------------------------------------------------------------------------

def check_split_by(trials: pd.DataFrame, split_by: list[str]) -> None:
    """UsageError naming the columns that can be used when --split-by names another one."""
    from analysis import split_choices

    choices = split_choices(trials, REQUIRED_COLUMNS + OUTCOME_COLUMNS)
    for col in split_by:
        if col not in choices:
            why = "not a knob column (a key or an outcome)" if col in trials else "no such trials column"
            raise UsageError(f"--split-by {col}: {why}; choose from: {', '.join(choices) or '(none)'}")


def report(argv: list[str] | None = None) -> int:
    from analysis import factor_columns, sampled_columns
    from stability.report.html import build_page

    args = parse_args(argv)
    trials, curves, records = load(args.dirs)
    check_split_by(trials, args.split_by)
    out = Path(args.out) if args.out else (Path(args.dirs[0]) / "report.html" if len(args.dirs) == 1 else Path("report.html"))
    if out.is_dir():
        raise UsageError(f"--out {out}: is a folder; give a file name")
    params = []
    for rec in records:
        params += [p for p in sampled_columns(trials, rec["spec"]) if p not in params]
    factors = factor_columns(trials, BASE_COLUMNS, exclude=[*args.split_by, *params])
    data = summary(trials, args.split_by, params, args.seed, factors)
    html_text, figures = build_page(trials, curves, records, data, args.split_by, params, args.seed)
    write_atomic(out, html_text)
    print(str(out), file=sys.stderr if args.json else sys.stdout)
    if args.export_dir:
        try:
            paths = export_figures(figures, Path(args.export_dir))
            print(f"{len(paths)} figure(s) written to {args.export_dir}", file=sys.stderr)
        except RuntimeError as exc:
            print(str(exc), file=sys.stderr)
    if args.json:
        print(json.dumps(data, allow_nan=False))
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        return report(argv)
    except UsageError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        print("interrupted; no report written.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
