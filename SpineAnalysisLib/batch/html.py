"""HTML pages of a batch: ``cases/<id>/case.html`` per case and ``report.html`` (+ ``cohort/*.png``) per cohort.

Pages are self-contained static HTML (no scripts, no network); pictures are PNG files beside them, linked
relatively, so the whole OUTDIR can be copied or served as it is.
"""

from __future__ import annotations

import html
import math
from collections import defaultdict
from pathlib import Path

from .. import imageio
from ..measure import flags as flag_rule

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: left; vertical-align: top; }
th { background: #eee; position: sticky; top: 0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.missing td.num { color: #999; }
.flag { color: #b00; font-weight: bold; }
.note { color: #666; }
img { max-width: 100%; border: 1px solid #ddd; }
"""
SCATTER_PARAMETERS = (("dhi", "DHI"), ("delta_si", "ΔSI"))
DISTRIBUTION_PARAMETERS = (("dhi", "DHI"), ("hdr", "HDR"), ("delta_si", "ΔSI"), ("height_mean_mm", "mean disc height (mm)"))
MAX_OUTLIERS = 200
#: the disc parameters that the cohort report (and the normative comparison) use
REPORT_PARAMETERS = frozenset(p for p, _ in SCATTER_PARAMETERS + DISTRIBUTION_PARAMETERS) | {"dhi", "hdr", "delta_si"}


def _e(value) -> str:
    return html.escape("" if value is None else str(value))


def _number(value, digits: int = 4) -> str:
    if value is None or value == "":
        return "—"
    value = float(value)
    if not math.isfinite(value):
        return "—"
    return f"{value:.{digits}g}"


def _page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{_e(title)}</title>"
            f"<style>{STYLE}</style></head>\n<body>\n<h1>{_e(title)}</h1>\n{body}\n</body></html>\n")


def _flagged(row: dict) -> bool:
    """The row's own flag (measure/flags.py decided it when the row was measured; CSV rows hold "true")."""
    return row.get("flag") is True or str(row.get("flag")).lower() == "true"


def measurement_table(rows: list[dict]) -> str:
    """Rows of measurements.json / the cohort table; a flagged value gets the flag text of :mod:`..measure.flags`."""
    lines = ["<table><tr><th>structure</th><th>level</th><th>parameter</th><th>value</th><th>unit</th><th>flag</th><th>note</th></tr>"]
    for row in rows:
        css = ' class="missing"' if row.get("value") is None else ""
        flag = flag_rule.flag_text(row.get("parameter"), row.get("value")) if _flagged(row) else ""
        lines.append(f"<tr{css}><td>{_e(row.get('structure'))}</td><td>{_e(row.get('level'))}</td>"
                     f"<td>{_e(row.get('parameter'))}</td><td class=\"num\">{_number(row.get('value'), 6)}</td><td>{_e(row.get('unit'))}</td>"
                     f"<td class=\"flag\">{_e(flag)}</td><td class=\"note\">{_e(row.get('note'))}</td></tr>")
    lines.append("</table>")
    return "\n".join(lines)


#: the files a case page links to, those present in the case folder
CASE_FILES = ("measurements.csv", "measurements.json", "landmarks.json", "labels.nii.gz", "summary.json", "measure_summary.json")


def write_case_page(folder: Path, case_id: str, source: str, rows: list[dict], summary: dict, age=None, sex=None) -> Path:
    """``folder/case.html``: the case's report.png and its measurement table."""
    facts = [("case", case_id), ("image", source), ("age", "—" if age is None else f"{age:g}"), ("sex", sex or "—"),
             ("model", summary.get("model")), ("device", summary.get("device")), ("levels", ", ".join(summary.get("levels", [])) or "none"),
             ("level confidence", summary.get("confidence"))]
    quality = summary.get("quality") or {}
    body = []
    if quality.get("status"):
        css = "" if quality["status"] == "ok" else ' class="flag"'
        body.append(f"<p{css}>quality: <b>{_e(quality['status'])}</b>" + "".join(f"<br>{_e(r)}" for r in quality.get("reasons", [])) + "</p>")
    body.append("<table>" + "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in facts) + "</table>")
    notes = list(summary.get("flags", [])) + list(summary.get("warnings", []))
    if notes:
        body.append("<ul>" + "".join(f"<li class=\"note\">{_e(n)}</li>" for n in notes) + "</ul>")
    # a case measured from a given segmentation (labels column) has no labels.nii.gz (and before 2026-12-07 no report.png): no broken links
    if (Path(folder) / "report.png").is_file():
        body.append('<p><a href="report.png"><img src="report.png" alt="mid-sagittal slice with named levels"></a></p>')
    files = [name for name in CASE_FILES if (Path(folder) / name).is_file()]
    body.append("<p>Files: " + ", ".join(f'<a href="{name}">{name}</a>' for name in files) + "</p>")
    body.append("<h2>Measurements</h2>")
    body.append(measurement_table(rows))
    return imageio.write_text(_page(f"SpineAnalysis - {case_id}", "\n".join(body)), Path(folder) / "case.html")


# ---------------------------------------------------------------- cohort
def _save(figure, path: Path) -> Path:
    from ..imageio import write_atomically

    return write_atomically(path, lambda temporary: figure.savefig(temporary, dpi=90), suffix=".png")


def _level_key(level: str):
    """Cranial to caudal (T12-L1 before L1-L2), unknown names last."""
    from .. import labels as scheme

    try:
        return (scheme.anatomical_rank(scheme.label_from_name(level)), level)
    except ValueError:
        return (1000.0, level)


def _disc_values(rows: list[dict]) -> dict[str, dict[str, list[tuple]]]:
    """parameter -> level -> [(value, age, sex, case_id)]"""
    values: dict[str, dict[str, list[tuple]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r.get("structure") == "disc" and r.get("value") is not None:
            values[r["parameter"]][r["level"]].append((float(r["value"]), r.get("age"), r.get("sex"), r.get("case_id")))
    return values


def _distribution_figure(values, path: Path) -> Path | None:
    from matplotlib.figure import Figure

    shown = [(p, name) for p, name in DISTRIBUTION_PARAMETERS if values.get(p)]
    if not shown:
        return None
    figure = Figure(figsize=(5 * len(shown), 4.2))
    for i, (parameter, name) in enumerate(shown):
        axis = figure.add_subplot(1, len(shown), i + 1)
        levels = sorted(values[parameter], key=_level_key)
        data = [[v[0] for v in values[parameter][level]] for level in levels]
        axis.boxplot(data, showfliers=True, flierprops=dict(markersize=2))
        axis.set_xticks(range(1, len(levels) + 1), [f"{lv}\nn={len(d)}" for lv, d in zip(levels, data)], fontsize=7)
        axis.set_title(name)
        axis.grid(axis="y", alpha=0.3)
    figure.suptitle("Distributions per disc level (the cases the statistics count)")
    figure.tight_layout()
    return _save(figure, path)


def _scatter_figure(values, parameter: str, name: str, path: Path) -> Path | None:
    from matplotlib.figure import Figure

    from ..measure import normative as healthy

    levels = sorted((lv for lv, items in values.get(parameter, {}).items() if any(item[1] is not None for item in items)), key=_level_key)
    if not levels:
        return None
    columns = min(len(levels), 5)
    rows = math.ceil(len(levels) / columns)
    figure = Figure(figsize=(3.4 * columns, 3.2 * rows))
    colours = {"F": "tab:red", "M": "tab:blue", None: "tab:gray"}
    for i, level in enumerate(levels):
        axis = figure.add_subplot(rows, columns, i + 1)
        for sex, label in (("F", "female"), ("M", "male"), (None, "sex unknown")):
            points = [(item[1], item[0]) for item in values[parameter][level] if item[1] is not None and item[2] == sex]
            if points:
                xs, ys = zip(*points)
                axis.scatter(xs, ys, s=6, alpha=0.6, color=colours[sex], label=label, rasterized=len(points) > 2000)
        mean, sd, _ = healthy.reference(parameter, level, "model")
        if mean is not None:  # the healthy reference (pooled over age and sex): mean and its 2.5th percentile
            axis.axhline(mean, color="black", linewidth=1)
            axis.axhline(mean - flag_rule.Z_LIMIT * sd, color="black", linewidth=0.8, linestyle=":")
        axis.set_title(level, fontsize=9)
        axis.set_xlabel("age (years)", fontsize=8)
        axis.set_ylabel(name, fontsize=8)
        axis.tick_params(labelsize=7)
        if i == 0:
            axis.legend(fontsize=6, loc="best")
    figure.suptitle(f"{name} against age (black: healthy reference mean, dotted: its {flag_rule.LOW_PERCENTILE:g}th percentile)", fontsize=10)
    figure.tight_layout()
    return _save(figure, path)


def _attention_sections(state, errors: list[dict], done, qualities: dict) -> list[str]:
    """"Failed cases (N)": cases that stopped with an error and finished cases whose quality is "failed";
    then "Cases for review (M)". Both come first in the report."""
    failed = [(c, qualities[c.case_id]) for c in done if qualities.get(c.case_id, {}).get("status") == "failed"]
    review = [(c, qualities[c.case_id]) for c in done if qualities.get(c.case_id, {}).get("status") == "review"]
    body = [f"<h2>Failed cases ({len(errors) + len(failed)})</h2>"]
    if errors or failed:
        body.append("<table><tr><th>case</th><th>stage</th><th>reason</th><th>path</th></tr>")
        for e in sorted(errors, key=lambda e: e["case_id"]):
            body.append(f"<tr><td>{_e(e['case_id'])}</td><td>{_e(e.get('stage'))}</td><td class=\"flag\">{_e(e.get('error'))}</td><td class=\"note\">{_e(e.get('path'))}</td></tr>")
        for case, quality in sorted(failed, key=lambda item: item[0].case_id):
            link = f"cases/{state.case_dir(case).name}/case.html"
            body.append(f"<tr><td><a href=\"{_e(link)}\">{_e(case.case_id)}</a></td><td>quality</td>"
                        f"<td class=\"flag\">{_e('; '.join(quality.get('reasons', [])))}</td><td class=\"note\">{_e(case.path)}</td></tr>")
        body.append("</table>")
    else:
        body.append("<p>None.</p>")
    body.append(f"<h2>Cases for review ({len(review)})</h2>")
    if review:
        body.append("<table><tr><th>case</th><th>reasons</th></tr>")
        for case, quality in sorted(review, key=lambda item: item[0].case_id):
            link = f"cases/{state.case_dir(case).name}/case.html"
            body.append(f"<tr><td><a href=\"{_e(link)}\">{_e(case.case_id)}</a></td><td>{_e('; '.join(quality.get('reasons', [])))}</td></tr>")
        body.append("</table>")
    else:
        body.append("<p>None.</p>")
    return body


def write_cohort_report(outdir: Path, cases, rows: list[dict], comparison: list[dict], min_reference_n: int,
                        qualities: dict | None = None, include_flagged: bool = False) -> Path:
    """``OUTDIR/report.html`` with ``OUTDIR/cohort/*.png``. ``qualities``: case_id -> {"status", "reasons"} of the
    finished cases; failed and review cases are listed first and (unless ``include_flagged``) ``rows`` and
    ``comparison`` hold only the "ok" cases."""
    from . import normative
    from .state import BatchState

    outdir = Path(outdir)
    state = BatchState(outdir)
    done = [c for c in cases if state.is_done(c)]
    errors = [state.error_of(c) for c in cases if not state.is_done(c)]
    errors = [e for e in errors if e]
    pending = len(cases) - len(done) - len(errors)
    values = _disc_values(rows)
    figures = outdir / "cohort"
    qualities = qualities or {}
    statuses = [qualities.get(c.case_id, {}).get("status", "ok") for c in done]
    # "failed" in the sections below = stopped with an error + finished with quality "failed": say both here, so the counts add up
    body = [f"<p>{len(cases)} cases: <b>{len(done)}</b> finished (quality: {statuses.count('ok')} ok, {statuses.count('review')} for review, "
            f"{statuses.count('failed')} failed), <b>{len(errors)}</b> stopped with an error, {pending} not run yet. "
            f"{sum(1 for c in done if c.age is not None)} finished cases have an age, {sum(1 for c in done if c.sex)} a sex.</p>",
            '<p>Tables: <a href="measurements.csv">measurements.csv</a> / <a href="measurements.parquet">.parquet</a> (tidy, one row per '
            'case and measurement), <a href="normative.csv">normative.csv</a> / <a href="normative.parquet">.parquet</a> (z-scores, '
            'percentiles and flags per disc), <a href="errors.csv">errors.csv</a>.</p>']
    body += _attention_sections(state, errors, done, qualities)
    counted = sum(1 for c in done if qualities.get(c.case_id, {}).get("status", "ok") == "ok")
    body.append(f"<p class=\"note\">Statistics below: {'all ' + str(len(done)) + ' finished cases, whatever their quality status' if include_flagged else f'the {counted} finished cases with quality ok; failed and review cases are left out'}.</p>")

    body.append("<h2>Per-level summary</h2>")
    body.append("<table><tr><th>parameter</th><th>level</th><th>n</th><th>median</th><th>IQR</th><th>flagged low for age</th></tr>")
    flags = defaultdict(int)
    compared = defaultdict(int)
    for r in comparison:
        if r.get("flag") is not None:
            compared[(r["parameter"], r["level"])] += 1
            flags[(r["parameter"], r["level"])] += bool(r["flag"])
    for parameter, name in DISTRIBUTION_PARAMETERS:
        for level in sorted(values.get(parameter, {}), key=_level_key):
            data = sorted(v[0] for v in values[parameter][level])
            q = normative._quantile
            key = (parameter, level)
            flagged = f"{flags[key]} of {compared[key]}" if compared[key] else "—"
            body.append(f"<tr><td>{_e(name)}</td><td>{_e(level)}</td><td class=\"num\">{len(data)}</td><td class=\"num\">{_number(q(data, 0.5))}</td>"
                        f"<td class=\"num\">{_number(q(data, 0.25))} – {_number(q(data, 0.75))}</td><td class=\"num\">{flagged}</td></tr>")
    body.append("</table>")

    pictures = [("Distributions per level", _distribution_figure(values, figures / "distributions.png"))]
    for parameter, name in SCATTER_PARAMETERS:
        pictures.append((f"{name} against age", _scatter_figure(values, parameter, name, figures / f"{parameter}_vs_age.png")))
    for title, path in pictures:
        body.append(f"<h2>{_e(title)}</h2>")
        if path is None:
            body.append("<p class=\"note\">No data (no finished case with this measurement" + (" and an age" if "age" in title else "") + ").</p>")
        else:
            body.append(f'<p><img src="cohort/{path.name}" alt="{_e(title)}"></p>')

    outliers = normative.flagged(comparison)
    body.append(f"<h2>Outliers: discs low for age ({len(outliers)})</h2>")
    body.append(f"<p class=\"note\">Flag: {_e(flag_rule.RULE_TEXT)}. Reference: the cohort's own stratum (level, sex, "
                f"age band) when it holds at least {min_reference_n} values, else the healthy reference named in the row. "
                "See docs/batch.md.</p>")
    if outliers:
        shown = outliers[:MAX_OUTLIERS]
        if len(outliers) > len(shown):
            body.append(f"<p>The {len(shown)} lowest are listed; all are in normative.csv (column flag).</p>")
        body.append("<table><tr><th>case</th><th>age</th><th>sex</th><th>level</th><th>parameter</th><th>value</th><th>reference</th>"
                    "<th>percentile</th><th>z (healthy reference)</th><th>z (cohort, robust)</th></tr>")
        for r in shown:
            link = f"cases/{state.case_dir(r['case_id']).name}/case.html"
            body.append(f"<tr><td><a href=\"{_e(link)}\">{_e(r['case_id'])}</a></td><td>{_number(r.get('age'), 3)}</td><td>{_e(r.get('sex') or '—')}</td>"
                        f"<td>{_e(r['level'])}</td><td>{_e(r['parameter'])}</td><td class=\"num\">{_number(r['value'])}</td>"
                        f"<td>{_e(r.get('reference'))}</td><td class=\"num flag\">{_number(r.get('percentile'), 3)}</td>"
                        f"<td class=\"num\">{_number(r.get('healthy_z'), 3)}</td><td class=\"num\">{_number(r.get('cohort_z'), 3)}</td></tr>")
        body.append("</table>")
    else:
        body.append("<p>None.</p>")

    body.append(f"<h2>Cases ({len(done)} finished)</h2><p>" + ", ".join(
        f'<a href="cases/{_e(state.case_dir(c).name)}/case.html">{_e(c.case_id)}</a>' for c in sorted(done, key=lambda c: c.case_id)) + "</p>")
    return imageio.write_text(_page("SpineAnalysis cohort report", "\n".join(body)), outdir / "report.html")
