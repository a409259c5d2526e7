"""A report spec: its model, where specs are found, and the checks made before its sweep starts.

Apart from :mod:`flows.report` so that the command can load and refuse a spec without importing
torch or Prefect (a bad spec is answered in about a second).

    spec = load_spec("ci_tiny")           # deploy/reports/ci_tiny.yaml, or a path
    check_rows_distinct(spec, spec.base())
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from flows.config import (ConfigError, DistilleryConfig, check_grid_replicates, format_validation_error, grid_points,
                          resolve_config, split_point, with_overrides)
from flows.strict_yaml import DuplicateKeyError, load_yaml
from tasks.report.knobs import at_baseline
from tasks.report.rows import RowIdentity, row_identity


class ReportSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    title: str = Field(description="The report's heading.")
    preset: str = Field(description="The preset every point starts from.")
    set: list[str] = Field(default_factory=list, description="section.field=VALUE overrides for every point.")
    notes: str = Field("", description="Markdown placed under the heading (what was chosen and why).")
    grids: list[dict[str, list[str]]] = Field(min_length=1, description="Grids whose points are run in order; "
                                              "a grid's `replicates: [N]` runs its points N times instead.")
    replicates: int = Field(5, ge=1, le=100, description="Runs of the whole pipeline per point (run seeds seed..seed+R-1).")
    share_teacher: bool = Field(True, description="One teacher (and its class statistics) for every replicate; "
                                "false: a teacher per replicate too.")
    margin: float = Field(0.005, ge=0, lt=1, description="Non-inferiority margin of claim (c), in top-1 (0.005 = half a point).")
    discussion: str = Field("", description="Markdown after the answers: what the numbers mean, what was checked.")
    baseline: dict[str, str] = Field(default_factory=dict, description="A knob sweep's preset values "
                                     "(section.field: value): each point with a knob moved is compared with the "
                                     "point at the preset's value on validation top-1 (tasks.report.knobs).")

    @model_validator(mode="after")
    def _grids_checked(self) -> ReportSpec:
        for grid in self.grids:
            check_grid_replicates(grid)
        for knob, value in self.baseline.items():
            if not any(value in grid.get(knob, []) for grid in self.grids):
                raise ValueError(f"baseline {knob}={value}: no grid runs {knob} at {value}; add it to the grids "
                                 "that vary it (the other values are compared with it)")
        return self

    def base(self, *, artifact_root: str | None = None, device: str | None = None) -> DistilleryConfig:
        return resolve_config(preset=self.preset, overrides=self.set, artifact_root=artifact_root, device=device)


def check_rows_distinct(spec: ReportSpec, base: DistilleryConfig) -> None:
    """ConfigError when two of the points the claims read (those at the baseline's values) would make
    rows the claims cannot tell apart: they differ only in a knob no results column shows."""
    seen: dict[RowIdentity, tuple[dict[str, str], DistilleryConfig]] = {}
    for point in (p for grid in spec.grids for p in grid_points(grid)):
        settings, _ = split_point(point, spec.replicates)
        if not at_baseline(settings, spec.baseline):
            continue
        config = with_overrides(base, settings)
        identity = row_identity(config)
        other, other_config = seen.setdefault(identity, (settings, config))
        if other_config != config:  # the same config twice (two grids sharing a point) is one row
            differ = sorted(k for k in {*settings, *other} if settings.get(k) != other.get(k))
            factor = f" at {identity.compression:g}x" if identity.compression else ""
            raise ConfigError(
                f"report spec: the points '{_point_text(other)}' and '{_point_text(settings)}' make the same results "
                f"row ({identity.mode}, IPC {identity.ipc}, {identity.labels} labels{factor}), so the claims could not "
                f"tell them apart: they differ in {', '.join(differ)}. Add `baseline: {{{differ[0]}: <the preset's "
                "value>}` to compare that knob on validation (the claims then read the preset's value), or split the "
                "grids into two specs")


def _point_text(point: dict[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in point.items()) or "(no overrides)"


def load_spec(name_or_path: str) -> ReportSpec:
    """A spec by name (deploy/reports) or by path; ConfigError names the problem."""
    folder = resources.files("deploy") / "reports"
    names = sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))
    if name_or_path in names:
        text, origin = (folder / f"{name_or_path}.yaml").read_text(), f"report {name_or_path}"
    elif Path(name_or_path).is_file():
        text, origin = Path(name_or_path).read_text(), f"report spec {name_or_path}"
    else:
        raise ConfigError(f"no report spec {name_or_path!r}: give a YAML file or one of: {', '.join(names)}")
    try:
        tree = load_yaml(text)
        if isinstance(tree, dict):  # grid values may be written as YAML numbers; points are strings
            tree["grids"] = [{k: [str(v) for v in vs] if isinstance(vs, list) else vs for k, vs in g.items()}
                             if isinstance(g, dict) else g for g in tree.get("grids") or []]
            if isinstance(tree.get("baseline"), dict):
                tree["baseline"] = {k: str(v) for k, v in tree["baseline"].items()}
        return ReportSpec.model_validate(tree)
    except DuplicateKeyError as err:
        raise ConfigError(f"{origin}: {err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{origin} is not valid YAML: {err}") from None
    except ValidationError as err:
        raise ConfigError(f"{origin}: " + format_validation_error(err, ReportSpec, "spec")) from None
