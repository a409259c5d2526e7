"""Re-check an artifact tree against its manifests: what is whole, unfinished or damaged.

Every finished artifact's manifest lists its files with their sizes and SHA-256 checksums
(:meth:`ArtifactStore.write_manifest`); verification re-reads each file and compares, checks
that the manifest names its own stage and fingerprint and that its inputs exist, and lists
directories without a manifest as unfinished (the next run redoes them; not damage). Nothing
is changed: the fix for a damaged artifact is to delete its directory and rerun the same command;
one whose files are whole but whose input is gone needs only the rerun, which rebuilds the input
(the same fingerprint) and keeps it.

    findings = verify_tree("artifacts")
    damaged = [f for f in findings if f.status == "damaged"]
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from storage.artifacts import MANIFEST, ArtifactError, ArtifactRef, ArtifactStore, rebuild_advice

Status = Literal["ok", "unfinished", "damaged", "unchecked"]
RESULT_FOLDERS = {"sweep", "history"}  # result files of flows (tables, reports, run histories), not stage artifacts


@dataclass(frozen=True)
class Finding:
    ref: ArtifactRef
    status: Status
    detail: str
    inputs_only: bool = False  # damaged only in that an input is missing: a rerun rebuilds it and keeps this one


def _findings(store: ArtifactStore, ref: ArtifactRef) -> tuple[Status, str, bool]:
    """The artifact's status and detail, and whether missing inputs are all that is wrong with it."""
    try:
        manifest = json.loads(store.read_bytes(ref, MANIFEST))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        return "damaged", f"manifest.json is not valid JSON ({err})", False
    if not isinstance(manifest, dict) or (manifest.get("stage"), manifest.get("fingerprint")) != (ref.stage, ref.fingerprint):
        return "damaged", "manifest.json names another artifact (or is not a manifest)", False
    missing = []
    for name, spec in sorted((manifest.get("inputs") or {}).items()):
        stage, _, fingerprint = str(spec).partition("/")
        if not store.is_complete(ArtifactRef(stage=stage, fingerprint=fingerprint)):
            missing.append(f"input {name} ({spec}) is missing or unfinished")
    files = manifest.get("files")
    if files is None:
        return ("damaged", "; ".join(missing), True) if missing else ("unchecked", "manifest has no checksums (older format)", False)
    problems = file_problems(files, store.file_checksums(ref))  # the listing write_manifest recorded, taken now
    if missing or problems:
        return "damaged", "; ".join(missing + problems), not problems
    return "ok", f"{len(files)} files", False


def file_problems(recorded: dict[str, dict[str, Any]], present: dict[str, dict[str, Any]], *,
                  record: str = "the manifest") -> list[str]:
    """How the files ``present`` differ from the ``recorded`` ones (both ``{name: {"bytes", "sha256"}}``);
    ``record`` names where the recorded listing is kept."""
    problems = [f"{name} is missing" for name in sorted(set(recorded) - set(present))]
    problems += [f"{name} is not in {record}" for name in sorted(set(present) - set(recorded))]
    for name in sorted(set(recorded) & set(present)):
        if present[name]["bytes"] != recorded[name]["bytes"]:
            problems.append(f"{name} has {present[name]['bytes']} bytes, {record} says {recorded[name]['bytes']}")
        elif present[name]["sha256"] != recorded[name]["sha256"]:
            problems.append(f"{name} fails its checksum")
    return problems


def verify_artifact(store: ArtifactStore, ref: ArtifactRef) -> None:
    """Re-read every file of the complete artifact ``ref`` against its manifest; ArtifactError naming the
    damage and the fix when one differs. What a run does before it reuses an artifact."""
    status, detail, _ = _findings(store, ref)
    if status == "damaged":
        raise ArtifactError(f"artifact {ref} under {store.root} is damaged: {detail}; {rebuild_advice(store.location(ref))}")


def verify_tree(root: str) -> list[Finding]:
    """One finding per artifact directory under ``root`` (stage folders, then fingerprints, sorted)."""
    store = ArtifactStore(root)
    if not store.fs.isdir(store.root_path):
        what = "is not a folder" if store.fs.exists(store.root_path) else "does not exist"
        raise FileNotFoundError(f"artifact root {root} {what}; give the folder passed as --artifact-root")
    findings = []
    for stage_dir in sorted(store.fs.ls(store.root_path, detail=False)):
        stage = stage_dir.rstrip("/").rsplit("/", 1)[-1]
        if not store.fs.isdir(stage_dir) or stage.startswith(".") or stage in RESULT_FOLDERS:
            continue
        for artifact_dir in sorted(store.fs.ls(stage_dir, detail=False)):
            fingerprint = artifact_dir.rstrip("/").rsplit("/", 1)[-1]
            if not store.fs.isdir(artifact_dir) or fingerprint.startswith("."):
                continue
            ref = ArtifactRef(stage=stage, fingerprint=fingerprint)
            if not store.is_complete(ref):
                findings.append(Finding(ref, "unfinished", "no manifest; the next run redoes it"))
                continue
            findings.append(Finding(ref, *_findings(store, ref)))
    return findings


def format_findings(findings: list[Finding]) -> str:
    lines = [f"{f.status:<10} {f.ref}  {f.detail}" for f in findings]
    counts = {s: sum(f.status == s for f in findings) for s in ("ok", "unfinished", "unchecked", "damaged")}
    lines.append(", ".join(f"{n} {s}" for s, n in counts.items()))
    damaged = [f for f in findings if f.status == "damaged"]
    inputs_only = any(f.inputs_only for f in damaged)
    if any(not f.inputs_only for f in damaged):
        lines.append("fix: " + rebuild_advice("each damaged artifact's directory"
                                              + (" whose own files are damaged" if inputs_only else "")))
    if inputs_only:
        lines.append("fix: where only an input is missing, rerun the same command: it rebuilds the input and keeps "
                     "the artifact")
    return "\n".join(lines)
