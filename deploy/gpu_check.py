"""The GPU check: the whole pipeline on Fashion-MNIST on CUDA with bf16 mixed precision, then
each stage's time and throughput, in one short command on a CUDA machine.

    .venv/bin/python -m deploy.gpu_check                     # fashion_mnist preset, device cuda
    .venv/bin/python -m deploy.gpu_check --bench             # and the bench ratios on the GPU
    .venv/bin/python -m deploy.gpu_check --device cpu --preset ci_tiny   # the same path on a CPU

Stages run as plain functions (no Prefect server to start on a bare GPU machine); the
throughputs are units of work per second of each stage's own wall time: training images per
second for the teacher and the statistics pass, image-iterations per second for synthesis,
labelled samples per second for relabel, student steps per second for evaluate.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from typing import Sequence

import torch

from flows.config import DistilleryConfig, resolve_config
from flows.without_prefect import PlainOutcome, run_plain
from storage.artifacts import ArtifactStore
from tasks.data import ImageSource, load_split


def throughput(config: DistilleryConfig, outcome: PlainOutcome, store: ArtifactStore, train: ImageSource) -> str:
    """One stage's work per second, from its manifest and config."""
    manifest, seconds = store.read_manifest(outcome.ref), max(outcome.seconds, 1e-9)
    metrics, stage = manifest["metrics"], outcome.ref.stage
    if stage == "teacher":
        return f"{len(train) * config.teacher.epochs / seconds:,.0f} train images/s"
    if stage == "stats":
        return f"{metrics.get('images_seen', 0) / seconds:,.0f} images/s"
    if stage == "synthesize":
        work = config.synthesis.ipc * train.num_classes * config.synthesis.iterations
        return f"{work / seconds:,.0f} image-iterations/s"
    if stage == "relabel":
        return f"{metrics['steps'] * config.relabel.batch_size / seconds:,.0f} samples/s"
    if stage == "evaluate":
        return f"{metrics['student_steps'] * config.evaluate.seeds / seconds:,.1f} student steps/s"
    return ""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.gpu_check", description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="fashion_mnist")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    parser.add_argument("--artifact-root", help="default: a new temporary folder (a cold run)")
    parser.add_argument("--bench", action="store_true", help="also run `distillery bench` with this device")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device is visible (torch.cuda.is_available() is False); "
              "run it on a CUDA machine or pass --device cpu", file=sys.stderr)
        return 2
    root = args.artifact_root or tempfile.mkdtemp(prefix="distillery-gpu-")
    config = resolve_config(preset=args.preset, overrides=[*args.overrides, f"runtime.device={args.device}",
                                                           "runtime.amp=true"], artifact_root=root)
    device = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    print(f"device {device}; torch {torch.__version__}; bf16 autocast {args.device == 'cuda'}; root {root}")
    started = time.perf_counter()
    outcomes = run_plain(config)
    store, train = ArtifactStore(root), load_split(config.data, "train")
    print(f"\n{'stage':<11}{'seconds':>9}  throughput")
    for outcome in outcomes:
        print(f"{outcome.ref.stage:<11}{outcome.seconds:>9.1f}  {throughput(config, outcome, store, train)}")
    top1 = store.read_manifest(outcomes[-1].ref)["metrics"].get("test_top1")
    print(f"pipeline {time.perf_counter() - started:.1f} s; student test top-1 {top1:.4f}")
    if args.device == "cuda":
        print(f"peak CUDA memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
    if args.bench:
        from flows.cli import main as cli_main

        return cli_main(["bench", "--preset", "bench", "--set", f"runtime.device={args.device}", "--progress", "log"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
