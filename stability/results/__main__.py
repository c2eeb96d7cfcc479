"""`python -m stability.results compact STUDY`: a study's many small result files as a few large ones.

Exit 0 when done, 2 on bad input or an unreachable store (one line), 130 on Ctrl-C (the study
reads as before; run it again to finish).
"""

from __future__ import annotations

import argparse
import sys

from stability.cli import EXIT_INTERRUPTED, EXIT_USAGE, fail, first_line, positive_int
from stability.results.compact import ROWS_PER_FILE, compact
from stability.results.lock import LockHeld, study_lock
from stability.results.storage import location, public_uri
from stability.results.store import ResultsStore, StoreError

def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m stability.results", description="Maintain a study folder's results.")
    commands = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    c = commands.add_parser(
        "compact", help="rewrite many small result files as a few large ones",
        description="Rewrite trials.parquet/ and curves.parquet/ of a study as a few large files (sorted by trial "
        "id; a trial's curve never split), then delete the files they replace. The study reads the same "
        "before, during and after; --resume and --add-samples work on it as before. Takes the study lock: "
        "refused while a sweep writes the study.",
        epilog="example: python -m stability.results compact runs/default; "
        "python -m stability.results compact 's3://bucket/runs/paper?endpoint_override=host:9000&scheme=http'")
    c.add_argument("study", help="the study folder, or a pyarrow.fs URI of it (s3://bucket/runs/<study>)")
    c.add_argument("--rows-per-file", type=positive_int, default=ROWS_PER_FILE,
                   help=f"rows per file at most (a trial's curve is never split; default {ROWS_PER_FILE})")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        root = location(args.study)
        if not ResultsStore(root).trials_dir.exists():
            fail(f"{root}: holds no results (expected {ResultsStore(root).trials_dir})")
        with study_lock(root):
            compact(root, args.rows_per_file)
    except (LockHeld, StoreError) as exc:
        fail(str(exc))
    except (OSError, ValueError) as exc:  # an unreachable store, a URI pyarrow cannot resolve
        fail(f"{public_uri(args.study)}: {first_line(exc)}; the study reads as before, run again when it is reachable",
             EXIT_USAGE)
    except KeyboardInterrupt:
        print("interrupted; the study reads as before (its rows are whole in the old or the new files); run the "
              "same command again to finish", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
