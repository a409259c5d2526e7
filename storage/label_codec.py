"""The soft-label formats, written once: which arrays each stores, how logits go in and come out,
and what a store weighs.

A step's teacher logits ``(B, C)`` float32 are stored in one of five formats:

* ``fp16``  — ``logits (B, C) float16``, as the reference stores them;
* ``topk``  — ``topk_values (B, k) float16``, ``topk_indices (B, k) int16`` and ``topk_rest (B,)
  float16``, the mean of the other logits (decoded: the top k where they were, the mean elsewhere);
* ``prob8`` — ``probs (B, C) uint8``, softmax(logits / T) quantised to 255 levels (decoded: logits
  whose softmax at T gives them back; the student trains at the same T);
* ``logit8`` — ``logit8 (B, C) uint8`` and ``logit_span ()`` float32 per step: each logit's distance
  below its row's largest, on 255 levels from 0 to the step's largest such distance (decoded: the
  logits less each row's maximum, which no softmax sees; no temperature is baked in). At T = 20
  a row's probabilities lie within about 0.06-0.19, where prob8's fixed 1/255 steps are coarse;
  logit8's relative error in each probability is at most span / (510 T), about 0.25 %;
* ``logp8`` — ``logp (B, C) uint8``: each class's log-probability at T below its row's largest, in
  steps of 1/50 nat (255 levels, to 5.1 nats; decoded: logits whose softmax at T gives them back).
  A class more than 5.1 nats below the top (under 0.6 % of its probability) is stored at 5.1; each
  other probability is within about 1 % relative. About 5 bits a value after compression at
  T = 20: between prob8's bytes and logit8's, at under a quarter of prob8's KL to the teacher.

    arrays = label_arrays("topk", batch_size=100, num_classes=10, topk=3)   # name -> (tail, dtype)
    stored = encode_labels(logits, "prob8", topk=3, temperature=20.0)      # name -> array
    logits = decode_labels(stored, "prob8", num_classes=10, temperature=20.0)
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

from storage.locations import open_root

LabelFormat = Literal["fp16", "topk", "prob8", "logit8", "logp8"]
LOGP8_LEVELS_PER_NAT = 50
ArraySpecs = dict[str, tuple[tuple[int, ...], str]]  # name -> (shape after the step axis, dtype)


def label_arrays(fmt: LabelFormat, *, batch_size: int, num_classes: int, topk: int) -> ArraySpecs:
    """The arrays format ``fmt`` stores per step."""
    b, c, k = batch_size, num_classes, topk
    if fmt == "fp16":
        return {"logits": ((b, c), "float16")}
    if fmt == "topk":
        return {"topk_values": ((b, k), "float16"), "topk_indices": ((b, k), "int16"), "topk_rest": ((b,), "float16")}
    if fmt == "logit8":
        return {"logit8": ((b, c), "uint8"), "logit_span": ((), "float32")}
    if fmt == "logp8":
        return {"logp": ((b, c), "uint8")}
    return {"probs": ((b, c), "uint8")}


LABEL_ARRAYS = frozenset(name for fmt in ("fp16", "topk", "prob8", "logit8", "logp8")
                         for name in label_arrays(fmt, batch_size=1, num_classes=2, topk=1))  # type: ignore[arg-type]


def encode_labels(logits: np.ndarray, fmt: LabelFormat, *, topk: int, temperature: float) -> dict[str, np.ndarray]:
    """``(n, C)`` float32 logits as the arrays of ``fmt`` (n rows each; a 0-d array is one value per step)."""
    if fmt == "fp16":
        return {"logits": logits.astype(np.float16)}
    if fmt == "topk":
        return encode_topk(logits, topk)
    if fmt == "logit8":
        return encode_logit8(logits)
    if fmt == "logp8":
        return {"logp": encode_logp8(logits, temperature)}
    return {"probs": encode_prob8(logits, temperature)}


def decode_labels(rows: dict[str, np.ndarray], fmt: LabelFormat, *, num_classes: int, temperature: float) -> np.ndarray:
    """Teacher logits as float32 ``(B, C)``, decoded from ``fmt``'s arrays of one step."""
    if fmt == "fp16":
        return rows["logits"].astype(np.float32)
    if fmt == "topk":
        return decode_topk(rows["topk_values"], rows["topk_indices"], rows["topk_rest"], num_classes)
    if fmt == "logit8":
        return decode_logit8(rows["logit8"], rows["logit_span"])
    if fmt == "logp8":
        return decode_logp8(rows["logp"], temperature)
    return decode_prob8(rows["probs"], temperature)


def encode_topk(logits: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Top-k values and indices per row, plus the mean of the other logits (one value)."""
    order = np.argsort(-logits, axis=-1, kind="stable")[..., :k]
    values = np.take_along_axis(logits, order, axis=-1)
    others = logits.shape[-1] - k
    rest = (logits.sum(-1) - values.sum(-1)) / others if others else np.zeros(logits.shape[:-1], logits.dtype)
    return {"topk_values": values.astype(np.float16), "topk_indices": order.astype(np.int16),
            "topk_rest": rest.astype(np.float16)}


def decode_topk(values: np.ndarray, indices: np.ndarray, rest: np.ndarray, num_classes: int) -> np.ndarray:
    """Full logits: the stored top-k where they were, the mean of the others everywhere else."""
    out = np.repeat(rest.astype(np.float32)[..., None], num_classes, axis=-1)
    np.put_along_axis(out, indices.astype(np.int64), values.astype(np.float32), axis=-1)
    return out


def encode_prob8(logits: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(logits / T) quantised to uint8 (the student trains at the same T)."""
    z = logits.astype(np.float64) / temperature
    z -= z.max(-1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(-1, keepdims=True)
    return np.rint(p * 255).astype(np.uint8)


def decode_prob8(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Logits whose softmax at T gives the stored probabilities (zeros floored at half a level)."""
    return (temperature * np.log(np.maximum(probs.astype(np.float32), 0.5) / 255.0)).astype(np.float32)


def _below_row_max(logits: np.ndarray) -> np.ndarray:
    """``(n, C)`` float64: each logit's distance below its row's largest (>= 0; what logit8 and logp8 store)."""
    return logits.max(-1, keepdims=True).astype(np.float64) - logits


def encode_logit8(logits: np.ndarray) -> dict[str, np.ndarray]:
    """Each row's distances below its maximum, uint8 on a scale whose 255 is the largest of them."""
    below = _below_row_max(logits)
    span = float(below.max()) if below.size else 0.0
    levels = np.rint(below / span * 255) if span > 0 else np.zeros_like(below)
    return {"logit8": levels.astype(np.uint8), "logit_span": np.asarray(span, dtype=np.float32)}


def decode_logit8(levels: np.ndarray, span: np.ndarray) -> np.ndarray:
    """Logits less their row's maximum, from the levels and the step's span."""
    return (-levels.astype(np.float32) * (np.float32(span) / np.float32(255))).astype(np.float32)


def encode_logp8(logits: np.ndarray, temperature: float) -> np.ndarray:
    """Each log-probability at T below its row's largest, in 1/50-nat levels (255 at most)."""
    below = _below_row_max(logits) / temperature
    return np.minimum(np.rint(below * LOGP8_LEVELS_PER_NAT), 255).astype(np.uint8)


def decode_logp8(levels: np.ndarray, temperature: float) -> np.ndarray:
    """Logits (less each row's maximum) whose softmax at T gives the stored log-probabilities back."""
    return (-levels.astype(np.float32) * np.float32(temperature / LOGP8_LEVELS_PER_NAT)).astype(np.float32)


def array_bytes(url: str) -> dict[str, int]:
    """Bytes on disk per array (chunks plus its metadata), and the group's own metadata as ``_group``."""
    location = open_root(url)
    fs, root = location.fs, location.path
    sizes: dict[str, int] = {}
    for path, size in fs.du(root, total=False, withdirs=False).items():
        relative = path[len(root.rstrip("/")) + 1 :]
        name = relative.split("/", 1)[0] if "/" in relative else "_group"
        sizes[name] = sizes.get(name, 0) + int(size)
    return sizes


def unpruned_fp16_bytes(*, num_images: int, epochs: int, num_classes: int) -> int:
    """The reference size: images x E x classes x 2 bytes (every step's logits as fp16, uncompressed)."""
    return num_images * epochs * num_classes * 2


def store_metrics(url: str, *, steps: int, stored_samples: int, num_images: int, epochs: int,
                  num_classes: int) -> tuple[dict[str, float], dict[str, int]]:
    """A store's size on disk as a manifest's metrics (and its bytes per array)."""
    sizes = array_bytes(url)
    total = sum(sizes.values())
    reference = unpruned_fp16_bytes(num_images=num_images, epochs=epochs, num_classes=num_classes)
    metrics = {
        "steps": float(steps),
        "store_bytes": float(total),
        "label_bytes": float(sum(size for name, size in sizes.items() if name in LABEL_ARRAYS)),
        "bytes_per_sample": total / max(stored_samples, 1),
        "fraction_of_unpruned_fp16": total / reference,
        "compression_vs_unpruned_fp16": reference / total,
    }
    return metrics, sizes


def step_bytes(specs: ArraySpecs) -> int:
    """Raw bytes of one step of ``specs``."""
    return sum(np.dtype(dtype).itemsize * math.prod(tail) for tail, dtype in specs.values())
