"""The HTTP app: a FastAPI ingress composing the encoder, denoiser and index deployments.

    serve run serve_configs/local.yaml            (after `r4t demo`)
    r4t serve --dataset polyvore                  (the same, from the command line)

POST /v1/fanout, POST /v1/fanout/batch, GET /healthz, GET /v1/info; OpenAPI at /openapi.json, docs at /docs.
Every bad request is a 4xx naming the problem: the body is checked for size and UTF-8 before it is parsed,
and the fields against the limits in r4t.serve.messages. An API key, when configured, is required in the
`x-api-key` header. A handle call whose replica died is resent within bounds (r4t.serve.retry); when none answers
in time the client gets a 503 naming the deployment.
"""

from __future__ import annotations

import asyncio
import json
import os
import time

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from ray import serve
from ray.serve.handle import DeploymentHandle

from r4t.errors import ConfigError
from r4t.serve.artifacts import ServedArtifacts, resolve_artifacts
from r4t.serve.deployments import CatalogIndex, Denoiser, QueryEncoder
from r4t.serve.messages import MAX_BODY_BYTES, MAX_JSON_DEPTH, AppArgs, BatchRequest, FanoutRequest, FanoutResponse
from r4t.serve.retry import ReplicaUnavailable, RetryPolicy, call_with_retries
from r4t.storage import fetch

api = FastAPI(title="r4t", description="Set-valued retrieval: a query in, a grounded set of catalog items out.",
              version="1")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": message})


@api.exception_handler(RequestValidationError)
async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    problems = []
    for e in exc.errors():
        where = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
        problems.append(f"{where}: {e.get('msg', 'invalid')}")
    return _error(422, "; ".join(problems))


@api.exception_handler(ReplicaUnavailable)
async def _unavailable(request: Request, exc: ReplicaUnavailable) -> JSONResponse:
    response = _error(503, str(exc))
    response.headers["retry-after"] = "5"
    return response


@api.middleware("http")
async def _guard(request: Request, call_next):
    """Size, encoding and API key, before FastAPI parses anything."""
    key = request.app.state.api_key
    if key and request.headers.get("x-api-key") != key and request.url.path not in ("/healthz",):
        return _error(401, "missing or wrong x-api-key header")
    if request.method == "POST":
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            return _error(413, f"request body of {len(body)} bytes; the limit is {MAX_BODY_BYTES}")
        try:
            depth = _depth(json.loads(body.decode("utf-8")))
        except UnicodeDecodeError as e:
            return _error(400, f"request body is not valid UTF-8 (byte {e.start})")
        except json.JSONDecodeError as e:
            return _error(400, f"request body is not valid JSON ({e.msg} at position {e.pos})")
        except RecursionError:  # json.loads recurses per level: thousands of [ fit in the size limit
            return _error(400, f"request body is nested too deeply; the limit is {MAX_JSON_DEPTH} levels")
        except ValueError as e:  # e.g. an integer of more digits than Python converts
            return _error(400, f"request body is not valid JSON ({e})")
        if depth > MAX_JSON_DEPTH:  # caught here, before FastAPI's parser (deeper in the stack) recurses into it
            return _error(400, f"request body is nested {depth} levels deep; the limit is {MAX_JSON_DEPTH}")
    return await call_next(request)


def _depth(value) -> int:
    """How deeply lists and objects nest in a parsed JSON value (iteratively: no recursion limit to hit)."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        v, d = todo.pop()
        if isinstance(v, (dict, list)):
            deepest = max(deepest, d)
            todo.extend((child, d + 1) for child in (v.values() if isinstance(v, dict) else v))
    return deepest


def resolve_api_key(api_key: str | None, api_key_env: str | None) -> str | None:
    """The key clients must send: a literal, or (keeping the secret out of the config) an environment variable
    read where the replica runs; a named variable that is unset stops the replica rather than serving openly."""
    if api_key and api_key_env:
        raise ValueError("give api_key or api_key_env, not both")
    if api_key_env:
        api_key = os.environ.get(api_key_env)
        if not api_key:
            raise RuntimeError(f"api_key_env={api_key_env!r}: the variable is not set on this node")
    return api_key


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=128)
@serve.ingress(api)
class Ingress:
    def __init__(self, encoder: DeploymentHandle, denoiser: DeploymentHandle, index: DeploymentHandle,
                 artifacts: ServedArtifacts, api_key: str | None = None, api_key_env: str | None = None,
                 retry: RetryPolicy | None = None):
        self.encoder, self.denoiser, self.index, self.artifacts = encoder, denoiser, index, artifacts
        self.retry = retry or RetryPolicy()
        for folder in (artifacts.data_dir, artifacts.index_dir, artifacts.model_dir):
            fetch(folder)
        self.versions, self.manifests = artifacts.versions(), artifacts.manifests()
        api.state.api_key = resolve_api_key(api_key, api_key_env)

    def check_health(self) -> None:
        """The versions every response carries must still describe the artifacts on disk."""
        if self.artifacts.versions() != self.versions:
            raise RuntimeError(f"the artifacts under {self.artifacts.root} changed since this replica started")

    async def _one(self, req: FanoutRequest) -> dict:
        t0 = time.perf_counter()
        q = await call_with_retries("QueryEncoder", lambda: self.encoder.encode.remote(req.query), self.retry)
        t1 = time.perf_counter()
        rows = None  # no fan-out: the query's own nearest items
        if req.method == "R4T-Diffusion":
            rows = await call_with_retries(
                "Denoiser", lambda: self.denoiser.sample.remote((q, req.steps, req.guidance, req.seed)), self.retry)
        t2 = time.perf_counter()
        rows = None if rows is None else np.asarray(rows, np.float32)
        out = await call_with_retries("CatalogIndex", lambda: self.index.ground.remote(rows, q, req.k), self.retry)
        t3 = time.perf_counter()
        return FanoutResponse(query=req.query, method=req.method, items=out["items"], metrics=out["metrics"],
                              versions=self.versions,
                              timing_ms={"encode": 1e3 * (t1 - t0), "generate": 1e3 * (t2 - t1),
                                         "ground": 1e3 * (t3 - t2), "total": 1e3 * (t3 - t0)}).model_dump()

    @api.post("/v1/fanout", response_model=FanoutResponse)
    async def fanout(self, req: FanoutRequest) -> dict:
        """One query → K catalog items with distinct texts, with the set's metrics, artifact versions and timing."""
        return await self._one(req)

    @api.post("/v1/fanout/batch", response_model=list[FanoutResponse])
    async def fanout_batch(self, req: BatchRequest) -> list[dict]:
        """Up to 64 queries at once; they share the denoiser's micro-batches."""
        return list(await asyncio.gather(*(self._one(r) for r in req.requests)))

    @api.get("/healthz")
    async def healthz(self) -> dict:
        return {"status": "ok"}

    @api.get("/v1/info")
    async def info(self) -> dict:
        """The manifests of the loaded artifacts."""
        return {"versions": self.versions, "manifests": self.manifests}


def build_app(args: dict | AppArgs) -> serve.Application:
    """The app builder `serve run` calls with the config's `args` (fields: AppArgs). Health-check periods apply
    to every deployment; a serve config can also set them per deployment."""
    if not isinstance(args, AppArgs):
        try:
            args = AppArgs.model_validate(args)
        except ValidationError as e:
            raise ConfigError("Serve application args: " + "; ".join(
                f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())) from None
    art = resolve_artifacts(args.run_dir, args.dataset, args.diffusion_run)
    health = {k: v for k, v in (("health_check_period_s", args.health_check_period_s),
                                ("health_check_timeout_s", args.health_check_timeout_s)) if v is not None}
    encoder = QueryEncoder.options(**health).bind(args.encoder, "cpu", args.threads)
    denoiser = Denoiser.options(**health, num_replicas=args.denoiser_replicas).bind(
        str(art.model_dir), args.sampler, args.device, args.threads, str(art.root), args.nprobe, args.ef_search)
    index = CatalogIndex.options(**health).bind(str(art.root), args.nprobe, args.ef_search)
    retry = RetryPolicy(args.retry_attempts, args.retry_seconds)
    return Ingress.options(**health).bind(encoder, denoiser, index, art, args.api_key, args.api_key_env, retry)
