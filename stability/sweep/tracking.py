"""`--mlflow URI`: the sweep's trials as MLflow runs, written by the driver as trials report (Ray
Train V2 refuses Tune's logger callbacks, and trial processes never talk to the tracker).

The store callback hands each epoch and each stored row here after the row is on disk; at the end
the trials finished before this sweep get their runs too (`stability.tracking.export`). A tracking
store that cannot be reached, or refuses a request, is said once on stderr and tracking stops for
the rest of the sweep: it never stops a trial nor the sweep."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from stability.results.storage import public_uri


class LiveTracker:
    """One study's MLflow runs, kept current from the driver's store callback."""

    def __init__(self, uri: str, study: str, say: Callable[[str], None]):
        self.uri = uri
        self.study = study
        self.say = say
        self.runs = None  # stability.tracking.runs.StudyRuns once reached
        self.off = False  # a failure was said: nothing more is sent
        self.touched: set[str] = set()  # trials whose run this sweep opened or reopened

    def __getstate__(self) -> dict[str, Any]:
        """Tune pickles its callbacks with the run's config; a copy is inert."""
        return {"uri": self.uri, "study": self.study, "say": None, "runs": None, "off": True, "touched": set()}

    def _call(self, what: Callable[[], Any]) -> None:
        if self.off:
            return
        try:
            what()
        except Exception as exc:  # whatever MLflow raises for a store it cannot reach: tracking must not cost a trial
            self.off = True
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            self.say(f"warning: --mlflow {public_uri(self.uri)}: cannot log to MLflow ({type(exc).__name__}: {first}); "
                     f"the sweep goes on without it (`python -m stability.report STUDY --to-mlflow URI` exports "
                     f"the study later)")

    def start(self) -> None:
        """Reach the tracking store: the study's experiment and parent run, found or created."""
        from stability.tracking.runs import StudyRuns

        def reach() -> None:
            self.runs = StudyRuns(self.uri, self.study)
            self.runs.start_study()

        self._call(reach)

    def _run(self, cfg):
        from stability.tracking.export import run_name
        from stability.tracking.runs import trial_params

        if cfg.trial_id in self.touched:  # opened (or found and reopened) by this sweep already
            return self.runs.trials[cfg.trial_id]
        run = self.runs.trial(cfg.trial_id, run_name(cfg.model, cfg.optimizer, cfg.trial_id), trial_params(cfg),
                              {"point": cfg.point, "repeat": cfg.repeat})
        self.touched.add(cfg.trial_id)
        return run

    def epoch(self, cfg, point: dict[str, Any]) -> None:
        """A trial reported epoch `point` (epoch, train_loss, top1_err, lr, ...)."""
        if self.runs is not None:
            self._call(lambda: self.runs.log_epochs(self._run(cfg), [point]))

    def stored(self, cfg, row: dict[str, Any], curve: Iterable[dict[str, Any]]) -> None:
        """A trial's row is stored: its epochs not logged yet, its status, point and repeat; the run ends."""
        def finish() -> None:
            run = self._run(cfg)
            self.runs.log_epochs(run, list(curve))
            self.runs.finish(run, row)

        if self.runs is not None:
            self._call(finish)

    def close(self, root, complete: bool) -> None:
        """The sweep's trials have ended (`complete`) or were stopped: a complete sweep adds the trials
        finished before it and ends the parent run; a stopped one marks its open runs KILLED."""
        if self.runs is None:
            return

        def end() -> None:
            if complete:
                from stability.results.store import read_study
                from stability.tracking.export import export_trials, planned_configs

                res = read_study(root)
                export_trials(self.runs, res.trials, res.curves, planned_configs(res.spec))
            else:
                for trial_id in sorted(self.touched):
                    run = self.runs.trials.get(trial_id)
                    if run is not None and not run.done:
                        self.runs.client.set_terminated(run.run_id, "KILLED")
            self.runs.end_study(complete)

        self._call(end)
