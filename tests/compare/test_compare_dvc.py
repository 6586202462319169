"""`dlma compare` end to end: every method x seed as a real DVC experiment of a tiny
project, read back into reports/compare.json / .md, and grouped in MLflow."""

from __future__ import annotations

import json
import sys

import pytest

from tests.dvcrepo import DvcRepo
from tests.pipeline.test_dvc import SMALL, mlflow_runs

pytestmark = pytest.mark.slow

HH_ROWS = [("How do I bake bread?", "Mix flour, water and yeast, then bake.", "No idea, go away."),
           ("What is a verb?", "A word for an action.", "Whatever."),
           ("Hi there", "Hello! How can I help?", "What do you want."),
           ("Name a colour", "Blue.", "I refuse."),
           ("Count to three", "One, two, three.", "No."),
           ("Say thanks", "Thank you!", "Why would I.")]


def test_compare_runs_every_method_and_seed_and_reports_them(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("compare") / "project"
    root.mkdir()
    repo = DvcRepo(root, tiny_model_dir, SMALL | {"evaluate": SMALL["evaluate"] | {"judges": ["self_contrast", "refusal", "reward_model"]}})
    (root / "data" / "hh_pairs.jsonl").write_text("".join(
        json.dumps({"chosen": f"\n\nHuman: {q}\n\nAssistant: {good}", "rejected": f"\n\nHuman: {q}\n\nAssistant: {bad}"}) + "\n"
        for q, good, bad in HH_ROWS))
    params = repo.params()
    params["human"].update({"source": "data/hh_pairs.jsonl", "limit": None, "holdout_fraction": 0.34, "optional": False})
    params["reward"].update({"batch_size": 2, "dtype": "float32", "bootstrap": 50})
    params["compare"].update({"name": "t", "methods": ["dlma", "rlcd", "dpo_human", "base"], "seeds": [0, 1], "bootstrap": 100,
                              "set": {"train.max_steps": 2}})
    repo.write_params(params)
    repo.commit("comparison setup")
    result = repo.run(sys.executable, "-c", "from dlma.cli import main; main()", "compare")
    assert "# Comparison `t`" in result.stdout
    # Stages that no method or seed changes ran once; the other runs took them from DVC's run cache.
    for stage in ("reward", "agreement"):
        assert result.stderr.count(f"Running stage '{stage}'") == 1, stage
    # The base model's answers: sampled once per seed, whatever the method (dpo_human's pairs
    # come from other params, which its stage does not read).
    assert result.stderr.count("Running stage 'base_answers'") == 2
    compare = json.loads((root / "reports" / "compare.json").read_text())
    assert sorted(compare["experiments"]) == sorted(f"t-{m}-s{s}" for m in ("dlma", "rlcd", "dpo-human") for s in (0, 1))
    assert set(compare["vs_base"]) == {"dlma", "rlcd", "dpo_human"} and compare["seeds"] == [0, 1]
    assert compare["judges"]["self_contrast"]["independent"] is False and compare["judges"]["reward_model"]["independent"]
    assert compare["vs_base"]["dlma"]["self_contrast"]["net"]["all"]["seeds"] == 2
    assert set(compare["refusal"]) == {"base", "dlma", "rlcd", "dpo_human"}
    report = (root / "reports" / "compare.md").read_text()
    for method in ("dlma", "rlcd", "dpo_human"):
        assert f"| {method} |" in report
    assert "## Judges and their validity" in report and "reward_model" in report
    # The champion alias follows the headline: with no informative independent judge, none is set, and the report says why.
    if not compare["headline"]["judges"]:
        assert compare["champion"]["none_because"].startswith("no informative headline judge") and "**Champion: none**" in report
    else:
        assert "**Champion" in report and ("none_because" in compare["champion"] or compare["champion"]["alias"] == "champion")
    # Each run's model is registered with its run's name and its DVC experiment's name as aliases.
    import mlflow

    mlflow_runs(repo)  # points MLflow at the repository's store
    client = mlflow.MlflowClient()
    aliases = client.get_registered_model("dlma").aliases
    assert {f"t-{m}-s{s}" for m in ("dlma", "rlcd", "dpo-human") for s in (0, 1)} <= set(aliases)
    for name in compare["experiments"]:
        run = client.get_run(client.get_model_version("dlma", aliases[name]).run_id)
        assert run.data.tags["dvc.experiment"] == name and f"dlma-{run.data.tags['dlma.version'][:8]}" in aliases
    # Label agreement: the same measurement in every run, every labeller with its paired difference.
    shipped = compare["agreement"]["shipped"]
    assert shipped["rows"] == 4 and {"contrastive", "likelihood", "ab_judge", "reward_model"} <= set(shipped)
    assert shipped["contrastive_minus_reward_model"]["n"] == 4
    assert "| shipped | reward model (evaluate.reward_model) |" in report
    # The experiments are DVC experiments: `dvc exp show` lists them with their metrics.
    shown = repo.run("dvc", "exp", "show", "--json").stdout
    assert "t-dpo-human-s1" in shown and "win_rate" in shown
    # MLflow: one parent run of the comparison, every training run of it nested under it.
    runs = mlflow_runs(repo)
    parent = [r for r in runs if r.data.tags.get("dlma.role") == "comparison"]
    assert len(parent) == 1 and parent[0].data.tags["dlma.comparison"] == "t"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent[0].info.run_id]
    assert {r.data.tags.get("dvc.experiment") for r in children} == set(compare["experiments"])
    assert any(k.startswith("vs_base.dlma.self_contrast.net.all") for k in parent[0].data.metrics)
    # Collecting again reads the same experiments and gives the same numbers.
    repo.run(sys.executable, "-c", "from dlma.cli import main; main()", "compare", "--collect")
    again = json.loads((root / "reports" / "compare.json").read_text())
    assert again["vs_base"] == compare["vs_base"]


def many_eos_model(source, target):
    """A copy of the tiny model whose generation config lists one id in six as EOS (as Llama-3
    lists two): its answers end within a few tokens, as a real model's do, so the shipped
    filter (drop_truncated: both) has complete answers to keep."""
    import shutil

    shutil.copytree(source, target)
    config_path = target / "generation_config.json"
    config = json.loads(config_path.read_text())
    eos = config["eos_token_id"]
    config["eos_token_id"] = sorted({eos, *range(3, 384, 6)})
    config_path.write_text(json.dumps(config))
    return target


def test_compare_trains_rlaif_and_context_distillation_with_the_shipped_filter(tmp_path_factory, tiny_model_dir):
    """The baselines other tests leave out, through `dlma compare`, with the shipped filter
    default (drop_truncated: both, which other tests turn off) on a model with several EOS ids."""
    import polars as pl

    work = tmp_path_factory.mktemp("baselines")
    model = many_eos_model(tiny_model_dir, work / "model")
    small = {section: values for section, values in SMALL.items() if section != "filter"}  # the shipped filter
    root = work / "project"
    root.mkdir()
    repo = DvcRepo(root, model, small | {"generate": {"max_new_tokens": 10, "batch_size": 4},
                                         "evaluate": SMALL["evaluate"] | {"judges": ["self_contrast", "refusal"]}})
    params = repo.params()
    assert params["filter"]["drop_truncated"] == "both"
    params["compare"].update({"name": "b", "methods": ["rlaif", "context_distillation", "base"], "seeds": [0], "bootstrap": 50,
                              "set": {"filter.max_pairs": 3, "train.max_steps": -1, "train.batch_size": 1}})
    repo.write_params(params)
    repo.commit("baselines setup")
    repo.run(sys.executable, "-c", "from dlma.cli import main; main()", "compare")
    compare = json.loads((root / "reports" / "compare.json").read_text())
    assert sorted(compare["experiments"]) == ["b-context-distillation-s0", "b-rlaif-s0"] and compare["left_out"] == {}
    # Both trained on the same budget: 3 pairs, 3 steps (filter.max_pairs caps each method).
    assert {m: (b["pairs"], b["steps"]) for m, b in compare["budget"].items()} == {
        "rlaif": ([3], [3]), "context_distillation": ([3], [3])}
    assert compare["equal_budget"]
    assert set(compare["vs_base"]) == {"rlaif", "context_distillation"}
    # The filter each experiment ran: the shipped `both` rule, counted against the generated table.
    for name in compare["experiments"]:
        repo.run("dvc", "exp", "apply", name)
        generated = pl.read_parquet(root / "data" / "generated.parquet")
        both_cut = int(((generated["finish_pos"] == "length") & (generated["finish_neg"] == "length")).sum())
        report = json.loads((root / "reports" / "filter.json").read_text())
        assert report["dropped"]["both_truncated"] == both_cut, name
        assert generated.height - both_cut >= 3  # enough complete answers for the budget
        # The answers end at several of the model's EOS ids, and the scored tokens end with that very id.
        ended = generated.filter(pl.col("finish_pos") == "eos")
        assert ended["eos_pos"].n_unique() > 1
        scored = pl.read_parquet(root / "data" / "scored.parquet").filter(pl.col("finish_pos") == "eos")
        assert [t[-1] for t in scored["tokens_pos"].to_list()] == scored["eos_pos"].to_list()
