"""The report at paper scale: a synthetic study the size of the paper's (9 models x 2 optimizers x
64 points, 1152 trials, `paper_study.py`), built once per module. Checked on the page model:
figures drawn as small multiples by model size (RegNetY 16 GF beside the 18 GF pair), one legend
per figure with every model once, one colour per model everywhere, the stability frontier on the
lr panel where the divergence starts, the expected-best estimator named, the full detail folded
below; the running trials of running.json (and a damaged one ignored); and one headless-browser
screenshot whose legends sit below the axis titles."""

from __future__ import annotations

import colorsys
import contextlib
import io
import json
import math
import os
import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from paper_study import MODELS, diverge_lr, family, make_paper_study
from test_report import CHROMIUM, make_study

import stability.report.__main__ as report_main
from stability.analysis.facets import facets
from stability.report.__main__ import main
from stability.report.page import Details, Figure, Table, Verdict
from stability.results.store import ResultsStore, read_study

PANELS = {"1gf": {"regnety_1gf", "vit_c_1gf", "vit_p_1gf"}, "4gf": {"regnety_4gf", "vit_c_4gf", "vit_p_4gf"},
          "18gf (+ regnety_16gf)": {"regnety_16gf", "vit_c_18gf", "vit_p_18gf"}}
PER_ARM = ("edf_", "hparams_", "tuning_curve_", "curves_")  # figures that draw every model


def build(study: Path, out: Path, *extra: str):
    """Run the CLI; (page model, HTML, JSON summary)."""
    pages = []
    real = report_main.render
    stdout, stderr = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        mp.setattr(report_main, "render", lambda page: pages.append(page) or real(page))
        assert main([str(study), "--out", str(out), "--json", *extra]) == 0, stderr.getvalue()
    return pages[0], out.read_text(encoding="utf-8"), json.loads(stdout.getvalue())


@pytest.fixture(scope="module")
def paper(tmp_path_factory):
    root = make_paper_study(tmp_path_factory.mktemp("runs"))
    page, html, data = build(root, tmp_path_factory.mktemp("report") / "report.html")
    trials = pd.read_parquet(root / "trials.parquet")
    return SimpleNamespace(root=root, page=page, html=html, data=data, trials=trials)


def figure(paper, name: str) -> Figure:
    return next(f for f in paper.page.figures() if f.name == name)


def axis_of(trace) -> str:
    return trace.xaxis or "x"


def models_by_axis(fig) -> dict[str, set[str]]:
    """The models drawn in each panel (x axis) of a figure, from its traces."""
    found: dict[str, set[str]] = {}
    for t in fig.data:
        if t.legendgroup in MODELS:
            found.setdefault(axis_of(t), set()).add(t.legendgroup)
    return found


def test_paper_sized_figures_get_one_panel_per_size_with_its_baseline(paper):
    assert len(paper.trials) == 1152
    assert paper.data["facets"] == {"by": "size", "panels": [{"title": t, "models": sorted(m)} for t, m in PANELS.items()]}
    shown = [f for f in paper.page.figures() if f.name.startswith(PER_ARM) and not f.folded]
    assert len(shown) == 2 * 5  # edf, delta edf, hparams, tuning curves, curves per optimizer
    for f in shown:
        assert f.facets == tuple(PANELS) and f.wide, f.name
    for name in ("edf_adamw_10ep", "edf_delta_sgd_10ep", "tuning_curve_sgd_10ep"):  # panels x, x2, x3 in order
        assert models_by_axis(figure(paper, name).figure) == dict(zip(("x", "x2", "x3"), PANELS.values()))
    for f in shown:  # no panel holds more than the ~6 lines a legend group reads well with
        assert all(len(models) <= 6 for models in models_by_axis(f.figure).values()), f.name


def test_the_summary_table_lists_models_panel_by_panel(paper):
    summary = next(s for s in paper.page.sections if s.anchor == "summary").blocks[0]
    models = list(dict.fromkeys(row[0].text for row in summary.rows))
    panels = [PANELS[t] for t in PANELS]
    assert sorted(models) == sorted(MODELS)
    assert [set(models[0:3]), set(models[3:6]), set(models[6:9])] == panels  # 1gf, 4gf, 18gf: not 18gf first
    assert models[6:9] == ["regnety_16gf", "vit_c_18gf", "vit_p_18gf"]  # within a panel: by family
    column = [title for title, _ in summary.columns].index("lr sensitivity")
    found = {(r["model"], r["optimizer"]): r for r in paper.data["lr_sensitivity"]}
    for row in summary.rows:
        s = found[row[0].text, row[1].text]
        assert row[column].text == f"{s['value']:.2f}" and row[column].sub == f"[{s['ci'][0]:.2f}, {s['ci'][1]:.2f}]"


def test_one_legend_below_each_figure_with_every_model_once(paper):
    for f in paper.page.figures():
        legend = f.figure.layout.legend
        assert (legend.orientation, legend.yref, legend.y, legend.yanchor) == ("h", "container", 0, "bottom"), f.name
        entries = [t.legendgroup for t in f.figure.data if t.showlegend]
        if not f.name.startswith(PER_ARM):
            continue
        assert sorted(e for e in entries if e in MODELS) == sorted(MODELS), f.name
        rows = math.ceil(len(entries) / 3)  # three models per size: a row per panel's models
        assert f.figure.layout.margin.b >= 50 + 21 * rows, f.name  # room below the axis titles


def test_each_model_has_one_colour_in_every_figure_and_panel(paper):
    colours: dict[str, set[str]] = {}
    for f in paper.page.figures():
        if not f.name.startswith(PER_ARM):
            continue
        for t in f.figure.data:
            if t.legendgroup in MODELS and t.mode and "markers" in t.mode and isinstance(t.marker.color, str):
                colours.setdefault(t.legendgroup, set()).add(t.marker.color)
            elif t.legendgroup in MODELS and t.line.color:
                colours.setdefault(t.legendgroup, set()).add(t.line.color)
    assert sorted(colours) == sorted(MODELS) and all(len(c) == 1 for c in colours.values()), colours
    colour = {m: c.pop() for m, c in colours.items()}
    assert len(set(colour.values())) == len(MODELS)

    def hue(c):
        return colorsys.rgb_to_hls(*(int(c[i:i + 2], 16) / 255 for i in (1, 3, 5)))[0]

    for fam in ("vit_p", "vit_c", "regnety"):  # a hue per family, a shade per size
        hues = [hue(colour[m]) for m in MODELS if family(m) == fam]
        assert max(hues) - min(hues) < 0.03, (fam, hues)
    assert len({round(hue(colour[f"{fam}_1gf"]), 1) for fam in ("vit_p", "vit_c", "regnety")}) == 3


def test_frontier_is_drawn_on_the_lr_panel_where_the_divergence_starts(paper):
    frontier = {(r["model"], r["optimizer"]): r for r in paper.data["frontier"]}
    for (model, opt), row in frontier.items():
        fig = figure(paper, f"hparams_{opt}_10ep").figure
        lines = [t for t in fig.data if t.name == f"{model} stability frontier"]
        limit = diverge_lr(model, opt)
        if limit is None:  # RegNetY never diverges: no frontier, stable up to the largest lr
            assert row["max_stable_lr"] is None and not lines
            continue
        mine = paper.trials[(paper.trials.model == model) & (paper.trials.optimizer == opt)]
        stable, diverged = mine.loc[mine.status == "ok", "lr"].max(), mine.loc[mine.status == "diverged", "lr"].min()
        assert stable <= limit < diverged  # the data: divergence starts at the known threshold
        assert stable <= row["max_stable_lr"] <= diverged
        assert len(lines) == 1 and lines[0].x == pytest.approx((row["max_stable_lr"],) * 2)
        lr_axis = next(ax for ax in fig.select_xaxes() if ax.title.text == "lr")  # the lr column
        drawn = fig.layout[axis_of(lines[0]).replace("x", "xaxis")]
        assert tuple(drawn.domain) == tuple(lr_axis.domain) and drawn.type == "log"
        points = {axis_of(t) for t in fig.data if t.legendgroup == model and t.mode == "markers"}
        assert axis_of(lines[0]) in points  # in the model's own panel
        band = [t for t in fig.data if t.name == f"{model} stability frontier interval"]
        if row["max_stable_lr_ci"] is None:
            assert not band
        else:
            assert len(band) == 1 and (min(band[0].x), max(band[0].x)) == pytest.approx(row["max_stable_lr_ci"])


def band_traces(fig, model: str):
    """The (lower, upper) traces of a model's shaded band: drawn before its line, the upper filled to the lower."""
    lower, upper = [t for t in fig.data if t.legendgroup == model and t.hoverinfo == "skip" and t.mode == "lines"][:2]
    assert upper.fill == "tonexty" and lower.fill is None
    return lower, upper


def test_edf_bands_are_the_exact_ones_of_the_json(paper):
    bands = {(b["model"], b["optimizer"]): b for b in paper.data["edf_bands"]}
    assert set(bands) == {(m, o) for m in MODELS for o in ("adamw", "sgd")}
    for (model, opt), b in bands.items():
        assert b["method"] == ("dkw" if diverge_lr(model, opt) else "ld_equal_tailed")  # diverged trials tie at 90
        lower, upper = band_traces(figure(paper, f"edf_{opt}_10ep").figure, model)
        assert list(lower.x) == pytest.approx(b["error"]) and list(lower.y) == pytest.approx(b["lower"])
        assert list(upper.y) == pytest.approx(b["upper"])
    subtitle = figure(paper, "edf_adamw_10ep").figure.layout.title.subtitle.text
    assert "DKW for 6 of 9 (tied errors)" in subtitle and "Learned-Miller-DeStefano for 3 of 9" in subtitle


def test_tuning_curves_with_exact_bands_beside_the_expected_best(paper):
    fig = figure(paper, "tuning_curve_adamw_10ep").figure
    subtitle = fig.layout.title.subtitle.text
    assert "Lourie et al." in subtitle and "n / 6.25 = 10" in subtitle and "Dodge" in subtitle
    ks = sorted({c["informative_k"] for c in paper.data["tuning_curves"] if c["optimizer"] == "adamw"})
    assert f"band drawn up to k = {ks[0]}-{ks[-1]}, inside 0-100%" in subtitle
    assert paper.data["expected_best_estimator"] == "unbiased"
    low = [t for t in fig.data if "Dodge" in (t.legendgroup or "")]
    assert sum(bool(t.showlegend) for t in low) == 1 and all(t.visible == "legendonly" for t in low)  # one toggle
    curves = {c["model"]: c for c in paper.data["tuning_curves"] if c["optimizer"] == "adamw"}
    groups = {g["model"]: g for g in paper.data["groups"] if g["optimizer"] == "adamw"}
    assert sorted(curves) == sorted(MODELS)
    for model, c in curves.items():
        g = groups[model]
        assert c["k"] == list(range(1, 65)) and c["confidence"] == 0.95 and 1 <= c["informative_k"] < 64
        median = next(t for t in fig.data if t.legendgroup == model and t.showlegend)
        assert list(median.y) == pytest.approx(c["median"])
        lower, upper = band_traces(fig, model)  # drawn while it says something: inside 0-100%
        k = c["informative_k"]
        assert list(lower.x) == list(range(1, k + 1)) and min(c["lower"][:k]) > 0 and max(c["upper"][:k]) < 100
        assert list(lower.y) == pytest.approx(c["lower"][:k]) and list(upper.y) == pytest.approx(c["upper"][:k])
        unbiased = next(t for t in fig.data if (t.hovertemplate or "").startswith(f"{model}, expected best"))
        dotted = next(t for t in low if (t.hovertemplate or "").startswith(f"{model}, "))
        for k, value in g["expected_best"].items():
            assert unbiased.y[int(k) - 1] == pytest.approx(value)
            assert dotted.y[int(k) - 1] == pytest.approx(g["expected_best_low_variance"][k])
        assert g["expected_best_low_variance"]["1"] == pytest.approx(g["expected_best"]["1"])  # both the mean
        assert all(g["expected_best_low_variance"][k] >= g["expected_best"][k] - 1e-9 for k in g["expected_best"])


def test_the_full_detail_is_one_click_away(paper):
    for section in (s for s in paper.page.sections if s.anchor.startswith("slice-")):
        details = [b for b in section.blocks if isinstance(b, Details)]
        assert len(details) == 1
        whole = [b for b in details[0].blocks if isinstance(b, Figure)]
        table = [b for b in details[0].blocks if isinstance(b, Table)]
        assert len(whole) == 1 and whole[0].folded and whole[0].facets == ()
        assert len(models_by_axis(whole[0].figure)) == 1  # every model in one panel
        assert len(table) == 1 and len(table[0].rows) == 9 * 64
    assert paper.html.count('<details class="more">') >= 4


def test_the_verdicts_open_with_one_matrix_per_optimizer_and_budget(paper):
    """Rows and columns the models in the figures' order; a cell is P(row better than column) of the
    pair's verdict, framed when decided, its sentence on hover; the 72 sentences folded below."""
    from stability.analysis.plot_style import esc

    verdicts = next(s for s in paper.page.sections if s.anchor == "verdicts")
    matrices = [b for b in verdicts.blocks if isinstance(b, Figure)]
    assert [f.name for f in matrices] == ["verdict_matrix_paper_synthetic_adamw_10ep",
                                          "verdict_matrix_paper_synthetic_sgd_10ep"]
    assert not any(f.wide for f in matrices)  # side by side
    [folded] = [b for b in verdicts.blocks if isinstance(b, Details)]
    assert not [b for b in verdicts.blocks if isinstance(b, Verdict)]  # no wall of sentences above the fold
    assert len(folded.blocks) == 2 * 36 and all(isinstance(b, Verdict) for b in folded.blocks)
    assert [b.decided for b in folded.blocks] == sorted((b.decided for b in folded.blocks), reverse=True)
    order = list(dict.fromkeys(row[0].text for row in next(s for s in paper.page.sections
                                                           if s.anchor == "summary").blocks[0].rows))
    for opt, fig in zip(("adamw", "sgd"), (m.figure for m in matrices)):
        heat, frames = fig.data
        assert list(heat.x) == order and list(heat.y) == order and fig.layout.yaxis.autorange == "reversed"
        at = {m: i for i, m in enumerate(order)}
        framed = set(zip(frames.y, frames.x))
        mine = [v for v in paper.data["verdicts"] if v["optimizer"] == opt]
        assert len(mine) == 36 and all(v["holm_n"] == 72 for v in mine)
        for v in mine:
            i, j = at[v["a"]], at[v["b"]]
            assert heat.z[i][j] == pytest.approx(v["p_a_better"]) and heat.z[j][i] == pytest.approx(1 - v["p_a_better"])
            decided = v["decision"] != "undecided"
            assert ((v["a"], v["b"]) in framed) == decided and ((v["b"], v["a"]) in framed) == decided
            assert heat.text[i][j].startswith("<b>") == decided
            assert heat.customdata[i][j].replace("<br>", " ") == esc(v["sentence"])
        assert all(heat.z[i][i] is None for i in range(9))
        assert "Holm-adjusted over 72 comparisons" in fig.layout.title.subtitle.text.replace("<br>", " ")


def test_facet_choice_follows_the_names():
    def titles(models, by="auto"):
        return [(f.title, sorted(f.arms)) for f in facets({m: m for m in models}, by)]

    assert titles(["vit_p_tiny", "vit_c_tiny"]) == [("", ["vit_c_tiny", "vit_p_tiny"])]  # one panel: as before
    assert titles(["vit_p_tiny", "vit_c_tiny", "vit_p_small", "vit_c_small"]) == [
        ("tiny", ["vit_c_tiny", "vit_p_tiny"]), ("small", ["vit_c_small", "vit_p_small"])]
    assert [t for t, _ in titles(MODELS)] == list(PANELS)
    assert [t for t, _ in titles(MODELS, "family")] == ["regnety", "vit_c", "vit_p"]
    assert len(titles(MODELS, "model")) == 9 and len(titles(MODELS, "none")) == 1
    assert len(titles([f"net{i}" for i in range(8)])) == 8  # no structure, too many for one panel
    unpaired = [f"alpha_{i}gf" for i in range(1, 5)] + [f"beta_{i}gf" for i in range(5, 9)]  # no size in both
    assert titles(unpaired) == [("alpha", unpaired[:4]), ("beta", unpaired[4:])]
    assert titles(["deit_tiny", "deit_tiny_distilled", "deit_small", "deit_small_distilled"])[0] == (
        "tiny", ["deit_tiny", "deit_tiny_distilled"])


def test_facet_by_is_in_the_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "--facet-by {auto,size,family,model,none}" in out and "regnety_1gf share the 1gf panel" in out


# --- a study still running ----------------------------------------------------------------------

def test_running_trials_are_shown_near_the_top(tmp_path):
    root = make_study(tmp_path, samples=3, failed=False)
    now = 1_800_000_000.0
    ResultsStore(root).write_running({
        "t-run-1": {"epoch": 3, "epochs": 10, "model": "vit_p_tiny", "optimizer": "adamw", "updated": now - 30},
        "t-run-2": {"epoch": 7, "epochs": 10, "model": "vit_c_tiny", "optimizer": "sgd", "updated": now - 600},
        "vit_p_tiny-adamw-0-10": {"epoch": 10, "epochs": 10, "model": "vit_p_tiny", "optimizer": "adamw"},  # stored
        "junk": ["not", "a", "record"]})
    page, html, _ = build(root, tmp_path / "r.html")
    anchors = [s.anchor for s in page.sections]
    assert anchors.index("running") < anchors.index("summary")
    running = page.sections[anchors.index("running")]
    assert running.title == "Running now (2)" and "still running" in running.note
    rows = [[c.text for c in row] for row in running.blocks[0].rows]
    assert [r[:3] for r in rows] == [["t-run-2", "vit_c_tiny", "sgd"], ["t-run-1", "vit_p_tiny", "adamw"]]
    assert rows[1][3] == "epoch 3 of 10 (30%)"
    assert "2 still running" in page.subtitle[0] and "Running now (2)" in html


@pytest.mark.parametrize("content", [b'{"updated": 1, "trials": {"a": {"epo', b"\x00\xff garbage", b"[1, 2]",
                                     b'{"trials": [1, 2]}', b'{"trials": {"a": 5, "b": null}}', b""],
                         ids=["truncated", "binary", "list", "trials-list", "entries-not-records", "empty"])
def test_a_damaged_running_json_is_ignored(content, tmp_path, request):
    from stability.report.load import running_trials

    root = make_study(tmp_path, samples=3, failed=False)
    (root / "running.json").write_bytes(content)
    assert running_trials(read_study(root)) == []
    if request.node.callspec.id == "truncated":  # one whole report: written, no running section
        page, html, _ = build(root, tmp_path / "r.html")
        assert "running" not in [s.anchor for s in page.sections] and "still running" not in html


def test_odd_values_in_running_json_are_left_blank(tmp_path):
    from stability.report.load import running_trials
    from stability.report.tables import running_table

    root = make_study(tmp_path, samples=3, failed=False)
    ResultsStore(root).write_running({"t": {"epoch": "three", "epochs": True, "model": 5, "optimizer": "adamw",
                                            "updated": 1e300}})
    found = running_trials(read_study(root))
    assert found == [{"trial_id": "t", "model": None, "optimizer": "adamw", "epoch": None, "epochs": None,
                      "updated": 1e300}]
    table = running_table([{"path": str(root), "running_trials": found}], now=1_800_000_000.0)
    assert [c.text for c in table.rows[0]] == ["t", "", "adamw", "", ""]  # a time no clock can show: blank


# --- a real browser --------------------------------------------------------------------------------

@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} missing (apt-get install chromium)")
@pytest.mark.browser
def test_screenshot_of_the_paper_sized_report(paper, tmp_path):
    """Drawn by Chromium: every figure drawn, no legend scrolls, each legend below its axis titles,
    the three families' colours on the page. STABILITY_SCREENSHOT_DIR keeps the PNG for a look."""
    from PIL import Image

    out = tmp_path / "report.html"
    out.write_text(paper.html, encoding="utf-8")
    shot = tmp_path / "paper.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-dev-shm-usage",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=8000", "--window-size=1400,4600"]
    proc = subprocess.run([CHROMIUM, *flags, f"--screenshot={shot}", "--dump-dom", out.as_uri()], capture_output=True,
                          text=True, timeout=180, check=False)
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
    if os.environ.get("STABILITY_SCREENSHOT_DIR"):
        shutil.copy(shot, Path(os.environ["STABILITY_SCREENSHOT_DIR"]) / "paper_report.png")
    figures = proc.stdout.split('<div id="fig-')[1:]
    assert len(figures) == len(paper.page.figures())
    for fig in figures:
        name = fig[:fig.index('"')]
        assert "js-plotly-plot" in fig[:300], name  # drawn
        assert all(re.search(r'height="0"', bar) for bar in re.findall(r'<rect class="scrollbar"[^>]*>', fig)), name
        legend = re.search(r'class="legend"[^>]*transform="translate\([\d.]+,([\d.]+)\)"', fig)
        titles = [float(y) for y in re.findall(r'class="x\d*title"[^>]*?\sy="([\d.]+)"', fig)]
        if legend and titles:
            assert float(legend.group(1)) > max(titles) + 3, name  # the legend starts below the lowest axis title
    img = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert img.shape[:2] == (4600, 1400)
    layout = next(f.figure for f in paper.page.figures() if f.name == "edf_adamw_10ep")
    for model in ("regnety_4gf", "vit_c_4gf", "vit_p_4gf"):  # each family's mid shade, in the EDFs and points
        colour = next(t.line.color for t in layout.data if t.legendgroup == model and t.showlegend)
        rgb = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)])
        assert (np.abs(img - rgb).sum(axis=2) < 30).sum() > 300, model
