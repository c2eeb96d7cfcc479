"""`python -m stability.report DIR [DIR ...]`: the stability report of one or more studies.

Reads each results folder (schema v1), computes the statistics and figures with `analysis`,
and writes one self-contained HTML file (plotly.js inlined, no network requests). `--json`
prints the summary on stdout; `--export-dir` writes every figure as SVG for papers. Knob
columns with a few values (factors, e.g. `distillation.type`) get EDFs split by them. Figures
are small multiples, one panel per model size or family when model names say it (`--facet-by`).
A study still running (its `running.json`) gets a "Running now" table.
Exit 0 when the report is written, 2 on bad input (one line on stderr), 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from stability.analysis.facets import FACET_BY
from stability.cli import UsageError, fail
from stability.report.build import build
from stability.report.columns import check_split_by
from stability.report.export import export_figures
from stability.report.load import load
from stability.report.render import render
from stability.results.files import NotARegularFileError, atomic_write_text, check_writable
from stability.results.storage import location


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
    p.add_argument("dirs", nargs="+", metavar="DIR", help="a study's results folder (<storage>/<study>) or its URI; "
                   "env:NAME reads it from the environment variable NAME (a URI with credentials stays out of `ps`)")
    p.add_argument("--out", default=None, help="HTML file to write (default: DIR/report.html for one folder, "
                                               "./report.html for several)")
    p.add_argument("--json", action="store_true",
                   help="print the summary (groups, KS tests, patch similarity by layer, factors) as JSON on stdout")
    p.add_argument("--export-dir", default=None, metavar="D", help="also write every figure as SVG into D")
    p.add_argument("--split-by", action="append", default=[], metavar="COLUMN",
                   help="split groups further by a trials column (repeatable), e.g. a sampled knob such as "
                        "mixup or patch_losses.cosine; knobs with 2-8 values get their own EDF sections anyway")
    p.add_argument("--facet-by", choices=FACET_BY, default="auto",
                   help="draw each figure as small multiples, one panel per model size (vit_p_1gf, vit_c_1gf and "
                        "regnety_1gf share the 1gf panel), family (vit_p, vit_c, ...) or model, or in one panel "
                        "(none); auto (default): by size when model names give several sizes, else one panel up to "
                        "6 models, else by family or model")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resamples (default: 0)")
    p.add_argument("--to-mlflow", default=None, metavar="URI",
                   help="instead of the page: export each study to MLflow at this tracking URI, one parent run per "
                        "study and one child run per trial; a trial already there is not added again "
                        "(pip install \"stability[mlflow]\")")
    args = p.parse_args(argv)
    args.dirs = [from_environment(d) for d in args.dirs]
    args.out = from_environment(args.out) if args.out else args.out
    return args


def from_environment(value: str) -> str:
    """A DIR or --out given as `env:NAME` is the value of that environment variable: a URI that holds
    credentials stays off the command line, which every user of the machine can read (`ps`)."""
    if not value.startswith("env:"):
        return value
    name = value[4:]
    if not os.environ.get(name):
        raise UsageError(f"{value}: the environment variable {name} is not set")
    return os.environ[name]


def out_path(args: argparse.Namespace) -> Path:
    """--out, else report.html beside the results of one folder or in the working folder. Checked
    before any work: a symbolic link is written through (its target is replaced atomically, in the
    target's folder); a folder, FIFO, device or socket, or a place that refuses a new file, is a
    UsageError."""
    out = location(args.out) if args.out else (location(args.dirs[0]) / "report.html" if len(args.dirs) == 1
                                               else Path("report.html"))
    flag = "--out" if args.out else "report file"
    try:
        check_writable(out)
    except NotARegularFileError as exc:
        target = f" (the link's target {exc.filename})" if out.is_symlink() else ""
        raise UsageError(f"{flag} {out}{target}: {exc.strerror}") from None
    except OSError as exc:
        where = f" in {exc.filename}" if exc.filename else ""
        raise UsageError(f"{flag} {out}: cannot write a file{where}: {exc.strerror or exc}") from None
    return out


def report(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.to_mlflow is not None:
        from stability.report.tracking import to_mlflow

        return to_mlflow(args.dirs, args.to_mlflow)
    trials, curves, records = load(args.dirs)
    check_split_by(trials, args.split_by)
    out = out_path(args)  # before the statistics and figures are computed
    data, page = build(trials, curves, records, args.split_by, args.seed, args.facet_by)
    try:
        atomic_write_text(out, render(page))
    except OSError as exc:  # the place changed since out_path checked it
        raise UsageError(f"{'--out' if args.out else 'report file'} {out}: cannot write it: {exc.strerror or exc}") from None
    print(str(out), file=sys.stderr if args.json else sys.stdout)
    if args.export_dir:
        try:
            paths = export_figures([(f.name, f.figure) for f in page.figures()], Path(args.export_dir))
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
