"""The layers of docs/architecture.md hold: the import contracts in pyproject.toml ([tool.importlinter]) are kept."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import REPO


def lint_imports() -> str:
    found = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    return found


def test_import_contracts_are_kept():
    out = subprocess.run([lint_imports(), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout and out.stdout.count(" KEPT") >= 6


def test_each_layer_is_one_package():
    packages = {p.parent.name for p in (REPO / "stability").glob("*/__init__.py")}
    assert {"spec", "train", "sweep", "results", "report", "models", "data"} <= packages
    assert (REPO / "analysis" / "__init__.py").is_file() and (REPO / "benchmarks" / "__init__.py").is_file()
    flat = sorted(p.name for p in (REPO / "stability").glob("*.py"))
    assert flat == ["__init__.py", "cli.py", "sampling.py"], flat


DOCUMENT = re.compile(r"(?<![\w.-])((?:[\w-]+/)*[A-Z][A-Z_]*\.md|docs/[\w/.-]+\.md)\b")


def test_no_file_cites_a_document_the_repository_lacks():
    """Code, tests, docs and configuration cite only documents a clone of the repository holds."""
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    cited = {}
    for name in tracked:
        if Path(name).suffix in (".py", ".md", ".toml", ".yaml", ".sh", ".j2", ".cfg") and (REPO / name).is_file():
            for match in DOCUMENT.finditer((REPO / name).read_text(encoding="utf-8", errors="replace")):
                cited.setdefault(match.group(1), set()).add(name)
    missing = {doc: sorted(where) for doc, where in cited.items() if not (REPO / doc).is_file()}
    assert "README.md" in cited and "docs/architecture.md" in cited
    assert missing == {}, missing


def test_every_test_the_reliability_page_names_exists():
    """docs/reliability.md names the test of each promise (`file.py::test`, then `::test` in the same
    file): each must be a test function of that file."""
    text = (REPO / "docs" / "reliability.md").read_text()
    missing, current = [], None
    for match in re.finditer(r"(tests/)?(test_\w+\.py)?::(test_\w+)|(tests/)?(test_\w+\.py)\b", text):
        current = match.group(2) or match.group(5) or current
        name = match.group(3)
        if name is None:
            continue
        source = (REPO / "tests" / current).read_text() if current and (REPO / "tests" / current).is_file() else ""
        if not re.search(rf"^def {name}\(", source, re.MULTILINE):
            missing.append(f"{current}::{name}")
    assert missing == []


def test_the_readme_layout_names_every_module():
    """README's "Layout" lists every module of the package (a new module is named there too)."""
    text = (REPO / "README.md").read_text()
    layout = text[text.index("## Layout"):]
    layout = layout[layout.index("```"):layout.index("```", layout.index("```") + 3)]
    words = set(re.findall(r"[\w]+", layout))
    modules = {p.stem for p in (REPO / "stability").rglob("*.py") if p.stem != "__init__"}
    assert sorted(modules - words) == []
