"""stability: measure how sensitive vision transformers are to their hyper-parameters.

`stability.open_study(path_or_uri)` and `stability.run_study(spec_or_path, ...)` are the Python API
(`stability.api`, docs/python-api.md); they are imported on first use, so `import stability` loads
neither torch, Ray nor plotly."""

__version__ = "0.1.0"

__all__ = ["Study", "StudyError", "open_study", "run_study", "__version__"]
_API = ("Study", "StudyError", "open_study", "run_study")


def __getattr__(name: str):
    if name in _API:  # imported by name at first use: modules that read __version__ do not depend on the API
        import importlib

        return getattr(importlib.import_module("stability.api"), name)
    raise AttributeError(f"module 'stability' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
