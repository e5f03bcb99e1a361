"""Shared fixtures: the repository's fixture models (seeded random weights in real layouts) and the real Gemma 3
270M that the set-up installs."""

import functools
import os
from pathlib import Path

import pytest

import vene

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"


@functools.lru_cache(maxsize=None)
def load_model(path: str) -> vene.Model:
    return vene.load(path)


@pytest.fixture(scope="session")
def gpt2() -> vene.Model:
    return load_model(str(FIXTURES / "gpt2" / "model"))


def gemma3_path() -> Path:
    """The real model's GGUF, as scripts/real-model.sh installs it (VENE_GEMMA3_270M overrides)."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vene/models/gemma-3-270m-q4_k_m.gguf"
    path = Path(os.environ.get("VENE_GEMMA3_270M", default))
    if not path.is_file():
        pytest.fail(f"the real model is missing at {path}: run scripts/setup.sh (it fetches Gemma 3 270M)")
    return path


@pytest.fixture(scope="session")
def gemma3() -> vene.Model:
    return load_model(str(gemma3_path()))


def vene_binary() -> Path:
    return REPO / "target" / "release" / "vene"
