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

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import ValidationError
from ray import serve
from ray.serve.handle import DeploymentHandle

from r4t.errors import ConfigError
from r4t.serve.artifacts import ServedArtifacts, resolve_artifacts
from r4t.serve.batching import MicroBatcher
from r4t.serve.messages import (
    MAX_BODY_BYTES,
    MAX_JSON_DEPTH,
    METHODS,
    AppArgs,
    BatchRequest,
    FanoutRequest,
    FanoutResponse,
)
from r4t.serve.page import page_html
from r4t.serve.retry import ReplicaUnavailable, RetryPolicy, call_with_retries
from r4t.serve.stages import STAGES, FusedHost, StageHost, retrieve_batch
from r4t.storage import fetch

FUSED = "Retrieval"  # the fused layout's worker deployment
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


async def _refusal(request: Request) -> JSONResponse | None:
    """What is wrong with a request before FastAPI parses it (API key, body size, encoding, JSON), or None."""
    key = request.app.state.api_key
    if key and request.headers.get("x-api-key") != key and request.url.path not in ("/healthz", "/"):
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
    return None


class Guard:
    """Runs `_refusal` on every HTTP request, then hands the app the body it read. Plain ASGI: Starlette's
    BaseHTTPMiddleware would add a task and a stream per request, a measurable share of the ingress's CPU."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request = Request(scope, receive)
        refusal = await _refusal(request)
        if refusal is not None:
            return await refusal(scope, receive, send)
        if scope["method"] != "POST":
            return await self.app(scope, receive, send)
        body, replayed = await request.body(), False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)


api.add_middleware(Guard)


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


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=256)
@serve.ingress(api)
class Ingress:
    """HTTP in, micro-batches out (size and wait live-tunable through user_config): each batch goes through the
    stages of r4t.serve.stages, one handle call per stage (composed) or one call in all (fused). The ingress runs no
    model code itself, so parsing requests never waits on it."""

    def __init__(self, artifacts: ServedArtifacts, args: AppArgs, handles: dict[str, DeploymentHandle]):
        self.artifacts, self.handles = artifacts, handles
        self.retry = RetryPolicy(args.retry_attempts, args.retry_seconds)
        for folder in (artifacts.data_dir, artifacts.index_dir, artifacts.model_dir):
            fetch(folder)
        self.versions, self.manifests = artifacts.versions(), artifacts.manifests()
        api.state.api_key = resolve_api_key(args.api_key, args.api_key_env)
        # a batch in flight per replica that samples (fused: it runs every stage), and composed, one per other stage
        self.batcher = MicroBatcher(self._batch, slots=args.denoiser_replicas + len(self.handles) - 1)

    def reconfigure(self, user_config: dict) -> None:
        self.batcher.max_size = int(user_config.get("max_batch_size", self.batcher.max_size))
        self.batcher.wait_s = float(user_config.get("batch_wait_timeout_s", self.batcher.wait_s))

    def check_health(self) -> None:
        """The versions every response carries must still describe the artifacts on disk."""
        if self.artifacts.versions() != self.versions:
            raise RuntimeError(f"the artifacts under {self.artifacts.root} changed since this replica started")

    async def _call(self, name: str, *batch):
        """A deployment's call on a micro-batch, resent if its replica died."""
        return await call_with_retries(name, lambda: self.handles[name].remote(*batch), self.retry)

    async def _batch(self, reqs: list[FanoutRequest]) -> list[tuple[dict, dict]]:
        if FUSED in self.handles:
            return await self._call(FUSED, reqs)
        return await retrieve_batch(reqs, self._call)

    async def _one(self, req: FanoutRequest) -> dict:
        t0 = time.perf_counter()
        found, timing = await self.batcher.submit(req)
        return {"query": req.query, "method": req.method, **found, "versions": self.versions,
                "timing_ms": {**timing, "total": 1e3 * (time.perf_counter() - t0)}}

    @api.post("/v1/fanout", response_model=FanoutResponse)
    async def fanout(self, req: FanoutRequest) -> JSONResponse:
        """One query → K catalog items with distinct texts, with the set's metrics, artifact versions and timing."""
        return JSONResponse(await self._one(req))  # built from validated parts: not validated again

    @api.post("/v1/fanout/batch", response_model=list[FanoutResponse])
    async def fanout_batch(self, req: BatchRequest) -> JSONResponse:
        """Up to 64 queries at once; they share micro-batches."""
        return JSONResponse(list(await asyncio.gather(*(self._one(r) for r in req.requests))))

    @api.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page(self) -> HTMLResponse:
        """A page to try the API in a browser: a query, the methods side by side."""
        return HTMLResponse(page_html())

    @api.get("/healthz")
    async def healthz(self) -> dict:
        return {"status": "ok"}

    @api.get("/v1/info")
    async def info(self) -> dict:
        """The manifests of the loaded artifacts."""
        return {"versions": self.versions, "manifests": self.manifests, "methods": list(METHODS)}


def build_app(args: dict | AppArgs) -> serve.Application:
    """The app builder `serve run` calls with the config's `args` (fields: AppArgs). Health-check periods and the
    access log apply to every deployment; a serve config can also set them per deployment."""
    if not isinstance(args, AppArgs):
        try:
            args = AppArgs.model_validate(args)
        except ValidationError as e:
            raise ConfigError("Serve application args: " + "; ".join(
                f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())) from None
    art = resolve_artifacts(args.run_dir, args.dataset, args.diffusion_run, args.catalog, args.allow_catalog_change)
    health = {k: v for k, v in (("health_check_period_s", args.health_check_period_s),
                                ("health_check_timeout_s", args.health_check_timeout_s)) if v is not None}
    health["logging_config"] = {"enable_access_log": args.access_log}
    if args.layout == "fused":
        handles = {FUSED: FusedHost.options(name=FUSED, num_replicas=args.denoiser_replicas, **health).bind(art, args)}
    else:
        handles = {name: StageHost.options(name=name, **health, **(
            {"num_replicas": args.denoiser_replicas} if name == "Denoiser" else {})).bind(name, art, args)
            for name in STAGES}
    # A new version (e.g. another catalog) replaces every replica; an old Ingress replica finishes the requests it
    # holds, which may wait for the new stage replicas to start, instead of being killed after Serve's default 20 s.
    return Ingress.options(**health, graceful_shutdown_timeout_s=args.retry_seconds).bind(art, args, handles)
