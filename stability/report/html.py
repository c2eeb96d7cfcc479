"""HTML pieces of the stability report: one self-contained page that works offline.

plotly.js is inlined once in the head; a Content-Security-Policy forbids every network
request, so the page renders the same with or without a connection. Every text that comes
from results (names, messages, the spec) is escaped here.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence
from typing import Any

import plotly.io as pio

CSP = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
       "img-src data: blob:; font-src data:; connect-src 'none'; base-uri 'none'; form-action 'none'")

CSS = """
:root { --fg: #1d2330; --muted: #5b6475; --line: #e3e6ec; --head: #f5f6f9; --accent: #3658d4; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: #fff;
       font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; }
header { padding: 18px 28px 10px; border-bottom: 1px solid var(--line); background: var(--head); }
header h1 { margin: 0 0 4px; font-size: 21px; }
header p { margin: 2px 0; color: var(--muted); }
nav { position: sticky; top: 0; z-index: 5; background: #fff; border-bottom: 1px solid var(--line);
      padding: 6px 28px; font-size: 13px; white-space: nowrap; overflow-x: auto; }
nav a { color: var(--accent); text-decoration: none; margin-right: 16px; }
main { max-width: 1400px; margin: 0 auto; padding: 8px 28px 40px; }
section { margin-top: 22px; }
h2 { font-size: 18px; margin: 18px 0 6px; padding-bottom: 4px; border-bottom: 2px solid var(--line); }
h3 { font-size: 15px; margin: 14px 0 4px; }
p.note { color: var(--muted); margin: 4px 0 8px; max-width: 980px; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(540px, 1fr)); gap: 10px 18px; }
.fig { min-width: 0; border: 1px solid var(--line); border-radius: 6px; padding: 4px; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; font-size: 12.5px; font-variant-numeric: tabular-nums; }
th, td { padding: 4px 6px; border-bottom: 1px solid var(--line); text-align: right; white-space: nowrap; }
th { background: var(--head); font-weight: 600; white-space: normal; vertical-align: bottom; }
td.text, th.text { text-align: left; }
td.wrap { white-space: normal; min-width: 150px; max-width: 230px; text-align: left; }
td.msg { text-align: left; white-space: normal; max-width: 640px; word-break: break-word; }
td small, span.ci { color: var(--muted); font-size: 11px; }
tr:hover td { background: #fafbff; }
pre { background: var(--head); padding: 10px 12px; border-radius: 6px; overflow-x: auto; font-size: 12px; }
details summary { cursor: pointer; color: var(--accent); margin: 6px 0; }
"""


SHORT = {"weight_decay": "wd"}


def esc(text: Any) -> str:
    """Escape any value for HTML text or attribute context."""
    return html.escape("" if text is None else str(text), quote=True)


def fmt(x: Any, digits: int = 2) -> str:
    """A number for a table cell; blanks for missing values."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return ""
    if isinstance(x, float):
        if x != 0 and (abs(x) < 1e-2 or abs(x) >= 1e5):
            return f"{x:.2e}"
        return f"{x:.{digits}f}"
    return esc(x)


def fmt_p(p: float | None) -> str:
    if p is None or not math.isfinite(p):
        return ""
    return f"{p:.2e}" if p < 1e-3 else f"{p:.3f}"


def cell(value: str, cls: str = "") -> str:
    """A pre-rendered (already escaped) cell."""
    return f'<td class="{cls}">{value}</td>' if cls else f"<td>{value}</td>"


def table(columns: Sequence[tuple[str, str]], rows: Iterable[Sequence[str]]) -> str:
    """columns: (title, css class); rows: cells already rendered with `cell`."""
    head = "".join(f'<th class="{c}">{esc(t)}</th>' for t, c in columns)
    body = "\n".join("<tr>" + "".join(r) + "</tr>" for r in rows)
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody></table></div>'


def figure_div(fig, div_id: str, height: int | None = None) -> str:
    """A figure as a div plus its drawing script (plotly.js itself is in the page head)."""
    height = height or int(fig.layout.height or 420)
    config = {"displaylogo": False, "responsive": True, "toImageButtonOptions": {"format": "svg"},
              "modeBarButtonsToRemove": ["select2d", "lasso2d", "zoomIn2d", "zoomOut2d", "autoScale2d", "toggleSpikelines"]}
    body = pio.to_html(fig, include_plotlyjs=False, full_html=False, config=config, div_id=div_id,
                       default_width="100%", default_height=f"{height}px")
    return f'<div class="fig">{body}</div>'


def grid(items: Iterable[str]) -> str:
    return '<div class="grid">' + "".join(items) + "</div>"


def page(title: str, subtitle_lines: Sequence[str], nav: Sequence[tuple[str, str]], sections: Sequence[str]) -> str:
    """The whole document; titles and subtitles are raw text, sections already rendered."""
    from plotly.offline import get_plotlyjs

    links = "".join(f'<a href="#{esc(anchor)}">{esc(name)}</a>' for anchor, name in nav)
    subtitle = "".join(f"<p>{esc(line)}</p>" for line in subtitle_lines)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)}</title>
<style>{CSS}</style>
<script type="text/javascript">{get_plotlyjs()}</script>
</head>
<body>
<header><h1>{esc(title)}</h1>{subtitle}</header>
<nav>{links}</nav>
<main>
{"".join(sections)}
</main>
</body>
</html>
"""


def section(anchor: str, title: str, *parts: str, note: str = "") -> str:
    note_html = f'<p class="note">{esc(note)}</p>' if note else ""
    return f'<section id="{esc(anchor)}"><h2>{esc(title)}</h2>{note_html}{"".join(parts)}</section>'


# --- the report page --------------------------------------------------------------------------

def _ci(stat: dict[str, Any], name: str, digits: int = 2) -> str:
    lo, hi = (stat.get("ci") or {}).get(name) or (None, None)
    if lo is None or hi is None:
        return ""
    return f'<br><span class="ci">[{fmt(lo, digits)}, {fmt(hi, digits)}]</span>'


def _g(x: Any) -> str:
    return "" if x is None else f"{x:.2g}"


def _range(stat: dict[str, Any], param: str) -> str:
    r = (stat.get("good_range") or {}).get(param)
    if not r or r.get("median") is None:
        return ""
    return f'{_g(r["median"])}<br><span class="ci">[{_g(r["lo"])}, {_g(r["hi"])}]</span>'


def summary_table(groups: list[dict[str, Any]], split_by: Sequence[str], params: Sequence[str], multi_study: bool) -> str:
    keys = (["study"] if multi_study else []) + ["model", "optimizer", "epochs"] + list(split_by)
    columns = [(k, "text") for k in keys] + [(c, "") for c in (
        "n", "diverged / failed", "best", "median", "mean", "q25 - q75",
        "near-opt 1 pt", "near-opt 2 pts", "expected best of k trials")] + [(f"good {SHORT.get(p, p)}", "") for p in params]
    rows = []
    for g in groups:
        eb = g.get("expected_best") or {}
        eb_text = ", ".join(f"{esc(k)}:&nbsp;{fmt(v, 1)}" for k, v in eb.items())
        rows.append([cell(esc(g.get(k)), "text") for k in keys] + [
            cell(fmt(g["n"])), cell(f'{fmt(g["n_diverged"])} / {fmt(g["n_failed"])}'), cell(fmt(g["min"])),
            cell(fmt(g["median"]) + _ci(g, "median")), cell(fmt(g["mean"]) + _ci(g, "mean")),
            cell(f'{fmt(g["q25"])} - {fmt(g["q75"])}' if g["q25"] is not None else ""),
            cell(fmt(g["near_opt_1"]) + _ci(g, "near_opt_1")), cell(fmt(g["near_opt_2"]) + _ci(g, "near_opt_2")),
            cell(f"<small>{eb_text}</small>", "wrap"),
        ] + [cell(_range(g, p)) for p in params])
    return table(columns, rows)


def ks_table(rows: list[dict[str, Any]], first: Sequence[str]) -> str:
    columns = [(k, "text") for k in first] + [("a", "text"), ("b", "text"), ("D", ""), ("p", ""), ("n a", ""), ("n b", "")]
    body = [[cell(esc(r.get(k)), "text") for k in first] + [
        cell(esc(r["a"]), "text"), cell(esc(r["b"]), "text"), cell(fmt(r["D"], 3)), cell(fmt_p(r["p"])),
        cell(fmt(r["n_a"])), cell(fmt(r["n_b"]))] for r in rows]
    return table(columns, body) if rows else '<p class="note">Nothing to compare: each slice holds a single arm.</p>'


def failed_table(trials) -> str:
    failed = trials[trials["status"].astype(str) == "failed"]
    rows = [[cell(esc(r.get("study")), "text"), cell(esc(r.get("trial_id")), "text"), cell(esc(r.get("model")), "text"),
             cell(esc(r.get("optimizer")), "text"), cell(fmt(r.get("lr"))), cell(fmt(r.get("weight_decay"))),
             cell(esc(r.get("error")), "msg")] for r in failed.to_dict(orient="records")]
    cols = [("study", "text"), ("trial", "text"), ("model", "text"), ("optimizer", "text"), ("lr", ""), ("wd", ""),
            ("message", "text")]
    return table(cols, rows)


def spec_blocks(records: Sequence[dict[str, Any]]) -> str:
    import yaml

    out = []
    for rec in records:
        text = yaml.safe_dump(rec["spec"], sort_keys=False, default_flow_style=None, width=110) if rec["spec"] else "(no study.yaml in this folder)"
        out.append(f'<details open><summary>{esc(rec["path"])}: {esc(", ".join(rec["studies"]))}</summary>'
                   f"<pre>{esc(text)}</pre></details>")
    return "".join(out)


LAYER_NOTE = ("Mean pairwise cosine similarity between patch tokens after each block, on validation images "
              "(higher: more over-smoothed; Gong et al. 2021). Lines: median over the trials that ended normally "
              "(diverged and failed ones left out); bands: interquartile range. One panel per optimizer.")


def layer_section(trials, split_by: Sequence[str], colours: dict[str, str], fig) -> str:
    """The over-smoothing section, or "" when no trial recorded per-block similarities."""
    import analysis as an

    if not an.has_layer_similarity(trials):
        return ""
    return section("layers", "Over-smoothing: patch cosine similarity by layer", grid(
        fig(f"patch_cos_sim_layers_{e}ep", an.plot_layer_similarity(an.layer_similarity_data(trials, e, split_by=split_by),
                                                                    colours))
        for e in an.layer_budgets(trials)), note=LAYER_NOTE)


def factor_section(trials, factor: dict[str, Any], split_by: Sequence[str], params: Sequence[str], multi_study: bool,
                   seed: int, fig) -> str:
    """EDFs (absolute and delta-to-best) of every slice with arms split by one factor column."""
    import analysis as an

    column = factor["column"]
    keys = [*split_by, column]
    arms = an.arm_names(trials, keys)
    colours = an.colour_map(arms)
    height = 420 + 22 * max(0, len(arms) - 2)  # room for the legend below the axis
    parts = [summary_table(factor["groups"], keys, params, multi_study)]
    for optimizer, epochs in an.slices(trials):
        tag = f"{optimizer}_{epochs}ep_by_{column}"
        figures = []
        for delta in (False, True):
            data = an.edf_data(trials, optimizer, epochs, delta=delta, split_by=keys, seed=seed)
            data.title = f"{data.title}, by {column}"
            figures.append(fig(f"edf_{'delta_' if delta else ''}{tag}", an.plot_edf(data, colours), height))
        parts.append(grid(figures))
    levels = ", ".join("missing" if v is None else str(v) for v in factor["levels"])
    return section(f"factor-{column}", f"Split by {column}", *parts,
                   note=f"{column} takes {len(factor['levels'])} values in this study ({levels}); every arm below is a "
                        f"model at one of them. Same statistics and EDFs as above.")


def build_page(trials, curves, records, data: dict[str, Any], split_by: Sequence[str], params: Sequence[str],
               seed: int = 0) -> tuple[str, list[tuple[str, Any]]]:
    """The report's HTML and its figures as (name, plotly figure) for static export."""
    import analysis as an

    colours = an.colour_map(an.arm_names(trials, split_by))
    figures: list[tuple[str, Any]] = []
    nav = [("summary", "Summary")]

    def fig(name: str, figure, height: int | None = None) -> str:
        if height:
            figure.update_layout(height=height)
        figures.append((name, figure))
        return figure_div(figure, f"fig-{len(figures)}")

    multi_study = trials["study"].nunique() > 1
    n_failed = int((trials["status"].astype(str) == "failed").sum())
    sections = [section("summary", "Summary", summary_table(data["groups"], split_by, params, multi_study),
                        note="Per group, over every trial that did not fail (diverged trials count at their recorded "
                             "error). Brackets: 95% bootstrap intervals; good ranges: pycls bootstrap of the best "
                             "of 25% of the runs, median [2.5%, 97.5%].")]
    for optimizer, epochs in an.slices(trials):
        anchor = f"slice-{optimizer}-{epochs}"
        nav.append((anchor, f"{optimizer}, {epochs} ep"))
        tag = f"{optimizer}_{epochs}ep"
        edf_abs = an.edf_data(trials, optimizer, epochs, split_by=split_by, seed=seed)
        edf_delta = an.edf_data(trials, optimizer, epochs, delta=True, split_by=split_by, seed=seed)
        sections.append(section(
            anchor, f"{optimizer}, {epochs} epochs",
            grid([fig(f"edf_{tag}", an.plot_edf(edf_abs, colours)), fig(f"edf_delta_{tag}", an.plot_edf(edf_delta, colours))]),
            fig(f"hparams_{tag}", an.plot_hparams(an.hparam_data(trials, optimizer, epochs, split_by=split_by, seed=seed), colours)),
            grid([fig(f"expected_best_{tag}", an.plot_lines(an.expected_best_data(trials, optimizer, epochs, split_by=split_by,
                                                                                  seed=seed), colours), 560),
                  fig(f"curves_{tag}", an.plot_learning_curves(
                      an.learning_curves_data(trials, curves, optimizer, epochs, split_by=split_by),
                      an.learning_curves_data(trials, curves, optimizer, epochs, split_by=split_by, metric="train_loss"),
                      colours))]),
            note="EDFs: share of trials at or below an error (bands: 95% pointwise "
                 "bootstrap). Hyper-parameter panels: crosses are diverged trials; the bars below are the good ranges (median marked). "
                 "Expected best of k: the error a random search of k trials reaches on average."))
    for factor in data.get("factors") or []:
        nav.append((f"factor-{factor['column']}", f"by {factor['column']}"))
        sections.append(factor_section(trials, factor, split_by, params, multi_study, seed, fig))
    if trials["optimizer"].nunique() > 1:
        nav.append(("optimizers", "Optimizers"))
        sections.append(section("optimizers", "Optimizer stability", grid(
            fig(f"optimizers_{e}ep", an.plot_optimizers(an.optimizer_data(trials, e, split_by=split_by), colours))
            for e in an.epoch_budgets(trials)),
            note="Error of every trial per optimizer; diamonds mark the best (tuned) trial, the gap is between "
                 "the best errors."))
    if len(an.epoch_budgets(trials)) > 1:
        nav.append(("epochs", "Training length"))
        sections.append(section("epochs", "Training-length stability",
                                fig("epochs", an.plot_lines(an.epochs_data(trials, split_by=split_by), colours)),
                                note="Best (solid) and median (dashed) error of each training budget."))
    layers = layer_section(trials, split_by, colours, fig)
    if layers:
        nav.append(("layers", "Over-smoothing"))
        sections.append(layers)
    nav.append(("ks", "KS tests"))
    split_keys = list(split_by)
    sections.append(section("ks", "Kolmogorov-Smirnov tests",
                            "<h3>Between models</h3>", ks_table(data["ks"], ["optimizer", "epochs"]),
                            "<h3>Between optimizers</h3>", ks_table(data["ks_optimizers"], ["arm", "epochs"]),
                            note="Two-sample KS statistic D = sup |F1 - F2| between error EDFs, with its p-value "
                                 "(scipy.stats.ks_2samp)." + (f" Arms are split by {', '.join(split_keys)}." if split_keys else "")))
    if n_failed:
        nav.append(("failed", "Failed"))
        sections.append(section("failed", f"Failed trials ({n_failed})", failed_table(trials),
                                note="Left out of every statistic and figure."))
    nav.append(("spec", "Study spec"))
    sections.append(section("spec", "Study spec", spec_blocks(records)))
    studies = sorted(trials["study"].astype(str).unique())
    title = f"Stability report: {', '.join(studies)}"
    n_div = int((trials["status"].astype(str) == "diverged").sum())
    subtitle = [f"{len(trials)} trials ({n_div} diverged, {n_failed} failed) from {', '.join(r['path'] for r in records)}",
                f"models: {', '.join(sorted(trials['model'].astype(str).unique()))}; "
                f"optimizers: {', '.join(sorted(trials['optimizer'].astype(str).unique()))}; "
                f"epochs: {', '.join(str(e) for e in sorted(trials['epochs'].unique()))}"]
    return page(title, subtitle, nav, sections), figures
