"""The soft-label store format on its own: layout, chunk-wise resume, label codecs, refusals."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from storage.label_codec import (array_bytes, decode_logit8, decode_logp8, decode_prob8, decode_topk, encode_logit8,
                                 encode_logp8, encode_prob8, encode_topk)
from storage.softlabels import SoftLabelReader, SoftLabelStoreError, SoftLabelWriter, StoreLayout

ATTRS = {"teacher": "t1", "images": "i1", "seed": 0, "label_temperature": 20.0}


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _chunk_arrays(layout: StoreLayout, chunk: int) -> dict[str, np.ndarray]:
    start, stop = layout.chunk_bounds(chunk)
    rng = np.random.default_rng(chunk)
    arrays = {name: rng.integers(0, 5, (stop - start, *tail)).astype(dtype) for name, (tail, dtype) in layout.arrays().items()}
    arrays["step_id"] = np.arange(start, stop, dtype=np.int32)
    return arrays


def test_chunks_hold_whole_steps_and_about_a_megabyte():
    small = StoreLayout(steps=200, batch_size=100, num_classes=10)  # 3.7 kB a step
    assert small.chunk_steps() == 200 and small.num_chunks == 1  # the whole store is under 1 MB
    big = StoreLayout(steps=100_000, batch_size=1024, num_classes=1000)
    step_bytes = 1024 * 1000 * 2
    assert big.chunk_steps() == 1 and step_bytes >= 1 << 20
    mid = StoreLayout(steps=10_000, batch_size=256, num_classes=100)
    logits_step = 256 * 100 * 2
    assert (mid.chunk_steps() - 1) * logits_step < 1 << 20 <= mid.chunk_steps() * logits_step * 1.1  # other arrays: <10 %


def test_a_relabel_layout_keeps_at_least_eight_resume_units():
    tiny = StoreLayout(steps=12, batch_size=8, num_classes=10)  # ci_tiny's stream: 12 steps, far under 1 MB
    assert tiny.chunk_steps() == 12 and tiny.resumable().chunk_steps() == 2 and tiny.resumable().num_chunks == 6
    small = StoreLayout(steps=200, batch_size=100, num_classes=10).resumable()
    assert small.chunk_steps() == 25 and small.num_chunks == 8
    big = StoreLayout(steps=100_000, batch_size=1024, num_classes=1000)
    assert big.resumable() == StoreLayout(**{**vars(big), "steps_per_chunk": 1})  # 1 MB chunks already: as they were
    chosen = StoreLayout(steps=12, batch_size=8, num_classes=10, steps_per_chunk=12)
    assert chosen.resumable() == chosen  # relabel.chunk_steps, when set, wins


def test_a_half_written_store_resumes_at_its_first_unmarked_chunk(tmp_path):
    layout = StoreLayout(steps=10, batch_size=4, num_classes=3, steps_per_chunk=3)
    url = str(tmp_path / "labels.zarr")
    writer = SoftLabelWriter.open(url, layout, ATTRS)
    assert writer.pending_chunks() == [0, 1, 2, 3]
    writer.write_chunk(0, _chunk_arrays(layout, 0))
    writer.write_chunk(2, _chunk_arrays(layout, 2))
    with pytest.raises(SoftLabelStoreError, match="incomplete .*step 3 onwards"):
        SoftLabelReader(url)

    reopened = SoftLabelWriter.open(url, layout, ATTRS)
    assert reopened.pending_chunks() == [1, 3]
    for chunk in reopened.pending_chunks():
        reopened.write_chunk(chunk, _chunk_arrays(layout, chunk))
    reader = SoftLabelReader(url, expect={"teacher": "t1"})
    assert [reader.step(s).step_id for s in range(10)] == list(range(10))
    np.testing.assert_array_equal(reader.row("logits", 7), _chunk_arrays(layout, 2)["logits"][1])

    other = SoftLabelWriter.open(url, layout, {**ATTRS, "teacher": "t2"})  # another identity: start afresh
    assert other.pending_chunks() == [0, 1, 2, 3]


def test_a_chunk_with_the_wrong_arrays_is_rejected_before_writing(tmp_path):
    layout = StoreLayout(steps=4, batch_size=2, num_classes=3, steps_per_chunk=2)
    writer = SoftLabelWriter.open(str(tmp_path / "s.zarr"), layout, ATTRS)
    arrays = _chunk_arrays(layout, 0)
    arrays.pop("crop")
    with pytest.raises(ValueError, match="expected"):
        writer.write_chunk(0, arrays)
    assert writer.pending_chunks() == [0, 1]


def test_topk_keeps_the_largest_logits_and_the_mean_of_the_rest():
    logits = np.array([[1.0, 5.0, 3.0, -1.0], [0.0, 0.0, 2.0, 4.0]], dtype=np.float32)
    encoded = encode_topk(logits, 2)
    assert encoded["topk_indices"].tolist() == [[1, 2], [3, 2]]
    decoded = decode_topk(encoded["topk_values"], encoded["topk_indices"], encoded["topk_rest"], 4)
    np.testing.assert_allclose(decoded, [[0.0, 5.0, 3.0, 0.0], [0.0, 0.0, 2.0, 4.0]])


def test_prob8_round_trips_the_softened_distribution():
    logits = np.random.default_rng(0).normal(0, 10, (50, 10)).astype(np.float32)
    probs = encode_prob8(logits, 20.0)
    decoded = decode_prob8(probs, 20.0)
    assert np.abs(softmax(decoded / 20.0) - softmax(logits / 20.0)).max() < 3 / 255


def test_logit8_keeps_each_logit_below_its_rows_maximum_to_half_a_level_of_the_steps_span():
    logits = np.random.default_rng(0).normal(0, 10, (50, 10)).astype(np.float32)
    encoded = encode_logit8(logits)
    below = logits.max(1, keepdims=True) - logits
    span = float(encoded["logit_span"])
    assert encoded["logit8"].dtype == np.uint8 and encoded["logit_span"].shape == () and span == np.float32(below.max())
    decoded = decode_logit8(encoded["logit8"], encoded["logit_span"])
    np.testing.assert_allclose(decoded, -below, atol=span / 510 * 1.0001)
    assert (decoded.max(1) == 0).all()  # each row's largest logit is level 0
    # At the student's T = 20 the softened distribution is far closer than prob8's: KL over 10x smaller.
    kl = lambda q: float((softmax(logits / 20) * np.log(softmax(logits / 20) / softmax(q / 20))).sum(1).mean())  # noqa: E731
    assert kl(decoded) * 10 < kl(decode_prob8(encode_prob8(logits, 20.0), 20.0))
    flat = encode_logit8(np.full((3, 4), 2.5, np.float32))  # no spread: level 0 everywhere, no division by 0
    assert float(flat["logit_span"]) == 0 and not flat["logit8"].any()


def test_logp8_keeps_each_log_probability_at_t_to_a_hundredth_of_a_nat_and_clips_at_5_1():
    logits = np.array([[10.0, 9.0, 0.0, -200.0], [1.0, 1.0, 1.0, 1.0]], np.float32)
    levels = encode_logp8(logits, 20.0)  # below the top at T = 20: 0, 0.05, 0.5 and 10.5 nats
    assert levels.dtype == np.uint8 and levels.tolist() == [[0, 2, 25, 255], [0, 0, 0, 0]]  # 2.5 rounds to even
    np.testing.assert_allclose(decode_logp8(levels, 20.0), [[0.0, -0.8, -10.0, -102.0], [0, 0, 0, 0]], atol=1e-5)
    wide = np.random.default_rng(0).normal(0, 10, (50, 10)).astype(np.float32)
    decoded = decode_logp8(encode_logp8(wide, 20.0), 20.0)
    below = (wide.max(1, keepdims=True) - wide) / 20.0
    kept = below < 5.1
    np.testing.assert_allclose((decoded / 20.0)[kept], -below[kept], atol=0.01 + 1e-6)


def test_a_missing_store_or_another_format_version_says_what_to_do(tmp_path):
    with pytest.raises(SoftLabelStoreError, match="no soft-label store at .*run the relabel stage"):
        SoftLabelReader(str(tmp_path / "nothing.zarr"))
    group = zarr.open_group(str(tmp_path / "old.zarr"), mode="w")
    group.attrs.update({"format_version": 0})
    with pytest.raises(SoftLabelStoreError, match="format version 0.*rerun relabel"):
        SoftLabelReader(str(tmp_path / "old.zarr"))


def test_array_bytes_counts_every_file_once(tmp_path):
    layout = StoreLayout(steps=4, batch_size=2, num_classes=3, steps_per_chunk=2, augmentation="seed", cutmix=False)
    url = str(tmp_path / "s.zarr")
    writer = SoftLabelWriter.open(url, layout, ATTRS)
    for chunk in writer.pending_chunks():
        writer.write_chunk(chunk, _chunk_arrays(layout, chunk))
    sizes = array_bytes(url)
    assert set(sizes) == {"_group", "step_id", "image_index", "aug_seed", "logits", "complete"}
    on_disk = sum(p.stat().st_size for p in tmp_path.rglob("*") if p.is_file())
    assert sum(sizes.values()) == on_disk


def test_a_torn_completion_marker_means_that_chunk_is_redone(tmp_path):
    layout = StoreLayout(steps=6, batch_size=2, num_classes=3, steps_per_chunk=2)
    url = str(tmp_path / "s.zarr")
    writer = SoftLabelWriter.open(url, layout, ATTRS)
    for chunk in (0, 1):
        writer.write_chunk(chunk, _chunk_arrays(layout, chunk))
    marker = tmp_path / "s.zarr" / "complete" / "c" / "1"
    marker.write_bytes(marker.read_bytes()[:-3])  # a write cut short
    assert SoftLabelWriter.open(url, layout, ATTRS).pending_chunks() == [1, 2]


def test_a_written_image_store_has_its_metadata_consolidated(tmp_path):
    import zarr

    from storage.image_store import read_image_store, write_image_store

    images = np.arange(2 * 1 * 4 * 4, dtype=np.uint8).reshape(2, 1, 4, 4)
    write_image_store(str(tmp_path / "images.zarr"), images, np.array([0, 1]), images_per_chunk=1, attributes={"ipc": 1})
    group = zarr.open_group(str(tmp_path / "images.zarr"), mode="r")
    assert set(group.metadata.consolidated_metadata.metadata) == {"images", "labels"}
    np.testing.assert_array_equal(read_image_store(str(tmp_path / "images.zarr"))[0], images)
