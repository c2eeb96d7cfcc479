"""`python -m stability.data prepare SRC --size S --out DST`: an ImageNet-style folder to uint8 shards.

A study reads them as `dataset: {name: shards, root: DST, img_size: ...}`. Exit 0 when done, 2 on
bad input (one line: a missing folder, an undecodable image, an unreachable store), 130 on Ctrl-C
(the shards written so far are kept: run the same command again to finish).
"""

from __future__ import annotations

import argparse
import os
import sys

from stability.cli import EXIT_INTERRUPTED, fail, positive_int

def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m stability.data", description="Prepare datasets for studies.")
    commands = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    c = commands.add_parser(
        "prepare", help="decode an ImageNet-style folder once into uint8 shards",
        description="Decode SRC/train/<class>/* and SRC/val/<class>/* once into uint8 shards at short side S "
        "(central square kept) under DST, a folder or a pyarrow.fs URI (s3://bucket/path). Each shard is "
        "written atomically; run again after a stop to write only what is missing. A study reads them as "
        "dataset: {name: shards, root: DST, img_size: ...}.")
    c.add_argument("src", metavar="SRC", help="folder holding train/<class>/ and val/<class>/ images")
    c.add_argument("--size", type=positive_int, required=True, metavar="S", help="short side in pixels, e.g. 160 or 256")
    c.add_argument("--out", required=True, metavar="DST", help="output folder or URI")
    c.add_argument("--images-per-shard", type=positive_int, default=1024, metavar="N", help="images per shard (default 1024)")
    c.add_argument("--workers", type=positive_int, default=os.cpu_count() or 1, metavar="W",
                   help="decoding processes (default: one per CPU core)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from stability.data.checks import DatasetError
    from stability.data.prepare import prepare
    from stability.data.shard_index import shown

    columns = (TextColumn("prepare"), BarColumn(), MofNCompleteColumn(), TextColumn("images"), TimeRemainingColumn())
    try:
        with Progress(*columns, console=Console(stderr=True)) as bar:
            task = bar.add_task("prepare", total=None)
            index = prepare(args.src, args.size, args.out, images_per_shard=args.images_per_shard,
                            workers=args.workers, progress=lambda done, total: bar.update(task, completed=done,
                                                                                          total=total))
    except DatasetError as exc:
        fail(str(exc))
    except OSError as exc:  # the output store: unreachable, refused, full
        fail(f"prepare: cannot write {shown(args.out)}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
    except KeyboardInterrupt:
        print("interrupted; the shards written are kept: run the same command again to finish", file=sys.stderr)
        return EXIT_INTERRUPTED
    counts = {split: sum(s["count"] for s in shards) for split, shards in index["splits"].items()}
    print(f"{counts['train']:,} train and {counts['val']:,} val images of {len(index['classes'])} classes at "
          f"{index['size']} px -> {shown(args.out)}; use dataset: {{name: shards, root: {shown(args.out)}}}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
