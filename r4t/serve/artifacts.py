"""What a serving app loads, checked to agree before any replica starts.

Under <run_dir>/<dataset>/: data/ (items), index/ (faiss + embeddings, manifests) and <diffusion_run>/model/
(the exported denoiser). The denoiser's manifest must name the same encoder, dimension and catalog as the
index, and the index manifest it was trained against; a mismatch stops the app, naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from r4t.diffusion.checkpoint import MANIFEST_FILE as MODEL_MANIFEST
from r4t.diffusion.checkpoint import WEIGHTS
from r4t.errors import DataError
from r4t.index import MANIFEST_FILE as INDEX_MANIFEST
from r4t.io import check_manifest, read_json, sha256_file
from r4t.storage import fetch, run_root


@dataclass(frozen=True)
class ServedArtifacts:
    root: Path  # <run_dir>/<dataset>
    model_dir: Path

    @property
    def index_dir(self) -> Path:
        return self.root / "index"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def versions(self) -> dict[str, str]:
        """Short hashes identifying what answers a request."""
        index = read_json(self.index_dir / INDEX_MANIFEST)
        model = read_json(self.model_dir / MODEL_MANIFEST)
        return {"catalog": index["catalog_hash"][:12], "index": sha256_file(self.index_dir / INDEX_MANIFEST)[:12],
                "encoder": f"{index['encoder']}@{index['weights_hash'][:12]}",
                "denoiser": sha256_file(self.model_dir / WEIGHTS)[:12],
                "teacher": str(model.get("policy_hash", ""))[:12]}

    def manifests(self) -> dict[str, dict]:
        return {"index": read_json(self.index_dir / INDEX_MANIFEST),
                "model": read_json(self.model_dir / MODEL_MANIFEST)}


def resolve_artifacts(run_dir: str | Path, dataset: str, diffusion_run: str = "diffusion") -> ServedArtifacts:
    """Find the artifacts and check they agree; raises DataError (missing) or ManifestMismatch (naming the field)."""
    root = run_root(run_dir).resolve() / dataset
    art = ServedArtifacts(root, root / diffusion_run / "model")
    for folder in (art.data_dir, art.index_dir, art.model_dir):  # a URI run_dir: onto this replica's node
        fetch(folder)
    for folder, stage in ((art.data_dir, "python -m r4t.jobs.data"), (art.index_dir, "python -m r4t.jobs.data"),
                          (art.model_dir, "python -m r4t.jobs.diffusion")):
        if not folder.is_dir():
            raise DataError(f"{folder}: not found; run `{stage}` (or `r4t demo`) first")
    index = read_json(art.index_dir / INDEX_MANIFEST)
    model_manifest = art.model_dir / MODEL_MANIFEST
    check_manifest(read_json(model_manifest), {
        "encoder": index["encoder"], "encoder_hash": index["weights_hash"], "dim": index["dim"],
        "catalog_hash": index["catalog_hash"],
        "index_manifest_sha256": sha256_file(art.index_dir / INDEX_MANIFEST)}, str(model_manifest))
    return art
