"""synthesis.mode=select and init=selected: real images (or their crops) chosen with the teacher from
the train split alone, each criterion checked against a case whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from flows.config import ConfigError, resolve_config
from storage.artifacts import ArtifactStore
from storage.file_names import IMAGES
from storage.image_store import read_image_store
from tasks.data import ImageSet, load_split
from tasks.normalization import Normalization
from tasks.runtime import generator
from tasks.stages.synthesize.config import SelectionConfig, SynthesisConfig, SynthesisError, check_real_images
from tasks.stages.synthesize.selection import _hardest, _herding, _kcenter, _kmeans, _stratified, select_class
from tests.conftest import needs_fashion_mnist

UNIT = Normalization((0.0,), (1.0,))  # the identity: the fake teacher sees pixels in [0, 1]


class Brightness(nn.Module):
    """A 'teacher' of two classes that is surer of class 0 the brighter the image, with a 'classifier'
    whose input is the image's mean (so penultimate features are that mean)."""

    def __init__(self) -> None:
        super().__init__()
        self.classifier = nn.Linear(1, 2)
        with torch.no_grad():
            self.classifier.weight.copy_(torch.tensor([[5.0], [-5.0]]))
            self.classifier.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(x.mean((1, 2, 3)).unsqueeze(1))  # (B, 2)


def flat_images(values: list[int], size: int = 8) -> ImageSet:
    """One flat grey image of each value, all of class 0 (plus two of class 1 the selection must skip)."""
    pixels = torch.tensor([*values, 0, 0], dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, 1, size, size).clone()
    labels = torch.tensor([0] * len(values) + [1, 1])
    return ImageSet(images=pixels, labels=labels, class_names=("bright", "dark"))


def test_easy_keeps_the_crops_the_teacher_is_surest_of_and_stitches_them_in_order():
    values = [10, 200, 90, 250, 30, 160]
    train = flat_images(values)
    one = select_class(Brightness(), train, label=0, ipc=2, config=SelectionConfig(crops=2), norm=UNIT, seed=0,
                       device=torch.device("cpu"))
    assert [int(image.float().mean()) for image in one] == [250, 200]  # flat images: every crop keeps the value
    two = select_class(Brightness(), train, label=0, ipc=1, config=SelectionConfig(crops=2, factor=2), norm=UNIT,
                       seed=0, device=torch.device("cpu"))
    quadrants = two[0, 0].view(2, 4, 2, 4).permute(0, 2, 1, 3).reshape(4, 16)  # (4 tiles, pixels)
    assert [int(q.float().mean()) for q in quadrants] == [250, 200, 160, 90]  # the four easiest, row by row
    again = select_class(Brightness(), train, label=0, ipc=2, config=SelectionConfig(crops=2), norm=UNIT, seed=0,
                         device=torch.device("cpu"))
    assert torch.equal(one, again)


def test_herding_follows_the_mean_and_kcenter_covers_the_features():
    points = torch.tensor([[0.0], [1.0], [2.0], [10.0]])  # mean 3.25
    assert _herding(points, 2).tolist() == [2, 1]  # 2 is nearest 3.25; then (2 + 1) / 2 = 1.5 is nearest
    assert _kcenter(points, 2).tolist() == [2, 3]  # nearest the mean, then the farthest from it
    assert _kcenter(points, 3).tolist() == [2, 3, 0]


def test_kmeans_takes_the_image_nearest_each_cluster_centre_not_the_outliers():
    values = [0.0, 0.2, -0.2, 0.1, 5.0, 4.8, 5.2, 10.0, 9.9, 10.1, 13.0]  # three clusters, 13 an outlier
    points = torch.tensor(values)[:, None]
    for seed in range(5):
        picked = _kmeans(points, 3, generator(seed, "test"))
        assert sorted(values[i] for i in picked.tolist()) == [0.0, 5.0, 10.1], seed  # (10 + 9.9 + 10.1 + 13) / 4
        assert torch.equal(picked, _kmeans(points, 3, generator(seed, "test")))  # the same draws, the same picks
    assert 10 in _kcenter(points, 3).tolist()  # where k-center takes the outlier


def test_stratified_spreads_the_picks_over_equal_width_loss_bins_and_drops_the_misclassified():
    # 20 easy images (loss 0.0-0.19), one in each of bins 1-3, and two the teacher gets wrong.
    loss = torch.tensor([i / 100 for i in range(20)] + [1.5, 2.5, 3.5, 3.9, 9.0])
    right = torch.tensor([True] * 23 + [False, False])
    for seed in range(5):
        picked = _stratified(loss, right, 4, generator(seed, "test")).tolist()
        assert sorted(picked)[1:] == [20, 21, 22] and sorted(picked)[0] < 20, (seed, picked)  # one per bin, width 0.875
        assert picked == _stratified(loss, right, 4, generator(seed, "test")).tolist()  # the same draws, the same picks
    # Bins too small for their share pass the rest on: 2 from the easy bin when only 3 bins are filled.
    picked = _stratified(loss[:22], right[:22], 4, generator(0, "test")).tolist()  # losses 0-2.5: bins of 0.625
    assert len(set(picked)) == 4 and {20, 21} <= set(picked) and sum(i < 20 for i in picked) == 2
    # Two full bins, two empty: the budget is split evenly, not taken by the first bin visited.
    two = torch.tensor([0.0, 0.1, 0.2, 0.3, 0.4, 3.0, 3.1, 3.2, 3.3, 3.4])
    picked = _stratified(two, torch.ones(10, dtype=torch.bool), 4, generator(0, "test")).tolist()
    assert sum(i < 5 for i in picked) == 2 and len(set(picked)) == 4
    # Fewer right than k: every candidate is in the pool.
    assert len(set(_stratified(loss, torch.zeros(25, dtype=torch.bool), 25, generator(0, "test")).tolist())) == 25


def test_hardest_takes_the_least_sure_right_answers_and_the_wrong_ones_only_when_short():
    loss = torch.tensor([0.1, 2.0, 0.7, 5.0, 0.7, 0.3, 9.0])
    right = torch.tensor([True, True, True, False, True, True, False])
    assert _hardest(loss, right, 3).tolist() == [1, 2, 4]  # 5.0 and 9.0 are wrong; the tie in row order
    assert _hardest(loss, right, 6).tolist() == [6, 3, 1, 2, 4, 5]  # five right: every row competes


class TwoCues(nn.Module):
    """A 'teacher' whose features are (brightness below the first row, 10 x the top-left pixel) but
    whose logits read the brightness alone: k-means over features and over logits see different
    clusters."""

    def __init__(self) -> None:
        super().__init__()
        self.classifier = nn.Linear(2, 2)
        with torch.no_grad():
            self.classifier.weight.copy_(torch.tensor([[5.0, 0.0], [-5.0, 0.0]]))
            self.classifier.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.stack([x[:, :, 1:].mean((1, 2, 3)), 10 * x[:, 0, 0, 0]], 1))  # (B, 2)


def test_kmeans_logits_clusters_what_the_teacher_says_not_its_features():
    values = [10, 12, 14, 120, 125, 130, 240, 245, 250]  # three brightness clusters of class 0
    train = flat_images(values)
    train.images[: len(values), 0, 0, 0] = torch.tensor([0, 255, 128] * 3, dtype=torch.uint8)  # a cue across them
    mean = lambda picked: sorted(round(float(image[0, 1:].float().mean())) for image in picked)  # noqa: E731
    pick = lambda criterion: select_class(TwoCues(), train, label=0, ipc=3, config=SelectionConfig(  # noqa: E731
        criterion=criterion), norm=UNIT, seed=0, device=torch.device("cpu"))
    assert mean(pick("kmeans_logits")) == [12, 125, 245]  # one per brightness cluster, its middle
    assert mean(pick("kmeans")) != [12, 125, 245]  # the features cluster by the top-left pixel


def test_a_selection_that_cannot_be_made_is_refused_naming_the_setting():
    def select(factor: int, **fields) -> SynthesisConfig:
        return SynthesisConfig(ipc=10, selection=SelectionConfig(factor=factor), **({"mode": "select"} | fields))

    with pytest.raises(SynthesisError, match=r"selection.factor=3 does not divide the 28 px images; use one of \[1, 2, 4, 7\]"):
        check_real_images(select(3), image_size=28, class_sizes={"a": 500})
    with pytest.raises(SynthesisError, match=r"synthesis.ipc=10 with selection.factor=2 needs 40 real images of every "
                                             r"class, but class b has 30 training images; lower synthesis.ipc or the "
                                             r"factor, or raise data.train_per_class$"):
        check_real_images(select(2), image_size=28, class_sizes={"a": 500, "b": 30}, train_per_class=30)
    with pytest.raises(SynthesisError, match=r"needs 40 real images"):  # recovery from selected images reads them too
        check_real_images(select(2, mode="lpld", init="selected"), image_size=28, class_sizes={"a": 500, "b": 30})
    check_real_images(select(2), image_size=28, class_sizes={"a": 40, "b": 40})
    with pytest.raises(ConfigError, match="synthesis.selection.crop_scale: Input should be greater than 0"):
        resolve_config(preset="ci_tiny", overrides=["synthesis.mode=select", "synthesis.selection.crop_scale=0"])
    with pytest.raises(ConfigError, match="synthesis.init applies to lpld and sre2l; remove it for mode=select"):
        resolve_config(preset="ci_tiny", overrides=["synthesis.mode=select", "synthesis.init=selected"])


@needs_fashion_mnist
@pytest.mark.parametrize("criterion", ["herding", "kcenter", "kmeans", "stratified", "hardest", "kmeans_logits"])
def test_selected_images_are_training_images_of_their_class_never_validation_ones(tmp_path, tiny_artifacts, criterion):
    overrides = ["synthesis.mode=select", f"synthesis.selection.criterion={criterion}", "synthesis.ipc=3",
                 "synthesis.selection.candidates=50"]
    refs = tiny_artifacts.copy_into(tmp_path, *overrides, until="synthesize")
    images, labels, attrs = read_image_store(ArtifactStore(tmp_path).url(refs[-1], IMAGES))
    config = tiny_artifacts.config(*overrides)
    train, val = load_split(config.data, "train"), load_split(config.data, "val")
    as_bytes = lambda source: {bytes(source.images_at(torch.tensor([i]))[0].numpy()): int(source.labels[i])  # noqa: E731
                               for i in range(len(source))}
    train_images, val_images = as_bytes(train), as_bytes(val)
    assert attrs["mode"] == "select" and images.shape == (30, 1, 28, 28)
    assert all(train_images.get(bytes(image)) == label for image, label in zip(images, labels))
    assert not any(bytes(image) in val_images for image in images)
    assert len({bytes(image) for image in images}) == 30


@needs_fashion_mnist
def test_recovery_can_start_from_the_selected_images(tmp_path, tiny_artifacts):
    base = ["synthesis.ipc=2", "synthesis.iterations=1", "synthesis.lr=0.0001"]
    chosen = tiny_artifacts.copy_into(tmp_path, "synthesis.mode=select", "synthesis.ipc=2", until="synthesize")
    recovered = tiny_artifacts.copy_into(tmp_path, *base, "synthesis.init=selected", until="synthesize")
    store = ArtifactStore(tmp_path)
    start, _, _ = read_image_store(store.url(chosen[-1], IMAGES))
    after, _, _ = read_image_store(store.url(recovered[-1], IMAGES))
    assert np.abs(after.astype(int) - start.astype(int)).max() <= 2  # one tiny Adam step away from the selection
