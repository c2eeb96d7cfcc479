"""Run a module as `python -m MODULE` would, with some packages made unimportable.

    python -m benchmarks.without ray,optuna,plotly,stability.analysis pytest tests/test_cuda.py -q

The GPU check runs every part this way, so a part that reaches for Ray, Optuna, Plotly or the
`stability.analysis` layer fails here as it would on a GPU machine that has none of them. Child processes
that fork (DataLoader workers) keep the block; processes started afresh do not.
"""

from __future__ import annotations

import importlib.abc
import runpy
import sys


def within(name: str, packages) -> bool:
    """Whether module `name` is one of `packages` (dotted names allowed) or inside one."""
    return any(name == p or name.startswith(p + ".") for p in packages)


class Hidden(importlib.abc.MetaPathFinder):
    """Refuses every import of the named packages (dotted names allowed) and their submodules."""

    def __init__(self, packages: set[str]):
        self.packages = packages

    def find_spec(self, name, path=None, target=None):
        if within(name, self.packages):
            raise ModuleNotFoundError(f"No module named {name!r} (hidden by benchmarks.without)", name=name)
        return None


def hide(packages: set[str]) -> None:
    """Make `packages` unimportable in this process (those already imported stay)."""
    sys.meta_path.insert(0, Hidden(packages))


def main(argv: list[str]) -> None:
    if len(argv) < 2 or argv[0] in ("-h", "--help"):
        print(__doc__)
        raise SystemExit(0 if argv[:1] in (["-h"], ["--help"]) else 2)
    packages, module, *args = argv
    hide({p for p in packages.split(",") if p})
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
