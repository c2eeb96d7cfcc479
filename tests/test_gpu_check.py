"""The GPU check's plumbing on the CPU, cheaply: targets and their pass/miss, the Markdown page, test
outcomes from junit XML or a log, and the part runner (stand-in parts: one fine, one failing, one
out of time, one reaching for a hidden package). The check itself is rehearsed with
`bash benchmarks/gpu_check.sh OUT_DIR --device cpu` (docs/benchmarks.md)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from conftest import REPO

from benchmarks import gpu_check
from benchmarks.gpu_check_report import junit_summary, markdown, pytest_log_summary, targets
from benchmarks.targets import GPU_MODELS


def gpu_row(model: str, px: int, ratio: float, mfu: float = 0.1, compiled: bool = False) -> dict:
    return {"model": model, "img_size": px, "batch_size": 256, "compiled": compiled, "ratio": ratio,
            "engine_mfu": mfu, "engine_images_per_s": 1000.0, "plain_images_per_s": 1000.0 / ratio,
            "engine_warmup_s": 1.0, "errors": {}}


def parts(mfu: float = 0.45, ratios: dict | None = None, fused: float = 9.0, minutes: float | None = 18.0,
          k: int = 16) -> dict:
    ratios = ratios or {model: 3.0 for model in GPU_MODELS}
    rows = [gpu_row(m, GPU_MODELS[m], r, mfu if m == "vit_p_4gf" else 0.1, m == "vit_p_4gf") for m, r in ratios.items()]
    return {
        "gpu": {"status": "ok", "record": {"results": rows, "peak": {"dtype": "bfloat16", "tflops": 780.0}}},
        "fused": {"status": "ok", "record": {"ratio": fused, "settings": {"k": k, "img_size": 32, "epochs": 2,
                                                                          "dataset": "digits"},
                                             "rows": [{"model": "vit_p_tiny", "k": k, "one_by_one_s": 9.0,
                                                       "fused_s": 1.0, "ratio": 9.0, "max_abs_top1_diff": 0.3}]}},
        "cifar_projection": {"status": "ok", "record": {
            "projected_minutes": minutes, "settings": {"k": k, "fraction": 0.5, "study": "cifar10_lr_wd",
                                                       "study_epochs": 50},
            "rows": [{"model": "vit_p_tiny", "k": k, "batch_size": 512, "epoch_s": 0.5, "overhead_s": 2.0,
                      "groups": 4, "projected_s": 108.0}]}},
    }


def by_name(found: list[dict]) -> dict[str, dict]:
    return {t["name"]: t for t in found}


def test_targets_pass_when_every_figure_meets_its_goal():
    found = by_name(targets(parts(), "cuda"))
    assert set(found) == {"mfu", "fused", "cifar10_lr_wd_minutes", *(f"engine_vs_plain_{m}" for m in GPU_MODELS)}
    assert all(t["verdict"] == "pass" and t["as_specified"] for t in found.values()), found


def test_targets_miss_and_missing_figures():
    ratios = {model: 3.0 for model in GPU_MODELS if model != "deit_small"}
    ratios["vit_c_1gf"] = 1.5
    found = by_name(targets(parts(mfu=0.39, ratios=ratios, fused=7.9, minutes=20.5), "cuda"))
    assert found["mfu"]["verdict"] == "miss" and found["mfu"]["value"] == pytest.approx(0.39)
    assert found["engine_vs_plain_vit_c_1gf"]["verdict"] == "miss"
    assert found["engine_vs_plain_vit_p_1gf"]["verdict"] == "pass"
    assert found["engine_vs_plain_deit_small"]["verdict"] == "no figure"  # the model never finished
    assert found["fused"]["verdict"] == "miss" and found["cifar10_lr_wd_minutes"]["verdict"] == "miss"
    assert by_name(targets(parts(minutes=None), "cuda"))["cifar10_lr_wd_minutes"]["verdict"] == "no figure"
    assert by_name(targets({}, "cuda"))["mfu"]["verdict"] == "no figure"  # no gpu part at all


def test_figures_taken_otherwise_are_not_as_specified():
    assert not any(t["as_specified"] for t in targets(parts(), "cpu"))  # a CPU rehearsal
    found = by_name(targets(parts(k=2), "cuda"))
    assert found["fused"]["verdict"] == "pass" and not found["fused"]["as_specified"]
    assert not found["cifar10_lr_wd_minutes"]["as_specified"]
    uncompiled = parts()
    next(r for r in uncompiled["gpu"]["record"]["results"] if r["model"] == "vit_p_4gf")["compiled"] = False
    assert not by_name(targets(uncompiled, "cuda"))["mfu"]["as_specified"]


def test_markdown_shows_parts_targets_and_figures():
    check = gpu_check.assemble({**parts(mfu=0.3), "cuda_tests": {"status": "failed", "note": "1 failed", "tests": {
        "tests": [{"test": "tests/test_cuda.py::test_x", "outcome": "failed", "message": "boom", "time_s": 1.0}]}}},
        "cuda", "bash benchmarks/gpu_check.sh OUT_DIR --device cuda", 200.0, 285.0)
    assert check["ok"] is False and check["rehearsal"] is False
    page = markdown(check)
    for text in ("## Parts", "| cuda_tests | failed |", "## Targets", "| 30.0% | miss |", "## CUDA tests",
                 "| test_x | failed | 1.0 | boom |", "## Engine vs plain loop", "## Fused trials",
                 "## cifar10_lr_wd projection", "Projected whole study: 18.0 min"):
        assert text in page, text
    json.dumps(check)  # the record is plain JSON


def test_test_outcomes_from_junit_xml_and_from_the_log(tmp_path):
    xml = tmp_path / "t.xml"
    xml.write_text(textwrap.dedent("""\
        <testsuites><testsuite name="pytest">
          <testcase classname="tests.test_cuda" name="test_a" time="1.5"/>
          <testcase classname="tests.test_cuda" name="test_b" time="0.1">
            <failure message="assert 1 == 2&#10;more">x</failure></testcase>
          <testcase classname="tests.test_cuda" name="test_c" time="0"><skipped message="no CUDA device"/></testcase>
        </testsuite></testsuites>"""))
    summary = junit_summary(str(xml))
    assert (summary["passed"], summary["failed"], summary["error"], summary["skipped"]) == (1, 1, 0, 1)
    assert summary["tests"][1] == {"test": "tests.test_cuda::test_b", "outcome": "failed", "message": "assert 1 == 2",
                                   "time_s": 0.1}
    log = "tests/test_cuda.py::test_a PASSED  [ 10%]\ntests/test_cuda.py::test_b[vit_p_tiny] FAILED [ 20%]\nnoise\n"
    summary = pytest_log_summary(log)
    assert (summary["passed"], summary["failed"]) == (1, 1) and summary["tests"][1]["test"].endswith("[vit_p_tiny]")


def test_cuda_tests_pass_only_when_every_test_ran_and_passed(tmp_path):
    xml = tmp_path / "t.xml"
    xml.write_text('<testsuite><testcase classname="c" name="a"/><testcase classname="c" name="b">'
                   '<skipped message="no CUDA device"/></testcase></testsuite>')
    result = {"status": "ok", "note": ""}
    gpu_check.tests_status(result, str(xml), "")
    assert result["status"] == "failed" and "a skipped test means no CUDA device was seen" in result["note"]
    stopped = {"status": "timed out", "note": "stopped at its time limit"}  # no XML: the output tells
    gpu_check.tests_status(stopped, str(tmp_path / "missing.xml"), "tests/test_cuda.py::test_a PASSED [ 9%]\n")
    assert stopped["status"] == "timed out" and stopped["tests"]["passed"] == 1
    assert stopped["note"].startswith("1 passed, 0 failed, 0 errors, 0 skipped; stopped at its time limit")


FAKE_PART = textwrap.dedent("""\
    import json, sys, time
    out, code, sleep = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    try:
        import ray
        hidden = False
    except ImportError:
        hidden = True
    with open(out, "w") as fh:
        json.dump({"ray_hidden": hidden}, fh)
    print("fake part output", flush=True)
    time.sleep(sleep)
    sys.exit(code)
""")


def test_parts_run_in_turn_and_a_failure_or_timeout_stops_none_of_the_others(tmp_path, monkeypatch, capsys):
    (tmp_path / "fake_part.py").write_text(FAKE_PART)
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}:{REPO}")
    out = tmp_path / "out"

    def fake_plan(device, out_dir):
        return [gpu_check.Part(name, ("fake_part", str(out_dir / f"{name}.json"), code, sleep), timeout,
                               str(out_dir / f"{name}.json"))
                for name, code, sleep, timeout in [("first", "1", "0", 20), ("second", "0", "30", 1.5),
                                                   ("third", "0", "0", 20)]]

    monkeypatch.setattr(gpu_check, "plan", fake_plan)
    assert gpu_check.main([str(out), "--device", "cpu"]) == 1
    check = json.loads((out / "gpu_check.json").read_text())
    status = {name: (p["status"], p["note"]) for name, p in check["parts"].items()}
    last = "; last output: fake part output"
    assert status == {"first": ("failed", "exit code 1; figures up to then kept" + last),
                      "second": ("timed out", "stopped at its time limit; figures up to then kept" + last),
                      "third": ("ok", "")}
    assert all(p["record"] == {"ray_hidden": True} for p in check["parts"].values())
    assert check["parts"]["second"]["wall_s"] < 10
    assert "fake part output" in (out / "gpu_check.log").read_text()
    assert (out / "gpu_check.md").read_text().startswith("# GPU check")


def test_the_engine_path_imports_without_ray_optuna_plotly_or_analysis(tmp_path):
    """The environment part of the check, with those packages hidden: the engine and the benchmarks
    the check runs import all the same (the GPU machine has no Ray, Optuna or Plotly)."""
    out = tmp_path / "environment.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.without", gpu_check.HIDDEN, "benchmarks.gpu_check",
                           "--probe", str(out)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    info = json.loads(out.read_text())
    assert info["engine_import_errors"] == {} and info["hidden_loaded"] == []
    assert info["torch"] and info["pydantic"] and info["timm"]


def test_the_cuda_plan_fits_five_minutes_and_runs_every_part(tmp_path):
    cuda = gpu_check.plan("cuda", tmp_path)
    assert [p.name for p in cuda] == list(gpu_check.PART_NAMES) == [p.name for p in gpu_check.plan("cpu", tmp_path)]
    assert sum(p.timeout_s for p in cuda) <= gpu_check.BUDGET_S["cuda"] <= 290  # leaves the wheel install its seconds
    assert all("--device" not in p.argv or "cuda" in p.argv for p in cuda)
    assert not any(p.env for p in cuda)  # on the GPU machine the tests run on CUDA, with the default threads
