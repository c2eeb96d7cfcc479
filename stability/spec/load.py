"""Loading a study: from a YAML file or a built-in name, with `--set` overrides, into a validated
`StudySpec`; the built-in studies; `--help-spec`'s list of keys. Reads files only, writes none."""

from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from stability.spec.errors import SpecError, short, validation_message
from stability.spec.knobs import KnobPath, parse_path, set_path
from stability.spec.study import StudySpec, nested_section
from stability.spec.trial import Recipe
from stability.spec.yaml_loader import MAX_SPEC_BYTES, check_size, load_yaml


def spec_reference() -> list[str]:
    """One line per spec key, dotted, with its default and description (`--help-spec`)."""
    lines: list[str] = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            key = f"{prefix}{name}"
            section = nested_section(model, name)
            described = field.is_required() or section is not None or "default" in (field.description or "")
            default = "" if described else f" (default {field.get_default(call_default_factory=True)!r})"
            lines.append(f"{key:42s} {field.description or ''}{default}")
            if section is not None:
                walk(section, f"{key}.")
            elif name == "train":
                walk(Recipe, f"{key}.")

    walk(StudySpec, "")
    return lines


def builtin_names() -> list[str]:
    """Names of the built-in studies shipped in the `search_spaces` package."""
    root = importlib.resources.files("stability.search_spaces")
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


def builtin_description(name: str) -> str:
    text = (importlib.resources.files("stability.search_spaces") / f"{name}.yaml").read_text()
    data = yaml.safe_load(text) or {}
    return str(data.get("description", "")).strip().splitlines()[0] if data.get("description") else ""


def read_spec_source(study: str) -> tuple[str, str]:
    """(yaml text, source label) of a study given as a path or a built-in name."""
    path = Path(study)
    if study.endswith((".yaml", ".yml")) or path.exists():
        if not path.is_file():
            raise SpecError(f"study file {study} does not exist")
        try:
            with path.open("rb") as file:
                data = file.read(MAX_SPEC_BYTES + 1)  # never more: the file may be huge or growing
                size = max(len(data), path.stat().st_size)
            if size > MAX_SPEC_BYTES:
                raise SpecError(f"{study}: the study file is {size:,} bytes; the limit is {MAX_SPEC_BYTES:,} bytes (1 MB)")
            return data.decode("utf-8"), str(path)
        except (OSError, UnicodeDecodeError) as exc:
            raise SpecError(f"cannot read study file {study}: {exc}") from None
    if study not in builtin_names():
        raise SpecError(f"unknown study {study!r}: not a file and not a built-in; built-ins: {', '.join(builtin_names())}")
    return (importlib.resources.files("stability.search_spaces") / f"{study}.yaml").read_text(), f"built-in study {study}"


def parse_spec(text: str, source: str, overrides: list[str] = ()) -> StudySpec:
    """Parse YAML text (bounded safe loader) plus `--set` overrides into a validated StudySpec."""
    data = load_yaml(text, source)
    if data is None:
        raise SpecError(f"{source}: the study spec is empty")
    if not isinstance(data, dict):
        raise SpecError(f"{source}: a study spec is a YAML map of keys, got {type(data).__name__}")
    apply_overrides(data, overrides)
    try:
        return StudySpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(validation_message(exc, source, StudySpec)) from None


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> None:
    """`--set KEY=VALUE` overrides (value read as YAML) onto the spec's data."""
    for text in overrides:
        path, value = parse_override(text)
        try:
            set_path(data, path, value)
        except ValueError as exc:
            raise SpecError(f"--set {short(str(exc), 200, quote=False)}") from None


def parse_override(text: str) -> tuple[KnobPath, Any]:
    """`a.b.c=value` -> (("a", "b", "c"), value), the value read as a YAML scalar or list."""
    key, sep, raw = text.partition("=")
    try:
        path = parse_path(key) if sep else ()
    except ValueError:
        path = ()
    if not path:
        raise SpecError(f"--set expects KEY=VALUE with a dotted key, got {short(text)}")
    source = f"--set {short(key, quote=False)}"
    check_size(text, source, "the value")
    return path, load_yaml(raw, source) if raw.strip() else ""


def load_spec(study: str | None, overrides: list[str] = ()) -> StudySpec:
    """Load a study by path or built-in name (None: the default study)."""
    text, source = read_spec_source(study or "default")
    return parse_spec(text, source, overrides)
