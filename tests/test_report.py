"""The report CLI: JSON summary, offline HTML, escaping, bad input, static export, and a real
headless browser rendering the page (Debian's chromium)."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import yaml

from stability.report.__main__ import main
from stability.results.store import ResultsStore
from stability.spec import parse_spec

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
RANGES = {"adamw": ((2.5e-4, 8.0e-3), (0.02, 0.8)), "sgd": ((0.01, 0.32), (4.0e-6, 1.2e-4))}
SPEC = {
    "name": "synthetic", "description": "ViT_P vs ViT_C on digits, synthetic results", "dataset": {"name": "digits", "img_size": 16},
    "models": ["vit_p_tiny", "vit_c_tiny"],
    "optimizers": {o: {"lr": {"log_uniform": list(lr)}, "weight_decay": {"log_uniform": list(wd)}} for o, (lr, wd) in RANGES.items()},
    "sampler": "sobol", "samples": 8, "epochs": 10, "repeats": 1, "seed": 0,
    "train": {"batch_size": 128, "warmup_epochs": 1, "label_smoothing": 0.1},
}


def make_study(root: Path, *, name: str = "synthetic", models=("vit_p_tiny", "vit_c_tiny"), samples: int = 8,
               epochs=(10,), failed: bool = True, seed: int = 0) -> Path:
    """A realistic small study folder written with the real store: every model sees the same
    log-uniform (lr, wd) points, ViT_C is more stable than ViT_P, one SGD trial of ViT_P
    diverges (chance error 90 on 10 classes), optionally one trial fails."""
    rng = np.random.default_rng(seed)
    store = ResultsStore(root / name, {"warmup_epochs": pa.float64(), "label_smoothing": pa.float64()})
    spec = {**SPEC, "name": name, "models": list(models), "epochs": list(epochs) if len(epochs) > 1 else epochs[0]}
    store.write_spec(parse_spec(yaml.safe_dump(spec), name), {"stability": "0.1.0"})
    points = {o: rng.uniform(size=(samples, 2)) for o in RANGES}
    for m, model in enumerate(models):
        sensitivity = 6.0 if "vit_p" in model else 2.5
        for opt, ((lr_lo, lr_hi), (wd_lo, wd_hi)) in RANGES.items():
            for i, (u, v) in enumerate(points[opt]):
                for ep in epochs:
                    lr = math.exp(math.log(lr_lo) + u * math.log(lr_hi / lr_lo))
                    wd = math.exp(math.log(wd_lo) + v * math.log(wd_hi / wd_lo))
                    base = 8.0 + 2.0 * m + (3.0 if opt == "sgd" and "vit_p" in model else 0.0) + 20.0 / ep
                    err = base + sensitivity * (4 * (u - 0.55) ** 2 + (v - 0.5) ** 2) * 4 + rng.normal(0, 0.4)
                    status = "ok"
                    if opt == "sgd" and model == models[0] and i == samples - 1:
                        status, err = "diverged", 90.0
                    tid = f"{model}-{opt}-{i}-{ep}"
                    curve = [{"epoch": e, "train_loss": (2.3 * math.exp(-e / 3) + err / 100) if status == "ok" else
                              (math.nan if e > 3 else 2.3), "top1_err": err + 60 * math.exp(-e / 2), "lr": lr,
                              "elapsed_s": 0.5 * e} for e in range(1, ep + 1)]
                    store.write_trial({
                        "study": name, "trial_id": tid, "model": model, "optimizer": opt, "lr": lr, "weight_decay": wd,
                        "epochs": ep, "seed": i, "batch_size": 128, "status": status, "top1_err": err,
                        "best_top1_err": err, "train_loss": curve[-1]["train_loss"], "wall_time_s": 5.0,
                        "images_per_s": 900.0, "params": 500_000, "gflops": 0.01 * (m + 1), "patch_cos_sim": 0.3,
                        "error": "", "warmup_epochs": 1.0, "label_smoothing": 0.1}, curve)
    if failed:
        store.write_trial({"study": name, "trial_id": "failed-0", "model": models[-1], "optimizer": "adamw", "lr": 1e-3,
                           "weight_decay": 0.1, "epochs": epochs[0], "seed": 0, "batch_size": 128, "status": "failed",
                           "top1_err": None, "error": "RuntimeError: CUDA out of memory <oom & co>"}, [])
    return root / name


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    return make_study(tmp_path_factory.mktemp("runs"))


def run(*args: str, cwd: Path = REPO, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stability.report", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": str(REPO)})


@pytest.fixture(scope="module")
def built(study, tmp_path_factory):
    """The report of the synthetic study, built once: (html path, html text, JSON summary)."""
    out = tmp_path_factory.mktemp("report") / "report.html"
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        assert main([str(study), "--out", str(out), "--json"]) == 0
    assert stderr.getvalue().strip().splitlines()[-1] == str(out)  # stdout holds only the JSON
    return out, out.read_text(encoding="utf-8"), json.loads(stdout.getvalue())


def errors_of(study: Path, model: str, optimizer: str) -> np.ndarray:
    import pandas as pd

    t = pd.read_parquet(study / "trials.parquet")
    t = t[(t.model == model) & (t.optimizer == optimizer) & (t.status != "failed")]
    return t["top1_err"].to_numpy(float)


def test_json_summary_has_groups_and_ks(built, study):
    from scipy import stats

    _, _, summary = built
    groups = {(g["model"], g["optimizer"]): g for g in summary["groups"]}
    assert sorted(groups) == [("vit_c_tiny", "adamw"), ("vit_c_tiny", "sgd"), ("vit_p_tiny", "adamw"), ("vit_p_tiny", "sgd")]
    for (model, opt), g in groups.items():
        e = errors_of(study, model, opt)
        assert g["epochs"] == 10 and g["n"] == 8 and g["study"] == "synthetic"
        assert g["min"] == pytest.approx(e.min()) and g["median"] == pytest.approx(np.median(e))
        assert g["mean"] == pytest.approx(e.mean()) and g["q25"] == pytest.approx(np.percentile(e, 25))
        assert g["near_opt_1"] == pytest.approx(np.mean(e <= e.min() + 1))
        assert list(g["expected_best"]) == ["1", "2", "4", "8"]
        assert g["expected_best"]["1"] == pytest.approx(e.mean()) and g["expected_best"]["8"] == pytest.approx(e.min())
        assert set(g["good_range"]["lr"]) == {"lo", "median", "hi"}
    assert groups["vit_p_tiny", "sgd"]["n_diverged"] == 1 and groups["vit_c_tiny", "adamw"]["n_failed"] == 1
    assert {(k["optimizer"], k["epochs"], k["a"], k["b"]) for k in summary["ks"]} == {
        ("adamw", 10, "vit_c_tiny", "vit_p_tiny"), ("sgd", 10, "vit_c_tiny", "vit_p_tiny")}
    for k in summary["ks"]:
        ref = stats.ks_2samp(errors_of(study, k["a"], k["optimizer"]), errors_of(study, k["b"], k["optimizer"]))
        assert (k["D"], k["p"]) == pytest.approx((ref.statistic, ref.pvalue))
    assert {(k["model"], k["a"], k["b"]) for k in summary["ks_optimizers"]} == {
        ("vit_c_tiny", "adamw", "sgd"), ("vit_p_tiny", "adamw", "sgd")}


def test_every_new_key_comes_from_the_results_alone(built, study):
    """The folder holds only what the sweep wrote before the exact bands existed (trials, curves,
    study.yaml): the bands, tuning curves, sensitivity and corrected verdicts need nothing more."""
    _, _, summary = built
    assert {p.name for p in study.iterdir()} <= {"trials.parquet", "curves.parquet", "study.yaml", "report.html"}
    groups = {(m, o) for m in ("vit_c_tiny", "vit_p_tiny") for o in ("adamw", "sgd")}
    for key, fields in (("edf_bands", {"method", "confidence", "error", "lower", "upper"}),
                        ("tuning_curves", {"k", "median", "lower", "upper", "method", "confidence", "informative_k"}),
                        ("lr_sensitivity", {"value", "ci", "n"})):
        rows = summary[key]
        assert {(r["model"], r["optimizer"]) for r in rows} == groups and all(r["study"] == "synthetic" for r in rows)
        assert all(fields <= set(r) and r["epochs"] == 10 for r in rows), key
    for b in summary["edf_bands"]:
        e = errors_of(study, b["model"], b["optimizer"])
        assert b["method"] == "ld_equal_tailed" and b["confidence"] == 0.95  # no two errors tie here
        assert b["error"] == pytest.approx(sorted(e)) and len(b["lower"]) == len(b["upper"]) == len(e)
    for c in summary["tuning_curves"]:
        assert c["k"] == list(range(1, 9)) and c["median"][-1] == pytest.approx(errors_of(study, c["model"], c["optimizer"]).min())
    assert all(v["holm_n"] == 2 and v["wilcoxon_p_holm"] >= v["wilcoxon_p"] for v in summary["verdicts"])
    assert all("Holm-adjusted over 2 comparisons" in v["sentence"] for v in summary["verdicts"])
    assert all(g["lr_sensitivity"]["n"] == g["n"] for g in summary["groups"])


def test_html_is_self_contained_and_offline(built):
    from plotly.offline import get_plotlyjs

    _, text, _ = built
    assert not re.search(r"<script[^>]*\ssrc\s*=", text, re.I)
    assert not re.search(r"<link[^>]*\shref\s*=\s*[\"']?(https?:)?//", text, re.I)
    assert not re.search(r"<(img|iframe|source|video|audio|embed|object)\b[^>]*\s(src|data)\s*=\s*[\"']?(https?:)?//", text, re.I)
    assert text.count(get_plotlyjs()[:200]) == 1  # plotly.js inlined exactly once
    assert "Content-Security-Policy" in text and "connect-src 'none'" in text
    n_figs = len(re.findall(r'<div id="fig-\d+"', text))
    assert n_figs >= 10 and text.count("Plotly.newPlot(") == n_figs
    for section in ("Summary", "Optimizer stability", "Kolmogorov-Smirnov tests", "Failed trials (1)", "Study spec"):
        assert section in text


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600)], ids=["umask022", "umask077"])
def test_report_file_gets_the_mode_the_umask_gives(tmp_path, umask, mode):
    root = make_study(tmp_path, samples=3, failed=False)
    old = os.umask(umask)
    try:
        assert main([str(root)]) == 0
    finally:
        os.umask(old)
    out = root / "report.html"
    assert out.stat().st_mode & 0o777 == mode  # not the owner-only mode of a temporary file
    assert not [p for p in root.iterdir() if p.name.startswith(".tmp")]  # no temporary file left beside it


def test_text_from_results_is_escaped(tmp_path):
    evil_model = '<img src=x onerror="alert(1)">'
    evil_msg = '</script><script>alert("boom")</script>'
    root = make_study(tmp_path, models=("vit_p_tiny", evil_model), samples=3)
    store = ResultsStore(root)
    store.write_trial({"study": "synthetic", "trial_id": "evil", "model": evil_model, "optimizer": "sgd", "lr": 0.1,
                       "weight_decay": 1e-5, "epochs": 10, "status": "failed", "error": evil_msg}, [])
    assert main([str(root), "--out", str(tmp_path / "r.html")]) == 0
    text = (tmp_path / "r.html").read_text()
    assert evil_model not in text and evil_msg not in text
    quote = "(&quot;|&#34;)"  # either entity of the double quote
    assert re.search(rf"&lt;img src=x onerror={quote}alert\(1\){quote}&gt;", text)
    assert re.search(rf"&lt;/script&gt;&lt;script&gt;alert\({quote}boom{quote}\)&lt;/script&gt;", text)


def test_bad_input_exits_2_with_one_line_and_no_traceback(tmp_path):
    out = tmp_path / "r.html"
    proc = run(str(tmp_path / "nope"), "--out", str(out))
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1
    assert "nope" in proc.stderr and "Traceback" not in proc.stderr and not out.exists()


@pytest.mark.parametrize("case", ["missing", "empty", "no_rows", "split", "out_is_dir"])
def test_bad_input_writes_nothing(tmp_path, study, case, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "no_rows" / "trials.parquet").mkdir(parents=True)
    out = tmp_path / "r.html"
    args = {"missing": [str(tmp_path / "nope")], "empty": [str(tmp_path / "empty")],
            "no_rows": [str(tmp_path / "no_rows")], "split": [str(study), "--split-by", "no_such_column"],
            "out_is_dir": [str(study), "--out", str(tmp_path)]}[case]
    with pytest.raises(SystemExit) as exc:
        main(args + (["--out", str(out)] if "--out" not in args else []))
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ")
    assert not any(tmp_path.glob("**/*.html"))


def test_default_out_is_beside_the_results(tmp_path, monkeypatch, capsys):
    root = make_study(tmp_path, samples=3, failed=False)
    monkeypatch.chdir(tmp_path)
    assert main([str(root)]) == 0
    assert capsys.readouterr().out.strip() == str(root / "report.html") and (root / "report.html").is_file()
    assert not [p for p in root.iterdir() if p.name.startswith(".tmp")]


def test_several_folders_compare_in_one_report(tmp_path, monkeypatch, capsys):
    a = make_study(tmp_path / "a", samples=3, failed=False)
    b = make_study(tmp_path / "b", samples=3, failed=False, seed=1, epochs=(5, 10))
    monkeypatch.chdir(tmp_path)
    assert main([str(a), str(b), "--json", "--split-by", "label_smoothing"]) == 0
    summary = json.loads(capsys.readouterr().out)
    studies = {g["study"] for g in summary["groups"]}
    assert studies == {f"synthetic ({a})", f"synthetic ({b})"}
    assert len(summary["groups"]) == 12 and all(g["label_smoothing"] == 0.1 for g in summary["groups"])
    assert any(k["a"].startswith(f"synthetic ({a}) / ") and k["b"].startswith(f"synthetic ({b}) / ") for k in summary["ks"])
    text = (tmp_path / "report.html").read_text()
    assert "Training-length stability" in text


def test_export_without_kaleido_says_what_to_install(study, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "kaleido", None)  # import fails
    assert main([str(study), "--out", str(tmp_path / "r.html"), "--export-dir", str(tmp_path / "figs")]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install kaleido" in err[0] and "chromium" in err[0]
    assert (tmp_path / "r.html").is_file() and not (tmp_path / "figs").exists()


def test_export_dir_gets_every_figure(study, tmp_path, monkeypatch):
    import stability.report.__main__ as report

    seen = {}
    monkeypatch.setattr(report, "export_figures", lambda figures, out_dir: seen.setdefault(out_dir, [n for n, _ in figures]))
    assert main([str(study), "--out", str(tmp_path / "r.html"), "--export-dir", str(tmp_path / "figs")]) == 0
    names = seen[tmp_path / "figs"]
    assert len(names) == len(set(names)) == len(re.findall(r'<div id="fig-\d+"', (tmp_path / "r.html").read_text()))
    assert {"edf_adamw_10ep", "edf_delta_sgd_10ep", "hparams_sgd_10ep", "tuning_curve_adamw_10ep", "curves_sgd_10ep",
            "optimizers_10ep"} <= set(names)


def test_a_new_figure_is_one_registry_entry(study, tmp_path, monkeypatch):
    import stability.analysis as an
    import stability.report.__main__ as report
    from stability.report import figures

    extra = figures.FigureKind("best_of_k_{optimizer}_{epochs}ep", figures.SLICE,
                               lambda a, k: an.expected_best_data(a.trials, k["optimizer"], k["epochs"], n_boot=10),
                               an.plot_lines)
    monkeypatch.setattr(figures, "FIGURES", [*figures.FIGURES, extra])
    seen = {}
    monkeypatch.setattr(report, "export_figures", lambda figures, out_dir: seen.setdefault(out_dir, [n for n, _ in figures]))
    assert main([str(study), "--out", str(tmp_path / "r.html"), "--export-dir", str(tmp_path / "figs")]) == 0
    names = seen[tmp_path / "figs"]
    assert {"best_of_k_adamw_10ep", "best_of_k_sgd_10ep"} <= set(names)
    assert len(names) == len(re.findall(r'<div id="fig-\d+"', (tmp_path / "r.html").read_text()))


def test_static_export_writes_svg(tmp_path):
    pytest.importorskip("kaleido")
    if not (os.environ.get("BROWSER_PATH") or shutil.which("chromium") or shutil.which("google-chrome")):
        pytest.skip("kaleido needs Chrome/Chromium")
    import plotly.graph_objects as go

    from stability.report.export import export_figures

    figures = [("edf a", go.Figure(go.Scatter(x=[1, 2], y=[0.5, 1]))), ("b", go.Figure(go.Bar(x=["x"], y=[1])))]
    paths = export_figures(figures, tmp_path / "figs")
    assert [p.name for p in paths] == ["edf_a.svg", "b.svg"]
    assert all(p.read_text()[:300].lstrip().startswith("<svg") for p in paths)


def test_report_imports_neither_torch_nor_ray(study, tmp_path):
    """Not at import, nor while writing a report (every lazily imported module included)."""
    code = ("import sys; from stability.report.__main__ import main; "
            f"assert main([{str(study)!r}, '--out', {str(tmp_path / 'r.html')!r}]) == 0; "
            "bad = [m for m in ('torch', 'ray') if m in sys.modules]; assert not bad, bad")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


# --- a real browser ---------------------------------------------------------------------------

browser = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} missing (apt-get install chromium)")


@pytest.fixture(scope="module")
def browser_report(built, tmp_path_factory) -> Path:
    """The report of the real default study when runs/ holds one (or the folder named by
    STABILITY_REPORT_STUDY), else of the synthetic study."""
    default = Path(os.environ.get("STABILITY_REPORT_STUDY", REPO / "runs" / "default"))
    if (default / "trials.parquet").exists():
        out = tmp_path_factory.mktemp("default") / "report.html"
        proc = run(str(default), "--out", str(out))
        assert proc.returncode == 0, proc.stderr
        return out
    return built[0]


@pytest.fixture(scope="module")
def profile(tmp_path_factory) -> Path:
    """One browser profile for the module: a fresh one costs seconds to set up."""
    return tmp_path_factory.mktemp("chromium-profile")


def chromium(profile: Path, *args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--virtual-time-budget=5000"]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=90)


def page_requests(netlog: Path) -> list[str]:
    """http(s) requests the page made (the browser's own service requests are 'not an origin')."""
    log = json.loads(netlog.read_text())
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    urls = {e["source"]["id"]: e["params"]["url"] for e in log["events"] if "url" in e.get("params", {})}
    found = []
    for e in log["events"]:
        initiator = e.get("params", {}).get("initiator")
        if e["type"] == start and initiator is not None and initiator != "not an origin":
            url = e["params"].get("url") or urls.get(e["source"]["id"], "?")
            if not url.startswith(("file:", "data:", "blob:")):
                found.append(url)
    return found


@browser
@pytest.mark.browser
def test_figures_render_in_chromium_without_network(browser_report, profile, tmp_path):
    netlog = tmp_path / "net.json"
    proc = chromium(profile, f"--log-net-log={netlog}", "--enable-logging=stderr", "--v=0", "--dump-dom",
                    browser_report.as_uri())
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = proc.stdout
    n_figs = len(re.findall(r'<div id="fig-\d+"', browser_report.read_text()))
    drawn = re.findall(r'<div id="fig-\d+" class="[^"]*js-plotly-plot', dom)
    assert n_figs >= 4 and len(drawn) == n_figs  # plotly drew every figure
    assert dom.count('class="main-svg"') >= 2 * n_figs
    console = [line for line in proc.stderr.splitlines() if "CONSOLE" in line]
    assert not console, console  # no script errors, no blocked (Content-Security-Policy) loads
    assert page_requests(netlog) == []


@browser
@pytest.mark.browser
def test_screenshot_shows_plots(browser_report, profile, tmp_path):
    from PIL import Image

    shot = tmp_path / "shot.png"
    proc = chromium(profile, f"--screenshot={shot}", "--window-size=1400,2400", browser_report.as_uri())
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
    image = Image.open(shot).convert("RGB")
    img = np.asarray(image).astype(int)
    assert img.shape[:2] == (2400, 1400)
    non_white = np.any(img < 235, axis=2).mean()
    assert 0.03 < non_white < 0.9  # neither blank nor a solid block
    assert len(image.getcolors(maxcolors=1 << 24)) > 500  # anti-aliased lines, bands, text: a drawn page
    first_arm = np.array([0x63, 0x6E, 0xFA])  # plotly's first colour, the first arm's lines
    assert (np.abs(img - first_arm).sum(axis=2) < 40).sum() > 500
    plot_rows = np.where((np.abs(img - first_arm).sum(axis=2) < 40).any(axis=1))[0]
    assert plot_rows.max() - plot_rows.min() > 800  # lines in several figures down the page
