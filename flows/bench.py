"""The `bench` flow: where time goes, as ratios measured side by side in one process.

On one config (default: the ``bench`` preset, Fashion-MNIST sized to finish in minutes) and a
bench root that starts empty, in this order:

1. the pipeline as plain functions (:mod:`flows.without_prefect`), cold, in ``<root>/plain``, and as the
   ``distill`` Prefect flow, cold, in ``<root>/prefect``, then each once more in ``prefect2`` and
   ``plain2`` (interleaved, so drift of the machine's speed cancels): the orchestration ratio
   is Prefect / plain over both pairs, goal <= 1.05;
2. the flow again on ``<root>/prefect``, all cached: cached / cold, goal <= 0.03; and the ``ci_tiny``
   pipeline (plain functions) cold on a local moto S3 server against cold on a local folder,
   interleaved, goal <= 1.3 (:mod:`tasks.bench.object_store`);
3. relabel against the bare teacher forward on identical batches, goal >= 0.90;
4. student steps reading the store against in-memory labels, goal >= 0.90; and student steps with
   channels-last weights against NCHW on the same batches, goal >= 1.3 (the layout every model is built in);
5. synthesis units on a local Dask cluster of 2 worker processes against 1 (each cluster
   started and warmed up first), goal >= 1.7;
6. ImageFolder decoding: images/s of a pass over a JPEG folder written from the Fashion-MNIST
   files (10,000 train images) by 1, 2 (and 4, 8 where the cores exist) DataLoader workers,
   goal 2 workers >= 1.7x of 1; and the seconds to take that split's listing identity, scaled
   to 60,000 files (listing is linear in the files), goal <= 3;
7. every label format's store: bytes per step and random-read MB/s against raw .npy rows.

The table is printed, written to ``<root>/bench.md`` and published as the Prefect table artifact
``bench``.

    distillery bench [--preset bench] [--artifact-root /tmp/bench] [--passes 3]
"""

from __future__ import annotations

from pathlib import Path

import torch
from prefect import flow
from prefect.artifacts import create_table_artifact

from flows.config import DistilleryConfig, resolve_config
from flows.distill import distill
from flows.pipeline import data_identity
from flows.without_prefect import run_plain
from flows.scale_out import map_units, unit_runner
from flows.tables import render_table
from storage.artifacts import ArtifactRef, ArtifactStore
from storage.file_names import IMAGES, LABELS
from storage.image_store import read_image_store
from tasks.bench.imagefolder import decode_rates, identity_seconds, worker_counts, write_fashion_jpeg_folder
from tasks.bench.object_store import s3_vs_local_seconds
from tasks.bench.side_by_side import (
    channels_last_vs_nchw,
    label_store_reads,
    relabel_vs_forward,
    student_store_vs_memory,
    timed,
)
from tasks.data import normalization
from tasks.data.batches import DECODE_PIECE
from tasks.models import load_teacher
from tasks.runtime import resolve_device
from tasks.stages.relabel import relabel_request, relabel_task
from tasks.stages.synthesize import SynthesizeRequest

FORMATS = {"fp16+boxes": {}, "fp16+seed": {"augmentation": "seed"},
           "top3+seed": {"label_format": "topk", "topk": 3, "augmentation": "seed"},
           "prob8+seed": {"label_format": "prob8", "augmentation": "seed"},
           "logit8+stream": {"label_format": "logit8", "augmentation": "stream"},
           "logp8+stream": {"label_format": "logp8", "augmentation": "stream"}}


def _rooted(config: DistilleryConfig, root: Path | str) -> DistilleryConfig:
    return config.model_copy(update={"runtime": config.runtime.model_copy(update={"artifact_root": str(root)})})


def _link_inputs(refs: dict[str, ArtifactRef], stages: tuple[str, ...], source: Path, target_root: Path) -> None:
    for stage in stages:
        target = target_root / stage / refs[stage].fingerprint
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(source / stage / refs[stage].fingerprint)


def _warm_up() -> None:
    import tasks.stages.units  # noqa: F401 - torch and the stage code, imported before the clock starts


def dask_synthesis_seconds(
    config: DistilleryConfig, refs: dict[str, ArtifactRef], source: Path, root: Path, *, workers: int
) -> float:
    """Seconds to build every synthesis unit on a fresh local cluster of ``workers`` processes
    (started and warmed up before the clock), the teacher and statistics linked from ``source``."""
    _link_inputs(refs, ("teacher", "stats"), source, root)
    runtime = config.runtime.model_copy(update={"artifact_root": str(root), "task_runner": "dask", "dask_workers": workers})
    request = SynthesizeRequest(data=config.data, synthesis=config.synthesis, seed=runtime.seed,
                                data_identity=data_identity(config, "synthesize"),
                                inputs={"teacher": refs["teacher"], "stats": refs["stats"]})
    with unit_runner(runtime) as runner:
        runner.client.run(_warm_up)
        seconds, _ = timed(lambda: map_units(runner, [request], runtime))
    return seconds


def decode_rows(folder: Path, *, passes: int, fashion_root: str | None) -> list[dict[str, object]]:
    """ImageFolder images/s by DataLoader worker count, on a JPEG folder written from Fashion-MNIST."""
    write_fashion_jpeg_folder(folder, train_per_class=1000, test_limit=100, fashion_root=fashion_root)
    rates = decode_rates(folder, worker_counts(), passes=passes)
    shown = ", ".join(f"{n}: {rate:,.0f}" for n, rate in rates.items())
    seconds, files = identity_seconds(folder, mode="listing", passes=passes)
    return [row("ImageFolder decode 2 workers / 1 (images/s)", rates[2] / rates[1], ">=1.7",
                f"images/s by workers {shown}; 10,000 28 px JPEGs, pieces of {DECODE_PIECE}"),
            row("ImageFolder listing identity, 60,000 files (s)", seconds * 60_000 / files, "<=3",
                f"{seconds:.2f} s for {files:,} files, scaled; data.identity=listing")]


def row(measure: str, figure: float, goal: str, detail: str) -> dict[str, object]:
    bound = float(goal[2:])
    met = figure >= bound if goal.startswith(">=") else figure <= bound
    return {"measure": measure, "figure": round(figure, 3), "goal": goal, "met": "yes" if met else "no", "detail": detail}


@flow(name="bench", validate_parameters=True)
def bench(config: DistilleryConfig, passes: int = 3) -> list[dict[str, object]]:
    root = Path(config.runtime.artifact_root)
    prefect_config = _rooted(config, root / "prefect")
    # Interleaved plain, Prefect, Prefect, plain (each cold, in its own root): this machine's
    # speed drifts by tens of percent between minutes, and the drift cancels in the sums.
    plain_a, _ = timed(lambda: run_plain(_rooted(config, root / "plain")))
    cold_a, outcomes = timed(lambda: distill(config=prefect_config))
    cold_b, _ = timed(lambda: distill(config=_rooted(config, root / "prefect2")))
    plain_b, _ = timed(lambda: run_plain(_rooted(config, root / "plain2")))
    cached_s, _ = timed(lambda: distill(config=prefect_config))
    outside = cold_a - sum(o.seconds for o in outcomes)  # the first Prefect run's wall beyond its stage bodies
    rows = [row("Prefect pipeline / plain functions (wall)", (cold_a + cold_b) / (plain_a + plain_b), "<=1.05",
                f"{cold_a:.1f}+{cold_b:.1f} s vs {plain_a:.1f}+{plain_b:.1f} s, cold, interleaved; "
                f"{outside:.1f} s of a Prefect run outside its stage bodies"),
            row("cached rerun / cold run (wall)", cached_s / cold_a, "<=0.03", f"{cached_s:.1f} s vs {cold_a:.1f} s")]
    tiny = resolve_config(preset="ci_tiny").model_copy(update={"runtime": config.runtime})  # this bench's device, threads
    s3_s, local_s = s3_vs_local_seconds(lambda at: run_plain(_rooted(tiny, at)), root / "object-store")
    rows.append(row("ci_tiny on local S3 / local folder (wall)", s3_s / local_s, "<=1.3",
                    f"{s3_s:.1f} s vs {local_s:.1f} s, cold, interleaved; moto S3 server on 127.0.0.1"))

    store, runtime = ArtifactStore(str(root / "prefect")), prefect_config.runtime
    refs = {o.ref.stage: o.ref for o in outcomes}
    device = resolve_device(runtime)
    model = load_teacher(store, refs["teacher"], device)
    images_u8, _, attrs = read_image_store(store.url(refs["synthesize"], IMAGES))
    images = normalization(config.data).to_input(torch.from_numpy(images_u8).to(device))
    classes = int(attrs["num_classes"])
    relabel = relabel_vs_forward(model, images, config.relabel, num_classes=classes, steps=200, seed=config.runtime.seed,
                                 crop_scale_min=config.data.crop_scale_min_with(config.relabel.crop_scale_min),
                                 passes=passes)
    rows.append(row("relabel / bare teacher forward (samples/s)", relabel["ratio"], ">=0.90",
                    f"{relabel['relabel samples/s']:.0f} vs {relabel['forward samples/s']:.0f} samples/s, {device.type}"))
    student = student_store_vs_memory(images, store.url(refs["relabel"], LABELS), config.evaluate, num_classes=classes,
                                      runtime=runtime, passes=passes)
    rows.append(row("student from store / from memory (steps/s)", student["ratio"], ">=0.90",
                    f"{student['store steps/s']:.1f} vs {student['memory steps/s']:.1f} steps/s"))
    layout = channels_last_vs_nchw(images, store.url(refs["relabel"], LABELS), config.evaluate, num_classes=classes,
                                   passes=passes)
    rows.append(row("student channels-last / NCHW weights (steps/s)", layout["ratio"], ">=1.3",
                    f"{layout['channels-last steps/s']:.1f} vs {layout['nchw steps/s']:.1f} steps/s, {device.type}"))
    synth = {o.ref.stage: o.seconds for o in outcomes}["synthesize"]
    one, two = (dask_synthesis_seconds(config, refs, root / "prefect", root / f"dask{n}", workers=n) for n in (1, 2))
    rows.append(row("synthesis 2 Dask workers / 1 (speed-up)", one / two, ">=1.7",
                    f"{two:.1f} s vs {one:.1f} s for the units (in-process, 2 torch threads: {synth:.1f} s stage)"))
    rows += decode_rows(root / "jpeg-folder", passes=passes,
                        fashion_root=config.data.root if config.data.name == "fashion_mnist" else None)

    formats_root = root / "formats"
    for fields in FORMATS.values():
        variant = _rooted(config.model_copy(update={"relabel": config.relabel.model_copy(update=fields)}), formats_root)
        request = relabel_request(data=config.data, relabel=variant.relabel, prune_ratio=0.0, prune_rule="prefix",
                                  seed=config.runtime.seed, teacher=refs["teacher"], images=refs["synthesize"])
        _link_inputs(refs, ("teacher", "synthesize"), root / "prefect", formats_root)  # reuse the flow's teacher and images
        relabel_task.fn(request, variant.runtime)
    label_rows = label_store_reads(str(formats_root), passes=passes, reads=5000)
    (root / "bench.md").write_text(render_table(rows, style="text") + "\n" + render_table(label_rows, style="text"))
    create_table_artifact(key="bench", table=rows, description=f"ratios measured side by side; {root}")
    create_table_artifact(key="bench-label-stores", table=label_rows, description=f"label formats: bytes and read rates; {root}")
    return rows + label_rows
