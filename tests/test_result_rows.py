"""A report row from real replicates at IPC 1: one image a class has no within-class pairs, so the
row carries no similarity and claim (a) says why instead of failing the report."""

from __future__ import annotations

from flows.config import resolve_config
from flows.without_prefect import run_plain
from storage.artifacts import ArtifactStore
from tasks.report.claims import similarity_claims
from tasks.report.rows import result_row
from tests.conftest import needs_fashion_mnist


@needs_fashion_mnist
def test_one_image_a_class_gives_a_row_without_similarity_and_claim_a_says_why(tmp_path):
    def replicated(mode: str) -> dict:
        configs = [resolve_config(preset="ci_tiny", artifact_root=str(tmp_path),
                                  overrides=[f"synthesis.mode={mode}", "synthesis.ipc=1", f"runtime.seed={seed}"])
                   for seed in (0, 1)]
        manifests = []
        for config in configs:
            refs = {o.ref.stage: o.ref for o in run_plain(config)}
            manifests.append({stage: ArtifactStore(tmp_path).read_manifest(ref) for stage, ref in refs.items()})
        return result_row({"synthesis.mode": mode}, configs[0], manifests, evaluate_state="Completed",
                          images_fingerprint=manifests[0]["synthesize"]["fingerprint"], shared_teacher=False)

    rows = [replicated("lpld"), replicated("sre2l")]
    for row in rows:
        assert row["ipc"] == 1 and row["replicates"] == 2 and len(row["test_runs"]) == len(row["val_runs"]) == 2
        assert row["within_class_similarity"] is None and row["similarity_runs"] == []
    [published, pooled] = similarity_claims(rows, 1)
    assert published.decision is None and published.missing == "one image a class has no within-class pairs"
    assert pooled.decision is None and "no lpld and sre2l+pooled images" in pooled.missing
