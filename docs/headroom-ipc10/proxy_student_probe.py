"""A first look at student-aware selection at IPC 10 (issue 26), outside the pipeline: not a figure
to tune to, and not built in.

The random real student of replicate r (retrained here on that replicate's own label store) scores
300 training candidates a class by KL(teacher || student) at T, summed over 5 random crops. The
chosen images (``top``: the 10 it fits worst among those the teacher classifies right; ``half``: the
random set's first 5 and the 5 worst-fitted) go through the pipeline as an imported set at 1x; the
script prints their validation and test top-1 beside random real's for the same replicate.

    python docs/headroom-ipc10/proxy_student_probe.py ARTIFACT_ROOT WORK_DIR REPLICATE top|half

ARTIFACT_ROOT holds the selection report's points (deploy/reports/selection_criteria.yaml), so the
teacher and the random real sets and students are reused; WORK_DIR gets the proxies and the chosen
image folders. Run 2026-12-03 on 2 cores, replicates 0-4, paired against random real on validation:
``top`` -0.0023 [-0.0147, +0.0100], ``half`` -0.0024 [-0.0082, +0.0034] (95 % t-intervals).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from flows.config import resolve_config  # noqa: E402
from flows.without_prefect import run_plain  # noqa: E402
from storage.artifacts import ArtifactStore  # noqa: E402
from storage.file_names import IMAGES, LABELS  # noqa: E402
from storage.image_store import read_image_store  # noqa: E402
from storage.softlabels import SoftLabelReader  # noqa: E402
from tasks.augment import crop_resize, sample_boxes  # noqa: E402
from tasks.data import load_split, normalization  # noqa: E402
from tasks.data.batches import read_images  # noqa: E402
from tasks.models import load_teacher  # noqa: E402
from tasks.runtime import generator  # noqa: E402
from tasks.stages.evaluate import train_student  # noqa: E402
from tasks.stages.evaluate.students import build_student  # noqa: E402

BASE = ["evaluate.also_unpruned=false", "evaluate.seeds=1", "prune.ratio=0", "teacher.seed=0"]
CANDIDATES, CROPS, CPU = 300, 5, torch.device("cpu")


def scores_of(teacher, student, candidates: torch.Tensor, *, label: int, norm, temperature: float,
              gen: torch.Generator) -> torch.Tensor:
    """(P,) KL(teacher || student) at T summed over CROPS random crops; -1 where the teacher is wrong."""
    x = candidates.float() / 255
    score = torch.zeros(len(x))
    for _ in range(CROPS):
        boxes = sample_boxes(gen, len(x), scale=(0.5, 1.0))
        crops = crop_resize(x, boxes, torch.zeros(len(x), dtype=torch.bool), size=x.shape[-1])
        crops = norm.to_input((crops.clamp(0, 1) * 255).round().to(torch.uint8))
        t, s = F.log_softmax(teacher(crops).float() / temperature, 1), F.log_softmax(student(crops).float() / temperature, 1)
        score += F.kl_div(s, t, reduction="none", log_target=True).sum(1)
    score[teacher(norm.to_input(candidates)).argmax(1) != label] = -1
    return score


@torch.no_grad()
def choose(root: str, work: Path, replicate: int, rule: str) -> Path:
    """The chosen images of every class as a class-folder tree under ``work``."""
    config = resolve_config(preset="fashion_mnist", artifact_root=root,
                            overrides=[*BASE, "synthesis.mode=random_real", f"runtime.seed={replicate}"])
    refs = {o.ref.stage: o.ref for o in run_plain(config, until="relabel")}
    store, norm = ArtifactStore(root), normalization(config.data)
    teacher = load_teacher(store, refs["teacher"], CPU).eval()
    images_u8, labels, _ = read_image_store(store.url(refs["synthesize"], IMAGES))
    x = norm.to_input(torch.from_numpy(images_u8))
    evaluate = config.evaluate.for_stream(epochs=config.relabel.epochs, batch_size=config.relabel.batch_size)
    saved = work / f"proxy-{replicate}.pt"
    if saved.exists():
        student = build_student(evaluate, x, num_classes=10, seed=replicate)
        student.load_state_dict(torch.load(saved))
    else:
        with torch.enable_grad():
            student = train_student(x, SoftLabelReader(store.url(refs["relabel"], LABELS)), evaluate, num_classes=10,
                                    seed=replicate, runtime=config.runtime)
        torch.save(student.state_dict(), saved)
    student.eval()
    train, out = load_split(config.data, "train"), work / f"sets/{rule}-{replicate}"
    shutil.rmtree(out, ignore_errors=True)
    for c in range(train.num_classes):
        members = torch.nonzero(train.labels == c).squeeze(1)
        order = torch.randperm(len(members), generator=generator(replicate, "select", "candidates", c))
        candidates = read_images(train, members[order[:CANDIDATES]].sort().values, device=CPU, workers=0)
        score = scores_of(teacher, student, candidates, label=c, norm=norm, temperature=config.evaluate.temperature,
                          gen=generator(replicate, "probe", "crops", c))
        worst = candidates[torch.argsort(score, descending=True, stable=True)]
        chosen = worst[:10] if rule == "top" else torch.cat([torch.from_numpy(images_u8[labels == c][:5]), worst[:5]])
        folder = out / train.class_names[c].replace("/", "_")
        folder.mkdir(parents=True)
        for i, image in enumerate(chosen):
            Image.fromarray(image[0].numpy()).save(folder / f"{i:02d}.png")
    return out


def top1(root: str, replicate: int, *overrides: str) -> dict[str, float]:
    config = resolve_config(preset="fashion_mnist", artifact_root=root,
                            overrides=[*BASE, *overrides, f"runtime.seed={replicate}"])
    [evaluate] = [o.ref for o in run_plain(config, until="evaluate") if o.ref.stage == "evaluate"]
    metrics = ArtifactStore(root).read_manifest(evaluate)["metrics"]
    return {"val": metrics["val_top1"], "test": metrics["test_top1"]}


if __name__ == "__main__":
    root, work, replicate, rule = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    if rule not in ("top", "half"):
        sys.exit(f"rule {rule!r}: use top or half")
    work.mkdir(parents=True, exist_ok=True)
    folders = choose(root, work, replicate, rule)
    print(json.dumps({"rule": rule, "replicate": replicate,
                      "chosen": top1(root, replicate, "synthesis.mode=imported", f"synthesis.import_root={folders}"),
                      "random_real": top1(root, replicate, "synthesis.mode=random_real")}))
