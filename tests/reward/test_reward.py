"""The reward stage: trl's RewardTrainer on human-labelled pairs (tiny model), its held-out
accuracy against a plain forward pass done here, and the judge that reads its folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
import yaml
from typer.testing import CliRunner

from dlma.agreement.labellers import reward_function
from dlma.agreement.measure import label_agreement
from dlma.cli import app
from dlma.evaluate.judges import run_judges
from dlma.model import load_tokenizer
from dlma.reward.inputs import reward_inputs
from dlma.reward.run import reward_scores
from dlma.score.params import ScoreParams
from tests.evaluate.test_judges import context
from tests.helpers import REPO, TEST_PROMPTS, shipped

GOOD = ["Sure, here is a careful and kind answer.", "Happy to help: step one, then step two.", "Yes, gladly, here it is."]
BAD = ["Go away, idiot.", "No. Stupid question.", "I hate you."]


def write_pairs(path: Path, n: int) -> None:
    rows = [{"chosen": f"\n\nHuman: question {i}?\n\nAssistant: {GOOD[i % 3]}",
             "rejected": f"\n\nHuman: question {i}?\n\nAssistant: {BAD[i % 3]}"} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def plain_reward(model, ids: list[int]) -> float:
    """One sequence, no padding: the head's value at the last token."""
    with torch.no_grad():
        return float(model(input_ids=torch.tensor([ids])).logits[0, 0])


def run_human_and_reward(root: Path, monkeypatch, *, human: dict, reward: dict | None = None, model: Path | None = None) -> None:
    """The human and reward stages through the CLI, in `root`, with these params on top of the shipped ones."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    if model is not None:
        params["model"]["base"] = str(model)
    params["human"].update(human)
    params["reward"].update(reward or {})
    params["evaluate"].update({"agreement_sets": [], "prompt_sets": []})
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(root)
    pl.DataFrame({"prompt": ["a prompt held out for evaluation"]}).write_parquet(root / "e.parquet")
    for args in (["human", "--eval-prompts", "e.parquet", "--train", "t.parquet", "--holdout", "h.parquet", "--report", "h.json"],
                 ["reward", "--train", "t.parquet", "--holdout", "h.parquet", "--out", "models/reward", "--report", "r.json"]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, (args[0], result.output)


def test_reward_stage_trains_measures_and_feeds_the_judge(tmp_path, tiny_model_dir, tiny_lm, monkeypatch):
    from transformers import AutoModelForSequenceClassification

    write_pairs(tmp_path / "hh.jsonl", 24)
    run_human_and_reward(tmp_path, monkeypatch, model=tiny_model_dir,
                         human={"source": "hh.jsonl", "limit": None, "holdout_fraction": 0.25, "optional": False},
                         reward={"peft": "none", "learning_rate": 3.0e-3, "epochs": 4.0, "batch_size": 4, "dtype": "float32",
                                 "bootstrap": 200})
    report = json.loads(Path("r.json").read_text())
    assert report["train_pairs"] == 18 and report["steps"] == 4 * 5  # 4 epochs of ceil(18 / 4) batches
    assert report["final_loss"] < report["first_loss"]  # a separable preference is learnt
    assert (Path("models/reward") / "model.safetensors").is_file()
    # Held-out accuracy, recomputed here one pair at a time with no padding.
    model = AutoModelForSequenceClassification.from_pretrained("models/reward").eval()
    tokenizer = load_tokenizer("models/reward")
    holdout = pl.read_parquet("h.parquet")
    right = [plain_reward(model, reward_inputs(tokenizer, q, c)) > plain_reward(model, reward_inputs(tokenizer, q, r))
             for q, c, r in zip(holdout["prompt"], holdout["chosen"], holdout["rejected"])]
    assert report["holdout"]["accuracy"] == pytest.approx(np.mean(right)) and report["holdout"]["pairs"] == 6
    assert report["holdout"]["ci_low"] <= report["holdout"]["accuracy"] <= report["holdout"]["ci_high"]
    # Batched, padded scoring gives the same rewards as one sequence at a time.
    sequences = [reward_inputs(tokenizer, q, a) for q, a in zip(holdout["prompt"], holdout["chosen"])] + [[5, 6]]
    np.testing.assert_allclose(reward_scores(model, tokenizer.pad_token_id, sequences, batch_size=3),
                               [plain_reward(model, s) for s in sequences], rtol=1e-4, atol=1e-5)
    # The agreement step scores the labelled pairs with it (here the held-out pairs as a
    # labelled set); the judge reads the folder: verdicts from the rewards, its accuracy on
    # the labelled pairs from the agreement rows, the held-out accuracy from the card.
    lm, lm_tokenizer = tiny_lm
    summary, rows = label_agreement(lm, lm_tokenizer, holdout.with_columns(pl.lit("x").alias("pair")), TEST_PROMPTS,
                                    shipped(ScoreParams, "score", batch_size=4), "{q} {a} {b}", ["A", "B"], samples=50, seed=0,
                                    reward=reward_function("models/reward", batch_size=4))
    assert rows["reward_model_right"].to_list() == [float(r) for r in right]
    assert summary["reward_model"]["accuracy"] == pytest.approx(np.mean(right))
    ctx = context(tiny_lm, reward_model="models/reward", judges=["reward_model"])
    ctx.labelled = rows
    judged = run_judges(["reward_model"], ctx)["reward_model"]
    aligned = [plain_reward(model, reward_inputs(tokenizer, q, a)) for q, a in zip(ctx.queries, ctx.aligned)]
    base = [plain_reward(model, reward_inputs(tokenizer, q, a)) for q, a in zip(ctx.queries, ctx.base)]
    assert judged.verdicts == ["win" if a > b else "lose" if a < b else "tie" for a, b in zip(aligned, base)]
    assert judged.validity["labelled_accuracy"] == pytest.approx(np.mean(right))
    assert judged.validity["holdout_accuracy"] == report["holdout"]["accuracy"]


def test_no_human_pairs_skips_the_reward_judge_and_says_so(tmp_path, tiny_lm, monkeypatch):
    run_human_and_reward(tmp_path, monkeypatch, human={"source": "missing.jsonl", "optional": True})
    assert "skipped" in json.loads(Path("r.json").read_text())
    judged = run_judges(["reward_model"], context(tiny_lm, reward_model="models/reward", judges=["reward_model"]))["reward_model"]
    assert judged.verdicts is None and "no human-labelled pairs" in judged.metrics["reward_model"]["skipped"]


def test_micro_batches_give_the_same_model_as_whole_batches(tmp_path, tiny_model_dir, monkeypatch):
    """reward.micro_batch_size only splits each step's forward pass (the stage's memory goes
    with it): with full batches, the trained weights and losses are those of whole batches.
    Pins trl's RewardTrainer + Trainer gradient accumulation (the loss is a mean per pair)."""
    import trl
    from safetensors.torch import load_file

    # Plain SGD, no clipping: the update is proportional to the gradient, so a micro-batch
    # loss summed instead of averaged (or any other scale) changes the weights. (Adam and
    # the default norm clipping would hide a scale.)
    class SGDConfig(trl.RewardConfig):
        def __init__(self, **kwargs):
            super().__init__(**kwargs | {"optim": "sgd", "max_grad_norm": 1e9})

    monkeypatch.setattr(trl, "RewardConfig", SGDConfig)
    reports, weights = [], []
    for micro in (4, 1):
        root = tmp_path / f"micro{micro}"
        root.mkdir()
        write_pairs(root / "hh.jsonl", 16)
        run_human_and_reward(root, monkeypatch, model=tiny_model_dir,
                             human={"source": "hh.jsonl", "limit": None, "holdout_fraction": 0.25, "optional": False},
                             reward={"peft": "none", "learning_rate": 0.5, "epochs": 2.0, "batch_size": 4,
                                     "micro_batch_size": micro, "dtype": "float32", "bootstrap": 50})
        reports.append(json.loads((root / "r.json").read_text()))
        weights.append(load_file(root / "models" / "reward" / "model.safetensors"))
    assert reports[0]["steps"] == reports[1]["steps"] == 2 * 3  # 12 training pairs: 3 full batches per epoch
    assert reports[1]["final_loss"] == pytest.approx(reports[0]["final_loss"], abs=1e-5)
    for name, tensor in weights[0].items():
        torch.testing.assert_close(weights[1][name], tensor, rtol=1e-4, atol=1e-5, msg=name)
    # and the weights did move: the comparison is not between two untouched models
    assert reports[0]["final_loss"] != reports[0]["first_loss"]


def test_micro_batch_must_divide_the_batch():
    from dlma.core.errors import DlmaError
    from dlma.reward.params import RewardParams

    with pytest.raises(DlmaError, match="reward.micro_batch_size must divide reward.batch_size=8"):
        shipped(RewardParams, "reward", micro_batch_size=3)
