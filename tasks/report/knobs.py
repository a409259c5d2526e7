"""Knob sweeps judged against a preset's values, on validation top-1: how a recipe is chosen.

A report spec with a ``baseline`` (``{knob: the preset's value}``) gets one table row per point
that sets a knob: a point whose knob is away from its baseline value is compared with the point
that differs from it only there (the same other settings, the knob at its baseline), as a paired
difference of validation top-1 over the replicates with a 95 % two-sided t-interval on n - 1
degrees of freedom. The rule of docs/student-recipe.md: a value replaces the preset's only when
its interval lies wholly above 0. Test top-1 is not read.

    rows = knob_rows(rows, points, {"evaluate.lr": "0.05"})   # one dict per point, for render_table
"""

from __future__ import annotations

from tasks.report.rows import Row


def knob_rows(rows: list[Row], points: list[dict[str, str]], baseline: dict[str, str]) -> list[dict[str, str]]:
    """The knob table: ``rows[i]`` is the result of ``points[i]``; points that set no baseline knob are
    left out."""
    from tasks.report.decisions import Decision  # scipy: here, so a spec's checks (at_baseline) load without it

    by_point = {_key(point): row for point, row in zip(points, rows)}
    table = []
    for point, row in zip(points, rows):
        knobs = [knob for knob in baseline if knob in point]
        if not knobs:
            continue
        moved = [knob for knob in knobs if point[knob] != baseline[knob]]
        knob = moved[0] if moved else knobs[0]
        others = " ".join(f"{k}={v}" for k, v in point.items() if k != knob) or "(none)"
        line = {"knob": knob, "value": point[knob] + ("" if moved else " (preset)"), "other settings": others,
                "replicates": str(len(row["val_runs"])), "val top-1": _mean_sd(row),
                "minus the preset's value, 95 % interval": "", "replicates to settle": ""}
        reference = by_point.get(_key({**point, knob: baseline[knob]})) if len(moved) == 1 else None
        if reference is not None:
            decision = Decision.paired(line["value"], row["val_runs"], reference["val_runs"])
            low, high = decision.interval()
            verdict = " **replaces**" if low > 0 else ""
            line["minus the preset's value, 95 % interval"] = f"{decision.mean:+.4f} [{low:+.4f}, {high:+.4f}]{verdict}"
            settle = decision.replicates_to_settle()
            line["replicates to settle"] = "" if low > 0 or high < 0 else (str(settle) if settle else "n/a")
        table.append(line)
    return table


def at_baseline(point: dict[str, str], baseline: dict[str, str]) -> bool:
    """Whether ``point`` leaves every baseline knob at its preset value (or does not set it): the
    points the report's claims, plot and grids read."""
    return all(point.get(knob, value) == value for knob, value in baseline.items())


def _key(point: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(point.items()))


def _mean_sd(row: Row) -> str:
    return "n/a" if row["val_top1"] is None else f"{row['val_top1']:.4f} ± {row['val_top1_std']:.4f}"
