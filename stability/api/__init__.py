"""The Python API, for notebooks (docs/python-api.md): `open_study` reads a study folder as the report
does, `run_study` runs a sweep in this process as `python -m stability.sweep` does, and both give a
`Study`: its trials and curves as pandas frames, its verdicts, the `--json` summary as a dict and
each report figure as a plotly figure. Bad input raises one `StudyError` whose message is the line
the command line prints after `error: `. Imported by `stability` on first use only (`import
stability` stays cheap: torch, Ray and plotly are imported by the calls that need them)."""

from stability.api.errors import StudyError
from stability.api.run import run_study
from stability.api.study import Study, open_study

__all__ = ["Study", "StudyError", "open_study", "run_study"]
