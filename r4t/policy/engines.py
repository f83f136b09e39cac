"""The generation engines by name (`policy.backend`): the one place that knows which engines exist."""

from __future__ import annotations

from r4t.errors import ConfigError
from r4t.policy.backend import GenerationBackend
from r4t.policy.hf_backend import TransformersBackend
from r4t.policy.vllm_backend import VLLMBackend

BACKENDS = ("transformers", "vllm")


def make_backend(name: str, model_path: str, device: str = "cpu", **options) -> GenerationBackend:
    if name == "transformers":
        return TransformersBackend(model_path, device=device)
    if name == "vllm":
        return VLLMBackend(model_path, device=device, **options)
    raise ConfigError(f"policy.backend={name!r}: unknown generation backend; known: {BACKENDS}")
