"""Request and response bodies of the HTTP API, with the limits every request is checked against."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr, field_validator

MAX_QUERY_CHARS = 512
MAX_K = 100
MAX_BATCH = 64
MAX_BODY_BYTES = 64 * 1024
MAX_JSON_DEPTH = 16  # a batch request nests 3 deep
METHODS = ("R4T-Diffusion", "no fan-out")  # the names r4t.retrieve and r4t eval use
LAYOUTS = ("composed", "fused")  # the app's deployments: one per stage, or one doing every stage


class FanoutRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: StrictStr = Field(min_length=1, max_length=MAX_QUERY_CHARS)
    k: StrictInt = Field(10, ge=1, le=MAX_K)
    method: Literal[METHODS] = "R4T-Diffusion"
    guidance: Optional[StrictFloat | StrictInt] = Field(None, ge=0, le=10, description="CFG strength; default: "
                                                                                     "the served sampler's")
    steps: Optional[StrictInt] = Field(None, ge=1, le=256, description="sampler steps; default: the served sampler's")
    seed: Optional[StrictInt] = Field(None, ge=0, le=2**31 - 1, description="pins the sample (such a request is "
                                                                            "sampled on its own, not micro-batched)")

    @field_validator("query")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("query is blank")
        return v


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    requests: list[FanoutRequest] = Field(min_length=1, max_length=MAX_BATCH)


class Item(BaseModel):
    id: str
    text: str
    category: str
    score: float


class FanoutResponse(BaseModel):
    query: str
    method: str
    items: list[Item]
    metrics: dict[str, float]  # vendi, align, ground of the returned set
    versions: dict[str, str]  # hashes of the artifacts that produced it
    timing_ms: dict[str, float]


class AppArgs(BaseModel):
    """The application's `args` in a Serve config (serve_configs/*.yaml): an unknown or mistyped key stops the app
    before any replica starts, naming the key."""
    model_config = ConfigDict(extra="forbid")

    run_dir: StrictStr = "runs/demo"
    dataset: StrictStr = "polyvore"
    diffusion_run: StrictStr = "diffusion"
    catalog: StrictStr | None = Field(None, description="a catalog folder (data/, index/) to serve instead of the "
                                      "run's own: built with the same encoder; see allow_catalog_change")
    allow_catalog_change: bool = Field(False, description="serve a catalog other than the one the denoiser was "
                                       "trained on (items added or removed since)")
    encoder: StrictStr = "minilm"
    device: StrictStr = "cpu"
    threads: StrictInt = Field(1, ge=1, description="torch threads per replica")
    sampler: dict | None = Field(None, description="sampler settings over the model's (method, steps, guidance, ...)")
    nprobe: StrictInt = Field(16, ge=1)
    ef_search: StrictInt = Field(64, ge=1)
    layout: Literal[LAYOUTS] = Field("composed", description="composed: a deployment per stage (encoder, denoiser, "
                                     "index), each scaled on its own; fused: the ingress runs every stage (no hops)")
    denoiser_replicas: StrictInt = Field(1, ge=1, description="replicas of the deployment that samples: Denoiser "
                                         "(composed) or Retrieval (fused)")
    api_key: StrictStr | None = Field(None, description="a literal key clients send as x-api-key")
    api_key_env: StrictStr | None = Field(None, description="the environment variable holding the key on each node")
    access_log: bool = Field(True, description="a log line per request in each replica's Serve log (off: less CPU "
                                               "per request; errors are logged either way)")
    health_check_period_s: float | None = Field(None, gt=0)
    health_check_timeout_s: float | None = Field(None, gt=0)
    retry_attempts: StrictInt = Field(3, ge=1, description="calls in all to a deployment whose replica died")
    retry_seconds: float = Field(60.0, gt=0, description="how long, from the first failure, a call may wait for a "
                                                         "replacement replica before the client gets a 503")
