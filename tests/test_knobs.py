"""Knob sweeps against the preset's values: each moved knob against the point that differs only
there, on validation top-1, with hand-computed 95 % t-intervals; a spec whose baseline no grid runs."""

from __future__ import annotations

import pytest

from flows.config import ConfigError
from flows.report_spec import load_spec
from tasks.report.knobs import knob_rows


def row(val_runs, test_runs=None):
    mean = sum(val_runs) / len(val_runs)
    return {"val_runs": list(val_runs), "val_top1": round(mean, 4), "val_top1_std": 0.01,
            "test_runs": list(test_runs or val_runs)}


POINTS = [{"prune.ratio": "0", "evaluate.lr": "0.05"}, {"prune.ratio": "0", "evaluate.lr": "0.1"},
          {"prune.ratio": "0", "evaluate.lr": "0.2"}, {"prune.ratio": "0.975", "evaluate.lr": "0.1"},
          {"prune.ratio": "0", "evaluate.temperature": "20"}]
BASE = (0.79, 0.80, 0.80)
ROWS = [row(BASE), row((0.80, 0.82, 0.81)), row((0.81, 0.821, 0.822)),
        row((0.5, 0.5, 0.5)),  # 40x: no 40x point at lr 0.05 to compare with
        row(BASE)]


def test_each_moved_knob_is_judged_against_the_point_at_the_presets_value():
    table = knob_rows(ROWS, POINTS, {"evaluate.lr": "0.05"})
    assert [(r["knob"], r["value"], r["other settings"]) for r in table] == [
        ("evaluate.lr", "0.05 (preset)", "prune.ratio=0"), ("evaluate.lr", "0.1", "prune.ratio=0"),
        ("evaluate.lr", "0.2", "prune.ratio=0"), ("evaluate.lr", "0.1", "prune.ratio=0.975")]
    column = "minus the preset's value, 95 % interval"
    # lr 0.1: differences 0.01, 0.02, 0.01: mean 0.013333, sd 0.0057735, half-width t(0.975, 2) = 4.302653
    # times 0.0057735 / sqrt(3) = 0.014342: [-0.0010, +0.0277], not above 0; at 4 replicates the
    # half-width would be t(0.975, 3) = 3.182446 times 0.0057735 / 2 = 0.009187, under the mean
    assert table[1][column] == "+0.0133 [-0.0010, +0.0277]" and table[1]["replicates to settle"] == "4"
    # lr 0.2: differences 0.020, 0.021, 0.022: sd 0.001, half-width 0.002484: [+0.0185, +0.0235]
    assert table[2][column] == "+0.0210 [+0.0185, +0.0235] **replaces**" and table[2]["replicates to settle"] == ""
    assert table[0][column] == table[3][column] == ""  # the preset's own point; no 40x point at lr 0.05
    assert table[0]["val top-1"] == "0.7967 ± 0.0100" and table[1]["replicates"] == "3"


def test_a_baseline_no_grid_runs_is_refused_with_the_fix(tmp_path):
    spec = tmp_path / "knobs.yaml"
    spec.write_text("title: t\npreset: ci_tiny\nbaseline: {evaluate.lr: 0.05}\n"
                    "grids:\n  - evaluate.lr: [0.025, 0.1]\n")
    with pytest.raises(ConfigError, match=r"baseline evaluate.lr=0.05: no grid runs evaluate.lr at 0.05; add it"):
        load_spec(str(spec))
    assert load_spec("student_recipe").baseline["evaluate.lr"] == "0.05"  # YAML numbers read as the grids' strings
    assert load_spec("student_knobs").baseline == {"evaluate.temperature": "20", "relabel.epochs": "600"}


def test_points_the_results_row_cannot_tell_apart_are_refused_before_the_sweep_unless_a_baseline_picks_one(tmp_path):
    """Without a baseline the claims would read whichever of two same-looking rows came first (the rows
    show no augmentation); with it they read the preset's point and the knob table compares the other."""
    from flows.report import claim_rows
    from flows.report_spec import check_rows_distinct

    text = ("title: t\npreset: ci_tiny\ngrids:\n  - synthesis.mode: [random_real]\n"
            "    data.augment.crop_scale_min: [0.5, 0.25]\n  - synthesis.mode: [random_real]\n"
            "    data.augment.crop_scale_min: [0.5]\n    evaluate.labels: [hard]\n")
    (tmp_path / "same.yaml").write_text(text)
    spec = load_spec(str(tmp_path / "same.yaml"))
    with pytest.raises(ConfigError, match=r"the points 'synthesis.mode=random_real data.augment.crop_scale_min=0.5' and "
                       r"'synthesis.mode=random_real data.augment.crop_scale_min=0.25' make the same results row "
                       r"\(random_real, IPC 2, soft labels at 1x\).*they differ in data.augment.crop_scale_min. Add "
                       r"`baseline: \{data.augment.crop_scale_min: <the preset's value>\}`"):
        check_rows_distinct(spec, spec.base(artifact_root=str(tmp_path)))
    (tmp_path / "baseline.yaml").write_text(text.replace("grids:", "baseline: {data.augment.crop_scale_min: 0.5}\ngrids:"))
    spec = load_spec(str(tmp_path / "baseline.yaml"))
    check_rows_distinct(spec, spec.base(artifact_root=str(tmp_path)))
    rows = [{"n": i} for i in range(3)]  # rows[i] is the result of the spec's i-th point
    assert claim_rows(spec, rows) == [{"n": 0}, {"n": 2}]  # the 0.25 point is in the knob table only


def test_the_report_command_takes_a_spec_whose_grid_sets_its_own_replicates(tmp_path):
    """ci_tiny's full-data grid runs `replicates: [1]`: the command's check of every point took
    `replicates` for a setting and refused the spec ('--set replicates=1 must look like section.field')."""
    import argparse

    from flows.commands import _resolve

    args = argparse.Namespace(command="report", spec="ci_tiny", artifact_root=str(tmp_path), device=None)
    config, grids = _resolve(args)
    assert grids[-1]["replicates"] == ["1"] and config.runtime.artifact_root == str(tmp_path)
