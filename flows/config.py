"""The root config: one pydantic tree assembled from the stages' own config models.

Resolution order, later wins: model defaults < preset or config file < ``--set`` overrides <
``--artifact-root`` / ``--device``. ``DISTILLERY_HOME`` replaces the default artifact root.

    config = resolve_config(preset="fashion_mnist", overrides=["teacher.epochs=2"])
    print(dump_yaml(config))
"""

from __future__ import annotations

import difflib
import itertools
import os
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from flows.strict_yaml import DuplicateKeyError, load_yaml
from tasks.data.config import DataConfig
from tasks.runtime_config import RuntimeConfig
from tasks.stages.evaluate.config import EvaluateConfig
from tasks.stages.prune.config import PruneConfig
from tasks.stages.relabel.config import RelabelConfig
from tasks.stages.stats.config import StatsConfig
from tasks.stages.synthesize.config import SynthesisConfig
from tasks.stages.teacher.config import TeacherConfig

DEFAULT_PRESET = "fashion_mnist"  # what `distillery run` uses when given no --config or --preset
HOME_ENV = "DISTILLERY_HOME"


class ConfigError(ValueError):
    """A config that cannot be used; the message names the field and the fix."""


class DistilleryConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    data: DataConfig = Field(default_factory=DataConfig)
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    stats: StatsConfig = Field(default_factory=StatsConfig)
    synthesis: SynthesisConfig = Field(default_factory=SynthesisConfig)
    relabel: RelabelConfig = Field(default_factory=RelabelConfig)
    prune: PruneConfig = Field(default_factory=PruneConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)


class PresetRef(BaseModel):
    """A config named by preset plus ``--set`` overrides, resolved when the flow starts.

    What deployments pass (deploy/deployments.py): the preset file is read at run time, so
    editing a preset changes the next scheduled run and no copy of its values can drift.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    preset: str = Field(description="a file of deploy/presets, without .yaml")
    overrides: list[str] = Field(default_factory=list, description="section.field=VALUE, as --set takes them")

    def resolve(self) -> DistilleryConfig:
        return resolve_config(preset=self.preset, overrides=self.overrides)


def config_of(given: DistilleryConfig | PresetRef) -> DistilleryConfig:
    """A flow's ``config`` parameter as a config: a preset reference is resolved now."""
    return given.resolve() if isinstance(given, PresetRef) else given


def preset_names() -> list[str]:
    folder = resources.files("deploy") / "presets"
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


def _read_yaml(text: str, origin: str) -> dict[str, Any]:
    try:
        loaded = load_yaml(text)
    except DuplicateKeyError as err:
        raise ConfigError(f"{origin}: {err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{origin} is not valid YAML: {err}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{origin} must be a mapping of sections (data:, teacher:, ...), not {type(loaded).__name__}")
    return loaded


def _preset(name: str) -> dict[str, Any]:
    if name not in preset_names():
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(preset_names())}")
    text = (resources.files("deploy") / "presets" / f"{name}.yaml").read_text()
    return _read_yaml(text, f"preset {name}")


def _config_file(path: str) -> dict[str, Any]:
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"config file {path} does not exist; give a YAML file or use --preset")
    return _read_yaml(file.read_text(), f"config file {path}")


def apply_override(tree: dict[str, Any], assignment: str) -> None:
    """Set ``section.field[.sub]=VALUE`` in ``tree``; VALUE is parsed as YAML (1, true, [a, b])."""
    path, sep, raw = assignment.partition("=")
    keys = path.strip().split(".")
    if not sep or len(keys) < 2 or not all(keys):
        raise ConfigError(f"--set {assignment!r} must look like section.field=VALUE, e.g. teacher.epochs=2")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    node = tree
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {assignment!r}: {key} is a value, not a section")
        node = child
    node[keys[-1]] = value


def format_validation_error(err: ValidationError, model: type[BaseModel] | None = None, what: str = "config") -> str:
    """Every problem on a line of its own: the field, what is wrong, the value given (a short one;
    a whole section is never echoed) and, for a misspelt field, the nearest real one of ``model``
    (the config tree unless given; a report spec's own fields for a spec)."""
    lines = []
    for problem in err.errors():
        where = ".".join(str(part) for part in problem["loc"]) or what
        message = problem["msg"].removeprefix("Value error, ")
        if problem["type"] == "extra_forbidden":
            near = difflib.get_close_matches(str(problem["loc"][-1]), _fields_at(problem["loc"][:-1], model), n=1)
            prefix = ".".join(str(part) for part in problem["loc"][:-1])
            message = (f"unknown field; did you mean {prefix + '.' if prefix else ''}{near[0]}?" if near else
                       "unknown field; `distillery config` lists every field")
        given = problem.get("input")
        shown = "" if problem["type"] == "extra_forbidden" or isinstance(given, (dict, list)) else f" (got {given!r:.60})"
        lines.append(f"  {where}: {message}{shown}")
    return f"invalid {what}:\n" + "\n".join(lines)


def _fields_at(loc: tuple[int | str, ...], model: type[BaseModel] | None = None) -> list[str]:
    """The field names of ``model``'s section at ``loc`` (empty where ``loc`` is not a section)."""
    model = model or DistilleryConfig
    for part in loc:
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field is not None else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def resolve_config(
    *,
    config_file: str | None = None,
    preset: str | None = None,
    overrides: list[str] = (),  # type: ignore[assignment]
    artifact_root: str | None = None,
    device: str | None = None,
) -> DistilleryConfig:
    """Build and validate the config; raises ConfigError with every problem listed."""
    if config_file and preset:
        raise ConfigError("give either --config FILE or --preset NAME, not both")
    tree = _config_file(config_file) if config_file else _preset(preset) if preset else {}
    runtime = tree.setdefault("runtime", {})
    if not isinstance(runtime, dict):
        raise ConfigError("runtime must be a section (a mapping of fields)")
    if os.environ.get(HOME_ENV) and "artifact_root" not in runtime:
        runtime["artifact_root"] = os.environ[HOME_ENV]
    for assignment in overrides:
        apply_override(tree, assignment)
    if artifact_root is not None:
        runtime["artifact_root"] = artifact_root
    if device is not None:
        runtime["device"] = device
    try:
        config = DistilleryConfig.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err)) from None
    return _with_absolute_root(config)


def _with_absolute_root(config: DistilleryConfig) -> DistilleryConfig:
    """Local roots become absolute so every task process agrees on them."""
    root = config.runtime.artifact_root
    if "://" in root:
        return config
    runtime = config.runtime.model_copy(update={"artifact_root": str(Path(root).expanduser().resolve())})
    return config.model_copy(update={"runtime": runtime})


def dump_yaml(config: DistilleryConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def with_overrides(config: DistilleryConfig, assignments: dict[str, str]) -> DistilleryConfig:
    """``config`` with ``{"section.field": "VALUE"}`` applied (VALUE parsed as YAML), validated again."""
    tree = config.model_dump(mode="json")
    for path, value in assignments.items():
        apply_override(tree, f"{path}={value}")
    try:
        return DistilleryConfig.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err)) from None


def parse_grid(specs: list[str]) -> dict[str, list[str]]:
    """``["synthesis.ipc=10,50", ...]`` to ``{"synthesis.ipc": ["10", "50"]}``; one message per bad spec."""
    grid: dict[str, list[str]] = {}
    for spec in specs:
        path, sep, raw = spec.partition("=")
        values = [v.strip() for v in raw.split(",")]
        if not sep or "." not in path or not all(values):
            raise ConfigError(f"--grid {spec!r} must look like section.field=V1,V2, e.g. synthesis.mode=lpld,sre2l")
        if len(set(values)) < len(values):
            twice = next(v for v in values if values.count(v) > 1)
            raise ConfigError(f"--grid {spec!r} gives {twice} twice; give each value once")
        if path.strip() in grid:
            raise ConfigError(f"--grid names {path.strip()} twice; give all its values in one --grid")
        grid[path.strip()] = values
    return grid


def grid_points(grid: dict[str, list[str]]) -> list[dict[str, str]]:
    """Every combination of the grid's values, as ``{field path: value}``, in grid order."""
    names = list(grid)
    return [dict(zip(names, values)) for values in itertools.product(*(grid[name] for name in names))]


REPLICATES = "replicates"  # a grid key that is not a setting: that grid's replicates per point, e.g. [3]


def check_grid_replicates(grid: dict[str, list[str]]) -> None:
    """A grid's own ``replicates`` is one whole number from 1 to 100; ConfigError names the fix."""
    values = grid.get(REPLICATES)
    if values is None:
        return
    if len(values) != 1 or not values[0].isdigit() or not 1 <= int(values[0]) <= 100:
        raise ConfigError(f"a grid's replicates is one whole number from 1 to 100 (e.g. replicates: [3]), "
                          f"got {values}; it sets that grid's replicates per point instead of the spec's")


def split_point(point: dict[str, str], replicates: int) -> tuple[dict[str, str], int]:
    """A point's settings and its replicates: its grid's ``replicates`` when given, else ``replicates``."""
    return {k: v for k, v in point.items() if k != REPLICATES}, int(point.get(REPLICATES, replicates))
