"""The bad-input table: every case exits with code 2, names the file / key / row at fault,
and writes or changes nothing (no output, no MLflow run).

Each case copies a small project (the tiny model, every stage already run once), breaks
one thing, runs one stage through the `dlma` CLI and compares every file of the project,
byte for byte, before and after.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml
from typer.testing import CliRunner

from dlma.cli import app
from tests.helpers import REPO

ARGS = {
    "model": ["model", "--out", "model.json"],
    "prepare": ["prepare", "--train", "train.parquet", "--eval", "eval.parquet", "--report", "prepare.json"],
    "generate": ["generate", "--prompts", "train.parquet", "--human", "human.parquet", "--model-id", "model.json", "--out", "generated.parquet",
                 "--report", "generate.json"],
    "score": ["score", "--generated", "generated.parquet", "--model-id", "model.json", "--out", "scored.parquet",
              "--report", "score.json"],
    "filter": ["filter", "--scored", "scored.parquet", "--out", "prefs.parquet", "--report", "filter.json"],
    "train": ["train", "--preferences", "prefs.parquet", "--model-id", "model.json", "--out", "models/dlma", "--checkpoints", "models/checkpoints",
              "--report", "train.json", "--curve", "curve.csv"],
    "sets": ["sets", "--out", "sets.json", "--reward-dir", "models/reward"],
    "human": ["human", "--eval-prompts", "eval.parquet", "--train", "human.parquet", "--holdout", "holdout.parquet", "--report", "human.json"],
    "reward": ["reward", "--train", "human.parquet", "--holdout", "holdout.parquet", "--out", "models/reward",
               "--report", "reward.json"],
    "truth": ["truth", "--scored", "scored.parquet", "--model-id", "model.json", "--metrics", "reports/truth.json",
              "--samples", "reports/truth.parquet"],
    "agreement": ["agreement", "--model-id", "model.json", "--sets", "sets.json", "--metrics", "reports/agreement.json",
                  "--samples", "reports/agreement.parquet"],
    "evaluate": ["evaluate", "--eval-prompts", "eval.parquet", "--model-id", "model.json", "--aligned", "models/dlma",
                 "--scored", "scored.parquet", "--curve", "curve.csv", "--sets", "sets.json",
                 "--agreement", "reports/agreement.json", "--agreement-samples", "reports/agreement.parquet",
                 "--metrics", "reports/metrics.json", "--samples", "reports/samples.parquet", "--report", "reports/report.md",
                 "--score-hist", "reports/hist.csv", "--win-rate", "reports/win.csv",
                 "--figure-score-hist", "reports/hist.png", "--figure-win-rate", "reports/win.png",
                 "--figure-train-curve", "reports/curve.png"],
}


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_model_dir) -> Path:
    """A project where every stage has run once."""
    root = tmp_path_factory.mktemp("bad-inputs") / "project"
    root.mkdir()
    shutil.copytree(tiny_model_dir, root / "model")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["model"]["base"] = "model"
    shutil.copy(REPO / "data" / "prompts.jsonl", root / "prompts.jsonl")
    shutil.copy(REPO / "data" / "labelled_pairs.jsonl", root / "pairs.jsonl")
    params["data"].update({"source": "prompts.jsonl", "limit": 6})
    params["generate"].update({"max_new_tokens": 4, "batch_size": 4})
    params["filter"]["drop_truncated"] = "none"  # a tiny random model rarely ends an answer in 4 tokens
    params["train"].update({"max_steps": 1, "batch_size": 2})
    params["evaluate"].update({"limit": 2, "bootstrap": 20, "prompt_sets": [],
                               "agreement_sets": [pair_set("mine", "pairs.jsonl")]})
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (root / ".dvc").mkdir()  # the repository root (MLflow store)
    with _chdir(root):
        # human.source (../shared/...) is not beside this project: no human pairs, the reward judge skipped
        for stage in ("model", "prepare", "human", "reward", "generate", "score", "filter", "train", "sets", "agreement", "evaluate"):
            result = CliRunner().invoke(app, ARGS[stage])
            assert result.exit_code == 0, (stage, result.output)
    return root


class _chdir:
    def __init__(self, path: Path):
        self.path, self.old = path, None

    def __enter__(self):
        import os

        self.old = Path.cwd()
        os.chdir(self.path)

    def __exit__(self, *exc):
        import os

        os.chdir(self.old)


def pair_set(name: str, source: str, optional: bool = False) -> dict:
    return {"name": name, "source": source, "format": "auto", "columns": {}, "pku_label": "safer", "pair": "", "optional": optional}


def set_param(section: str, key: str, value):
    def apply(root: Path) -> None:
        params = yaml.safe_load((root / "params.yaml").read_text())
        params[section][key] = value
        (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return apply


def write(name: str, content: str | bytes, *then):
    def apply(root: Path) -> None:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        for step in then:
            step(root)
    return apply


def steps(*applied):
    def apply(root: Path) -> None:
        for step in applied:
            step(root)
    return apply


def parquet(name: str, frame_of):
    def apply(root: Path) -> None:
        frame_of(root).write_parquet(root / name)
    return apply


def source(name: str, content: str | bytes, **columns):
    return write(name, content, set_param("data", "source", name), *([set_param("data", "columns", columns)] if columns else []))


def prefs(change):
    return parquet("prefs.parquet", lambda root: change(pl.read_parquet(root / "prefs.parquet")))


def agreement(name: str, content: str, **columns):
    spec = pair_set("extra", name) | ({"columns": columns} if columns else {})
    return write(name, content, set_param("evaluate", "agreement_sets", [spec]))


def truncate(name: str):
    def apply(root: Path) -> None:
        data = (root / name).read_bytes()
        (root / name).write_bytes(data[: len(data) // 2])
    return apply


def remove(name: str):
    def apply(root: Path) -> None:
        (root / name).unlink()
    return apply


def tag_template(template: str):
    """prompts.pairs.<the selected pair>.tag_pos set to `template`."""
    def apply(root: Path) -> None:
        params = yaml.safe_load((root / "params.yaml").read_text())
        params["prompts"]["pairs"][params["prompts"]["pair"]]["tag_pos"] = template
        (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return apply


PAIR = json.dumps({"prompt": "q", "chosen": "a", "rejected": "b"})
# (case, what breaks it, the stage that must refuse it, what the message must name)
CASES = [
    # -- found accepted silently or as a traceback before (issue 9) --
    ("nan float param", set_param("train", "margin_weight", float("nan")), "train", r"train.margin_weight must be a finite number"),
    ("inf float param", set_param("generate", "temperature", float("inf")), "generate", r"generate.temperature must be a finite number"),
    ("non-UTF-8 data file", source("latin.jsonl", b'{"prompt": "ok"}\n{"prompt": "caf\xe9"}\n'), "prepare",
     r"latin.jsonl, line 2: not UTF-8"),
    ("non-UTF-8 CSV", source("latin.csv", b"prompt\nok\ncaf\xe9\n"), "prepare", r"latin.csv, line 3: not UTF-8"),
    ("truncated safetensors", truncate("model/model.safetensors"), "model", r"model/model.safetensors' .*truncated"),
    ("malformed config.json", write("model/config.json", '{"vocab_size": '), "model", r"model/config.json' is not valid JSON"),
    ("every prompt over the token limit", set_param("generate", "max_prompt_tokens", 3), "generate",
     r"every prompt is longer than generate.max_prompt_tokens=3"),
    ("duplicate ids", source("dup.jsonl", '{"id": "a", "prompt": "x"}\n{"id": "b", "prompt": "y"}\n{"id": "a", "prompt": "z"}\n'),
     "prepare", r"dup.jsonl, line 3: id 'a' repeats line 1"),
    ("integer prompt column", parquet("ints.parquet", lambda root: (set_param("data", "source", "ints.parquet")(root),
                                                                    pl.DataFrame({"prompt": [1, 2, 3]}))[1]),
     "prepare", r"ints.parquet, row 0: field 'prompt' must be text, got int"),
    ("agreement set with chosen == rejected", agreement("same.jsonl", json.dumps({"prompt": "q", "chosen": "a", "rejected": "a"}) + "\n"),
     "agreement", r"agreement set 'extra' \(same.jsonl\): chosen equals rejected in all 1 rows"),
    ("directory as data.source", write("adir/x.txt", "", set_param("data", "source", "adir")), "prepare",
     r"data file 'adir' is a directory"),
    ("agreement set with wrong columns", agreement("cols.jsonl", json.dumps({"question": "q", "good": "a", "bad": "b"}) + "\n",
                                                   chosen="good", rejected="bad"),
     "agreement", r"cols.jsonl, line 1: no field 'prompt'.*the columns of evaluate.agreement_sets 'extra'"),
    ("required evaluation set missing", set_param("evaluate", "agreement_sets", [pair_set("extra", "gone.jsonl")]), "sets",
     r"evaluation set 'extra': gone.jsonl not found.*optional: true"),
    # -- the cases that already worked --
    ("malformed JSONL line", source("bad.jsonl", '{"prompt": "a"}\n{oops}\n'), "prepare", r"bad.jsonl, line 2: not valid JSON"),
    ("missing column", source("q.csv", "question,kind\nhello,x\n"), "prepare", r"q.csv, line 2: no field 'prompt'.*data.columns"),
    ("null prompt", source("n.jsonl", '{"prompt": "a"}\n{"prompt": null}\n'), "prepare", r"n.jsonl, line 2: field 'prompt' is empty"),
    ("empty data file", source("e.jsonl", "\n"), "prepare", r"e.jsonl' has no rows"),
    ("missing data file", set_param("data", "source", "nowhere.jsonl"), "prepare", r"nowhere.jsonl' does not exist"),
    ("unknown data.columns key", set_param("data", "columns", {"question": "q"}), "prepare", r"data.columns has unknown key"),
    ("eval_fraction out of range", set_param("data", "eval_fraction", 1.5), "prepare", r"data.eval_fraction must be in \[0, 1\)"),
    ("data.limit zero", set_param("data", "limit", 0), "prepare", r"data.limit must be a positive integer"),
    ("PKU label not 0/1", source("pku.jsonl", json.dumps({"prompt": "q", "response_0": "a", "response_1": "b",
                                                          "better_response_id": 0, "safer_response_id": 2}) + "\n"),
     "prepare", r"pku.jsonl, line 1: field 'safer_response_id' must be 0 or 1"),
    ("unknown params key", set_param("generate", "max_new_token", 5), "generate", r"unknown key\(s\) generate.max_new_token"),
    ("wrong param type", set_param("filter", "min_abs_score", "high"), "filter", r"filter.min_abs_score must be float"),
    ("unknown prompt pair", set_param("prompts", "pair", "polite"), "generate", r"prompts.pair 'polite' is not defined"),
    ("unknown prompt style", set_param("prompts", "style", "banner"), "score", r"prompts.style must be one of"),
    ("zero temperature", set_param("generate", "temperature", 0.0), "generate", r"generate.temperature must be > 0"),
    ("missing model path", set_param("model", "base", "no-such-model"), "model", r"model.base: 'no-such-model' does not exist"),
    ("model changed since model.json", write("model/generation_config.json", '{"do_sample": false}'), "generate",
     r"changed since 'model.json' was written"),
    ("generated table with wrong columns", parquet("generated.parquet", lambda root: pl.DataFrame({"id": ["a"], "prompt": ["q"]})),
     "score", r"'generated.parquet' lacks column\(s\) \['response_pos', 'response_neg'\]"),
    ("missing scored table", remove("scored.parquet"), "filter", r"scored table 'scored.parquet' does not exist"),
    ("NaN score", parquet("scored.parquet", lambda root: pl.read_parquet(root / "scored.parquet").with_columns(
        pl.lit(float("nan")).alias("score"))), "filter", r"'scored.parquet': field 'score' is NaN in row id="),
    ("preferences without margin", prefs(lambda f: f.drop("margin")), "train", r"'prefs.parquet' lacks column\(s\) \['margin'\]"),
    ("NaN margin", prefs(lambda f: f.with_columns(pl.lit(float("nan")).alias("margin"))), "train",
     r"'prefs.parquet': field 'margin' is NaN or missing in row id="),
    ("empty preferences", prefs(lambda f: f.head(0)), "train", r"'prefs.parquet' has no rows"),
    ("missing preference file", remove("prefs.parquet"), "train", r"preference file 'prefs.parquet' does not exist"),
    ("beta zero", set_param("train", "beta", 0.0), "train", r"train.beta must be > 0"),
    ("margin clamp reversed", set_param("train", "margin_min", 50.0), "train", r"train.margin_min must be <= train.margin_max"),
    ("unknown judge", set_param("evaluate", "judges", ["gpt4"]), "evaluate", r"evaluate.judges: unknown judge\(s\) \['gpt4'\]"),
    ("human pairs asked for but none", set_param("generate", "pairs_from", "human"), "generate",
     r"generate.pairs_from is human but 'human.parquet' has no pairs"),
    ("human holdout fraction out of range", set_param("human", "holdout_fraction", 1.5), "human",
     r"human.holdout_fraction must be in \(0, 1\), got 1.5"),
    ("human file without labels", write("plain.jsonl", json.dumps({"prompt": "q"}) + "\n", set_param("human", "source", "plain.jsonl")),
     "human", r"plain.jsonl, line 1: no field 'chosen' .*human.columns"),
    ("reward model that is not there", set_param("evaluate", "reward_model", "models/nothing"), "evaluate",
     r"evaluate.reward_model: cannot load 'models/nothing'"),
    ("vLLM engine without its environment", set_param("generate", "engine", "vllm"), "generate",
     r"generate.engine is vllm but no vLLM environment is given: set generate.vllm_python"),
    ("vLLM environment without vllm", steps(set_param("generate", "engine", "vllm"), set_param("generate", "vllm_python", sys.executable)),
     "generate", r"vLLM worker failed with exit code 3 \(vllm is not installed in "),
    ("vLLM memory share out of range", set_param("generate", "vllm_memory_fraction", 1.5), "generate",
     r"generate.vllm_memory_fraction must be in \(0, 1\], got 1.5"),
    ("reward model that is not there, as a labeller", set_param("evaluate", "reward_model", "models/nothing"), "agreement",
     r"evaluate.reward_model: cannot load 'models/nothing'"),
    ("agreement not measured", remove("reports/agreement.json"), "evaluate",
     r"reports/agreement.json not found: run the agreement stage first"),
    ("reward_model judge without a model", set_param("evaluate", "reward_model", ""), "evaluate",
     r"evaluate.judges lists reward_model but evaluate.reward_model is empty"),
    ("agreement set missing a field", agreement("half.jsonl", PAIR + "\n" + json.dumps({"prompt": "q2", "chosen": "a"}) + "\n"),
     "agreement", r"half.jsonl, line 2: no field 'rejected'"),
    ("agreement set without pairs", agreement("prompts_only.jsonl", json.dumps({"prompt": "q"}) + "\n"), "agreement",
     r"agreement set 'extra' .* has no chosen/rejected fields"),
    ("params file not YAML", write("params.yaml", "model: [unclosed\n"), "model", r"params file 'params.yaml' is not valid YAML"),
    ("params section missing", write("params.yaml", "model:\n  base: model\n"), "filter", r"params file 'params.yaml' has no section 'filter'"),
    # -- silent or traceback-only before (issue 21) --
    ("negative margin weight", set_param("train", "margin_weight", -0.2), "train", r"train.margin_weight must be >= 0"),
    ("zero epochs", steps(set_param("train", "epochs", 0.0), set_param("train", "max_steps", -1)), "train",
     r"train.epochs must be > 0"),
    ("top_p zero", set_param("generate", "top_p", 0.0), "generate", r"generate.top_p must be in \(0, 1\], got 0.0"),
    ("top_p above one", set_param("generate", "top_p", 1.5), "generate", r"generate.top_p must be in \(0, 1\], got 1.5"),
    ("negative tie margin", set_param("evaluate", "tie_margin", -1.0), "evaluate", r"evaluate.tie_margin must be >= 0"),
    ("unknown optimizer", set_param("train", "optimizer", "adamw_fast"), "train", r"train.optimizer: unknown 'adamw_fast'"),
    ("unknown scheduler", set_param("train", "lr_scheduler", "wobbly"), "train", r"train.lr_scheduler: unknown 'wobbly'"),
    ("LoRA rank zero", set_param("train", "lora_r", 0), "train", r"train.lora_r and train.lora_alpha must be >= 1"),
    ("negative warm-up", set_param("train", "warmup_steps", -1), "train", r"train.warmup_steps >= 0"),
    ("budget of zero pairs", set_param("filter", "max_pairs", 0), "filter", r"filter.max_pairs must be >= 1 or null"),
    ("unknown true reward", set_param("truth", "reward", "joy"), "truth", r"truth.reward: unknown true reward 'joy'"),
    ("judge prompt with a stray placeholder", set_param("score", "judge_prompt", "Better? {q} A: {a} B: {b} as {answer}"),
     "score", r"score.judge_prompt has the placeholder\(s\) \{answer\}; only \{q\}, \{a\}, \{b\} are filled in"),
    ("tag template with an unmatched brace", tag_template("USER: {q}\nASSISTANT({warm):\n"), "generate",
     r"prompt pair field 'tag_pos': .*unmatched|prompt pair field 'tag_pos': .*expected '\}'"),
    ("lone surrogate in a prompt", source("surrogate.jsonl", '{"prompt": "ok"}\n{"prompt": "bad \\ud800 text"}\n'), "prepare",
     r"surrogate.jsonl, line 2: field 'prompt' holds '\\ud800' at character 4, a lone surrogate"),
    ("corrupt gzip source", source("broken.jsonl.gz", b"\x1f\x8b\x08\x00 not really gzip"), "prepare",
     r"broken.jsonl.gz: cannot read the compressed file"),
    ("first row without an id", source("mixed.jsonl", '{"prompt": "a"}\n{"id": "x", "prompt": "b"}\n'), "prepare",
     r"mixed.jsonl, line 1: no field 'id', while 1 of the 2 rows have one"),
    ("a text file named .gguf", write("fake.gguf", "not a model", set_param("model", "base", "fake.gguf")), "model",
     r"model.base: 'fake.gguf' is not a GGUF file"),
    ("model folder without tokenizer files", steps(remove("model/tokenizer.json"), remove("model/tokenizer_config.json")), "model",
     r"model directory 'model' has no tokenizer files"),
    ("LoRA target the model lacks", set_param("train", "lora_target_modules", ["q_proj", "c_attn"]), "train",
     r"train.lora_target_modules: 'c_attn' not in the model; its linear layers are .*q_proj"),
    ("reward micro-batch not dividing the batch", set_param("reward", "micro_batch_size", 3), "reward",
     r"reward.micro_batch_size must divide reward.batch_size=8"),
]


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(("case", "breaks", "stage", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_cleanly(built, tmp_path, monkeypatch, case, breaks, stage, message):
    monkeypatch.delenv("DLMA_VLLM_PYTHON", raising=False)  # a vLLM environment of the developer's must not count
    root = tmp_path / "project"
    shutil.copytree(built, root)
    breaks(root)
    before = snapshot(root)
    with _chdir(root):
        result = CliRunner().invoke(app, ARGS[stage])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    import re

    assert re.search(message, result.output, re.S), result.output
    assert snapshot(root) == before  # no output written or changed, MLflow store untouched


def test_the_table_is_complete():
    # 13 cases found by the hostile-user pass of issue 9 plus those that already held.
    assert len(CASES) >= 35 and len({c[0] for c in CASES}) == len(CASES)


def test_an_overlong_prompt_is_skipped_and_counted(built, tmp_path):
    root = tmp_path / "project"
    shutil.copytree(built, root)
    frame = pl.read_parquet(root / "train.parquet")
    long_prompt = "word " * 20_000  # about 100 KB
    frame = pl.concat([frame, pl.DataFrame({"id": ["long"], "prompt": [long_prompt], "category": ["helpful"]})])
    frame.write_parquet(root / "train.parquet")
    set_param("generate", "max_prompt_tokens", 512)(root)
    with _chdir(root):
        result = CliRunner().invoke(app, ARGS["generate"])
    assert result.exit_code == 0, result.output
    report = json.loads((root / "generate.json").read_text())
    assert report["skipped"] == {"prompt_too_long": 1} and report["rows_in"] == frame.height
    assert "long" not in pl.read_parquet(root / "generated.parquet")["id"].to_list()
