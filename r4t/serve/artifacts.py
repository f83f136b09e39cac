"""What a serving app loads, checked to agree before any replica starts.

Under <run_dir>/<dataset>/: data/ (items), index/ (faiss + embeddings, manifests) and <diffusion_run>/model/
(the exported denoiser). The denoiser's manifest must name the same encoder and dimension as the index: its rows
live in the encoder's space, so a mismatch stops the app, naming the field. The catalog may be another one than
the denoiser was trained on (`catalog`: a folder with data/ and index/ built by the same encoder, e.g. today's
items), but only when asked for explicitly (`allow_catalog_change`); otherwise a catalog or index that differs
from the training's stops the app too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from r4t.diffusion.checkpoint import MANIFEST_FILE as MODEL_MANIFEST
from r4t.diffusion.checkpoint import WEIGHTS
from r4t.errors import DataError, ManifestMismatch
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
                "teacher": str(model.get("policy_hash", ""))[:12],
                "trained_on_catalog": str(model.get("catalog_hash", ""))[:12]}

    def manifests(self) -> dict[str, dict]:
        return {"index": read_json(self.index_dir / INDEX_MANIFEST),
                "model": read_json(self.model_dir / MODEL_MANIFEST)}


def resolve_artifacts(run_dir: str | Path, dataset: str, diffusion_run: str = "diffusion", catalog: str | None = None,
                      allow_catalog_change: bool = False) -> ServedArtifacts:
    """Find the artifacts and check they agree; raises DataError (missing) or ManifestMismatch (naming the field).
    catalog: the folder of the catalog to serve (default: the run's own, <run_dir>/<dataset>)."""
    root = run_root(run_dir).resolve() / dataset
    art = ServedArtifacts(run_root(catalog).resolve() if catalog else root, root / diffusion_run / "model")
    for folder in (art.data_dir, art.index_dir, art.model_dir):  # a URI run_dir: onto this replica's node
        fetch(folder)
    for folder, stage in ((art.data_dir, "python -m r4t.jobs.data"), (art.index_dir, "python -m r4t.jobs.data"),
                          (art.model_dir, "python -m r4t.jobs.diffusion")):
        if not folder.is_dir():
            raise DataError(f"{folder}: not found; run `{stage}` (or `r4t demo`) first")
    index = read_json(art.index_dir / INDEX_MANIFEST)
    model_manifest = art.model_dir / MODEL_MANIFEST
    model = read_json(model_manifest)
    check_manifest(model, {"encoder": index["encoder"], "encoder_hash": index["weights_hash"], "dim": index["dim"]},
                   f"{model_manifest} against the catalog's index {art.index_dir}")
    if not allow_catalog_change:
        try:
            check_manifest(model, {"catalog_hash": index["catalog_hash"],
                                   "index_manifest_sha256": sha256_file(art.index_dir / INDEX_MANIFEST)},
                           str(model_manifest))
        except ManifestMismatch as e:
            raise ManifestMismatch(f"{e}; the catalog under {art.root} is not the one the denoiser was trained on "
                                   "(serving it anyway needs allow_catalog_change: true)") from None
    return art
