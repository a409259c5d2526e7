"""Bad input a user brings with their own data (issue 16): each gets one message naming the real
problem and the fix, and nothing is stored."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from PIL import Image

from flows.cli import main
from flows.config import ConfigError, resolve_config
from flows.report_spec import load_spec
from flows.without_prefect import run_plain
from tasks.data import DataConfig, DataError, load_split


def _jpeg(path: Path, size: tuple[int, int] = (24, 24), color: tuple[int, int, int] = (90, 120, 150)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, quality=95)
    return path


def _folder(root: Path, classes=("cat", "dog"), per_class: int = 8) -> Path:
    for split in ("train", "val"):
        for k, name in enumerate(classes):
            for i in range(per_class if split == "train" else 2):
                _jpeg(root / split / name / f"{i}.jpg", color=(40 + 100 * k, 30 * i, 90))
    return root


def test_yaml_config_with_a_duplicated_key_is_refused_naming_key_and_lines(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("teacher:\n  epochs: 2\n  width: 16\n  epochs: 4\n")

    code = main(["config", "--config", str(config)])

    err = capsys.readouterr().err
    assert code == 2
    assert f"config file {config}: key 'epochs' is given twice in one mapping, on lines 2 and 4; keep one" in err


def test_duplicated_section_in_a_report_spec_is_refused(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("preset: ci_tiny\ngrids: []\npreset: fashion_mnist\n")

    with pytest.raises(ConfigError, match="key 'preset' is given twice in one mapping, on lines 1 and 3"):
        load_spec(str(spec))


def test_a_misspelt_report_spec_field_gets_the_spec_field_it_means(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("title: t\npreset: ci_tiny\nreplicate: 2\ngrids:\n  - prune.ratio: [0]\n")

    with pytest.raises(ConfigError, match=r"spec.yaml: invalid spec:\n  replicate: unknown field; did you mean replicates\?$"):
        load_spec(str(spec))


def test_val_class_folder_unknown_to_train_is_named(tmp_path):
    root = _folder(tmp_path)
    _jpeg(root / "val" / "cow" / "0.jpg")

    with pytest.raises(DataError, match=r"val must hold class folders named as in train/; 1 are not \(e.g. \['cow'\]\)"):
        load_split(DataConfig(name="imagefolder", root=str(root), val_fraction=0), "test")


def test_hidden_folders_and_files_are_not_data(tmp_path):
    root = _folder(tmp_path)
    _jpeg(root / "train" / ".ipynb_checkpoints" / "0.jpg")  # a hidden folder is no class
    _jpeg(root / "train" / "cat" / ".ipynb_checkpoints" / "0-checkpoint.jpg")  # nor are images inside one
    (root / "train" / "dog" / "._0.jpg").write_bytes(b"\0\5\26\7 macOS AppleDouble metadata")  # not an image

    train = load_split(DataConfig(name="imagefolder", root=str(root), val_fraction=0), "train")

    assert train.class_names == ("cat", "dog") and len(train) == 16
    assert not any("/." in str(path) for path in train.paths)


def test_one_class_folder_is_refused(tmp_path):
    root = _folder(tmp_path, classes=("cat",))

    with pytest.raises(DataError, match=r"train holds one class folder \(cat\): a classifier needs at least two classes"):
        load_split(DataConfig(name="imagefolder", root=str(root), val_fraction=0), "train")


def test_train_class_without_test_images_is_reported(tmp_path, caplog):
    root = _folder(tmp_path, classes=("cat", "dog", "emu"))
    for file in (root / "val" / "emu").iterdir():
        file.unlink()
    (root / "val" / "emu").rmdir()

    with caplog.at_level(logging.WARNING, logger="distillery"):
        test = load_split(DataConfig(name="imagefolder", root=str(root), val_fraction=0), "test")
        load_split(DataConfig(name="imagefolder", root=str(root), val_fraction=0), "test")  # as a run does, again

    assert len(test) == 4
    assert caplog.text.count("has no test images of 1 of the 3 train/ classes (e.g. ['emu'])") == 1


def test_missing_train_folder_stops_the_run_before_anything_is_stored(tmp_path, capsys):
    (tmp_path / "data" / "val" / "cat").mkdir(parents=True)

    code = main(["run", "--preset", "ci_tiny", "--artifact-root", str(tmp_path / "a"),
                 "--set", "data.name=imagefolder", "--set", f"data.root={tmp_path / 'data'}"])

    err = capsys.readouterr().err
    assert code == 2 and "has no train/ subfolder with one folder per class" in err
    assert not (tmp_path / "a").exists()


def test_corrupt_jpeg_decoded_in_a_worker_is_one_error_naming_the_file_and_nothing_is_stored(tmp_path):
    root = _folder(tmp_path, per_class=40)  # 80 images: 3 pieces, decoded by the 2 workers
    whole = (root / "train" / "dog" / "5.jpg").read_bytes()
    (root / "train" / "dog" / "5.jpg").write_bytes(whole[: len(whole) // 2])  # truncated mid-scan
    config = resolve_config(preset="ci_tiny", artifact_root=str(tmp_path / "a"), overrides=[
        "data.name=imagefolder", f"data.root={root}", "data.image_size=16", "data.train_per_class=null",
        "data.test_limit=null", "runtime.workers=2"])

    with pytest.raises(DataError) as caught:
        run_plain(config, until="teacher")

    message = str(caught.value)
    assert message.startswith(f"cannot decode image {root / 'train' / 'dog' / '5.jpg'} (") and "runcated" in message
    assert message.endswith("replace or delete the file") and "\n" not in message  # not a worker traceback
    assert not list((tmp_path / "a").glob("*/*/manifest.json"))  # no artifact claims to be complete


def test_images_of_mixed_sizes_are_resized_and_centre_cropped_to_one_size(tmp_path):
    root = _folder(tmp_path)
    _jpeg(root / "train" / "cat" / "wide.jpg", size=(90, 30))
    _jpeg(root / "train" / "dog" / "tall.jpg", size=(13, 70))
    _jpeg(root / "train" / "dog" / "large.jpg", size=(300, 300))

    train = load_split(DataConfig(name="imagefolder", root=str(root), val_fraction=0, image_size=20), "train")

    images = train.images_at(torch.arange(len(train)))
    assert images.shape == (19, 3, 20, 20)  # 16 + 3 files, every one 20 x 20


@pytest.mark.parametrize("overrides, message", [
    (["data.mean=[0.5]"], "data.mean and data.std go together"),
    (["data.mean=[0.5, 0.5]", "data.std=[0.2]"], "need one value per channel"),
    (["data.mean=[128]", "data.std=[60]"], "they are in \\[0, 1\\] pixel units"),
    (["data.channels=3"], "data.channels applies only to data.name='imagefolder'"),
])
def test_normalisation_and_channel_fields_that_cannot_work_are_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        resolve_config(preset="ci_tiny", overrides=overrides)


def test_mean_and_std_for_another_channel_count_stop_the_run_naming_the_fix(tmp_path, capsys):
    root = tmp_path / "gray"
    for split in ("train", "val"):
        for name in ("cat", "dog"):
            (root / split / name).mkdir(parents=True)
            Image.new("L", (16, 16), 100).save(root / split / name / "0.png")

    code = main(["run", "--preset", "ci_tiny", "--artifact-root", str(tmp_path / "a"), "--set", "data.name=imagefolder",
                 "--set", f"data.root={root}", "--set", "data.mean=[0.5,0.5,0.5]", "--set", "data.std=[0.2,0.2,0.2]"])

    err = capsys.readouterr().err
    assert code == 2
    assert (f"data.mean/std give 3 values per pixel but the imagefolder images at {root} have 1 channel(s); give one "
            "value per channel, or set data.channels=3") in err
    assert not (tmp_path / "a").exists()
