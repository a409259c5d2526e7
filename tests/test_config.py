"""The config tree: defaults, presets, overrides and the messages bad input gets."""

from __future__ import annotations

import pytest

from flows.cli import main
from flows.config import ConfigError, DistilleryConfig, apply_override, dump_yaml, preset_names, resolve_config


def test_defaults_validate_and_cover_every_section():
    config = DistilleryConfig()
    assert set(config.model_dump()) == {
        "data", "teacher", "stats", "synthesis", "relabel", "prune", "evaluate", "runtime"
    }
    assert config.data.name == "fashion_mnist"


def test_every_preset_resolves():
    assert {"fashion_mnist", "ci_tiny"} <= set(preset_names())
    for name in preset_names():
        resolve_config(preset=name)


def test_set_parses_values_as_yaml_and_reaches_nested_fields():
    config = resolve_config(
        preset="ci_tiny",
        overrides=["teacher.epochs=3", "teacher.augment.flip=false", "prune.ratio=0.975", "runtime.device=cpu"],
    )
    assert config.teacher.epochs == 3
    assert config.teacher.augment.flip is False
    assert config.prune.ratio == 0.975
    assert config.runtime.device == "cpu"


def test_all_problems_are_listed_with_field_and_value():
    with pytest.raises(ConfigError) as caught:
        resolve_config(overrides=["teacher.epochs=0", "prune.ratio=1.0", "synthesis.ipc=many"])
    message = str(caught.value)
    assert "teacher.epochs: Input should be greater than or equal to 1 (got 0)" in message
    assert "prune.ratio: Input should be less than 1 (got 1.0)" in message
    assert "synthesis.ipc" in message and "'many'" in message


def test_negative_prune_ratio_is_refused():
    with pytest.raises(ConfigError, match="prune.ratio: Input should be greater than or equal to 0"):
        resolve_config(overrides=["prune.ratio=-0.1"])


def test_unknown_field_is_named():
    with pytest.raises(ConfigError, match=r"teacher\.epoch: unknown field"):
        resolve_config(overrides=["teacher.epoch=3"])


def test_unknown_section_is_named():
    with pytest.raises(ConfigError, match=r"student: unknown field"):
        resolve_config(overrides=["student.lr=1"])


def test_cross_field_rule_names_the_fix():
    with pytest.raises(ConfigError, match="lower teacher.warmup_epochs"):
        resolve_config(overrides=["teacher.epochs=1", "teacher.warmup_epochs=2"])
    with pytest.raises(ConfigError, match="crop_scale_min .* must not exceed"):
        resolve_config(overrides=["stats.augment.crop_scale_min=0.9", "stats.augment.crop_scale_max=0.5"])


def test_malformed_override_is_refused():
    with pytest.raises(ConfigError, match="section.field=VALUE"):
        apply_override({}, "epochs")
    with pytest.raises(ConfigError, match="section.field=VALUE"):
        apply_override({}, "teacher=3")


def test_malformed_yaml_file_is_refused(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("teacher: {epochs: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        resolve_config(config_file=str(bad))
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        resolve_config(config_file=str(listed))


def test_missing_config_file_and_unknown_preset_are_named(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_config(config_file=str(tmp_path / "nope.yaml"))
    with pytest.raises(ConfigError, match="unknown preset 'nope'; choose one of: .*fashion_mnist"):
        resolve_config(preset="nope")


def test_config_file_round_trips_through_dump(tmp_path):
    config = resolve_config(preset="ci_tiny", overrides=["runtime.seed=7"])
    file = tmp_path / "resolved.yaml"
    file.write_text(dump_yaml(config))
    assert resolve_config(config_file=str(file)) == config


def test_artifact_root_precedence(tmp_path, monkeypatch):
    assert resolve_config().runtime.artifact_root.endswith("/artifacts")
    monkeypatch.setenv("DISTILLERY_HOME", str(tmp_path / "home"))
    assert resolve_config().runtime.artifact_root == str(tmp_path / "home")
    assert resolve_config(artifact_root=str(tmp_path / "cli")).runtime.artifact_root == str(tmp_path / "cli")
    assert resolve_config(artifact_root="memory://bucket/x").runtime.artifact_root == "memory://bucket/x"


def test_cli_exits_2_with_one_message_on_bad_config(capsys):
    assert main(["run", "--set", "teacher.epochs=-1"]) == 2
    err = capsys.readouterr().err
    assert "teacher.epochs" in err and "Traceback" not in err


def test_cli_refuses_unknown_stage(capsys):
    assert main(["run", "--preset", "ci_tiny", "--until", "sythesize"]) == 2
    assert "not a stage" in capsys.readouterr().err


def test_cli_config_prints_resolved_yaml(capsys):
    assert main(["config", "--preset", "ci_tiny", "--set", "teacher.width=8"]) == 0
    assert "width: 8" in capsys.readouterr().out


def test_cli_without_config_or_preset_uses_the_tuned_fashion_mnist_preset(capsys):
    import yaml

    assert main(["config"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    preset = resolve_config(preset="fashion_mnist").model_dump(mode="json")
    shown["runtime"].pop("artifact_root"), preset["runtime"].pop("artifact_root")
    assert shown == preset and shown["synthesis"]["r_bn"] == 0.5


PROBE = """
import flows.commands, flows.cli
def probe(args, line):
    from prefect.settings import get_current_settings
    settings = get_current_settings()
    print(settings.server.ephemeral.startup_timeout_seconds, flush=True)
    return 0
flows.commands.HANDLERS["run"] = probe
flows.cli.main(["run", "--preset", "ci_tiny", "--quiet"])
"""


@pytest.mark.slow
def test_the_cli_sets_prefects_defaults_before_prefect_reads_its_settings():
    """A brand-new PREFECT_HOME needs ~30 s to start the temporary server (Prefect waits 20 s by default),
    and Prefect reads its settings once, when first imported: the CLI's defaults must come before that."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"}
    done = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120)
    assert float(done.stdout.split()[-1]) == 180, done.stdout + done.stderr[-2000:]
