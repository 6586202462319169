"""The controlled task end to end: a preset of `dlma compare` on the sentiment objective,
every method x seed (and a grid) as real DVC experiments of a tiny project, read back into
the study report (reports/controlled.{md,json}), with equal training budgets."""

from __future__ import annotations

import json
import shutil
import sys

import pytest

from tests.dvcrepo import REPO, DvcRepo
from tests.pipeline.test_dvc import SMALL

pytestmark = pytest.mark.slow


def test_controlled_presets_measure_both_experiments_with_equal_budgets(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("controlled") / "project"
    root.mkdir()
    repo = DvcRepo(root, tiny_model_dir, SMALL)
    shutil.copy(REPO / "data" / "sentiment_prompts.jsonl", root / "data" / "sentiment_prompts.jsonl")
    params = repo.params()
    objective = dict(params["compare"]["presets"]["controlled"]["set"])
    objective |= {"data.limit": 16, "data.eval_fraction": 0.25, "generate.max_new_tokens": 6, "evaluate.limit": 4,
                  "filter.max_pairs": 5, "filter.drop_truncated": "none", "train.max_steps": -1, "truth.folds": 2,
                  "reward.peft": "none", "reward.batch_size": 2, "reward.micro_batch_size": 1, "reward.bootstrap": 20,
                  "score.batch_size": 4}
    params["train"].update({"max_steps": -1, "batch_size": 2})
    params["compare"]["presets"] = {
        "t": {"methods": ["dlma", "rlcd", "oracle", "base"], "seeds": [0, 1], "report": "controlled", "set": objective,
              "bootstrap": 50},
        "frontier": {"methods": ["dlma", "base"], "seeds": [0], "report": "controlled", "set": objective,
                     "grid": {"train.beta": [0.1, 0.5]}, "bootstrap": 50},
    }
    repo.write_params(params)
    repo.commit("controlled setup")
    result = repo.run(sys.executable, "-c", "from dlma.cli import main; main()", "compare", "--preset", "t")
    # generate, score and truth are shared by dlma and rlcd (same pairs): each ran once per seed
    assert result.stderr.count("Running stage 'truth'") == 4  # dlma x 2 seeds measured it, oracle x 2 skipped it
    raw = json.loads((root / "reports" / "controlled" / "t.json").read_text())
    assert set(raw["vs_base"]) == {"dlma", "rlcd", "oracle"} and raw["seeds"] == [0, 1]
    # Equal budgets: filter.max_pairs caps every method at the same pairs, so the same steps.
    assert raw["equal_budget"] and {tuple(b["pairs"]) for b in raw["budget"].values()} == {(5, 5)}
    assert {tuple(b["steps"]) for b in raw["budget"].values()} == {(3, 3)}
    # The true reward judge, its gain over base and the KL estimate for every method.
    assert raw["judges"]["sentiment"]["independent"]
    for method in ("dlma", "rlcd", "oracle"):
        gain = raw["true_reward"]["sentiment"][method]["gain"]["all"]
        assert gain["seeds"] == 2 and gain["prompts"] == 4 and gain["ci_low"] <= gain["mean"] <= gain["ci_high"]
        assert raw["kl"][method]["all"]["prompts"] == 4
    # Experiment 1, pooled over the seeds from the runs that measured it (dlma; rlcd shares its pairs).
    truth = raw["truth_agreement"]
    assert truth["seeds"] == [0, 1] and truth["pairs"] == 2 * 12 and truth["from_runs"] == ["dlma"]
    assert {"contrastive", "likelihood", "ab_judge", "reward_model"} <= set(truth)
    # The champion: the best method by the headline judge's measure (the true reward's gain), set
    # as the registry's alias only where its interval is above zero; the registry agrees.
    champion, gains = raw["champion"], {m: raw["true_reward"]["sentiment"][m]["gain"]["all"] for m in ("dlma", "rlcd", "oracle")}
    best = max(gains, key=lambda m: gains[m]["mean"])
    assert champion["method"] == best and champion["mean"] == gains[best]["mean"]
    assert ("none_because" in champion) == (not gains[best]["ci_low"] > 0)
    aliases = champion_alias(root)
    if "none_because" in champion:
        assert aliases == {} and "includes 0" in champion["none_because"]
    else:
        run = mlflow_client(root).get_run(mlflow_client(root).get_model_version("dlma", str(champion["registered_version"])).run_id)
        assert aliases == {"champion": str(champion["registered_version"])}
        assert run.data.tags["dlma.version"] == champion["pipeline_version"] and run.data.tags["dvc.experiment"] == champion["experiment"]
    # A second preset of the same study: the frontier joins the same report.
    repo.run(sys.executable, "-c", "from dlma.cli import main; main()", "compare", "--preset", "frontier")
    study = json.loads((root / "reports" / "controlled.json").read_text())
    assert set(study["presets"]) == {"t", "frontier"}
    frontier = [r for r in study["rows"] if r["preset"] == "frontier" and r["seed"] == "all" and r["method"] == "dlma"]
    assert sorted(r["beta"] for r in frontier) == [0.1, 0.5] and all(r["w"] == 0.2 for r in frontier)
    oracle = [r for r in study["rows"] if r["preset"] == "t" and r["method"] == "oracle" and r["seed"] == "all"]
    assert oracle[0]["w"] == 0.0 and oracle[0]["pairs"] == [5, 5]
    # Each experiment's wall time is in the numbers and the reports, and adds up to the comparison's.
    frontier_raw = json.loads((root / "reports" / "controlled" / "frontier.json").read_text())
    timed = frontier_raw["experiment_minutes"]
    assert set(timed) == {"frontier-dlma-beta0.1-s0", "frontier-dlma-beta0.5-s0"} and all(m > 0 for m in timed.values())
    assert sum(timed.values()) <= frontier_raw["minutes"]
    assert frontier_raw["budget"]["dlma beta=0.1"]["minutes"] == [timed["frontier-dlma-beta0.1-s0"]]
    assert "Wall time of each experiment" in (root / "reports" / "controlled.md").read_text()
    # A comparison cut short before its report (the report gone) goes on where it stopped: --resume
    # runs only the missing experiment, and the time reported still counts the one it kept.
    before = (root / "reports" / "controlled" / "frontier.json").read_text()
    (root / "reports" / "controlled" / "frontier.json").unlink()
    repo.run("dvc", "exp", "remove", "frontier-dlma-beta0.5-s0")
    resumed = repo.run(sys.executable, "-c", "from dlma.cli import main; main()", "compare", "--preset", "frontier", "--resume")
    assert resumed.stderr.count("Reproducing experiment") == 1 and "Reproducing experiment 'frontier-dlma-beta0.5-s0'" in resumed.stderr
    assert "1 of 2 experiments already finished" in resumed.stderr
    after = json.loads((root / "reports" / "controlled" / "frontier.json").read_text())
    assert after["true_reward"] == json.loads(before)["true_reward"]  # same params and seed: the same answers
    kept, rerun = after["experiment_minutes"]["frontier-dlma-beta0.1-s0"], after["experiment_minutes"]["frontier-dlma-beta0.5-s0"]
    assert kept == timed["frontier-dlma-beta0.1-s0"] and rerun > 0
    assert kept + rerun <= after["minutes"] < kept + rerun + 5  # this run's time (the rerun and the collection) plus the kept one's
    report = (root / "reports" / "controlled.md").read_text()
    assert "## Experiment 1" in report and "| dlma | 0.5 |" in report and "| oracle |" in report
    assert (root / "reports" / "figures" / "controlled_frontier.png").stat().st_size > 1000


def mlflow_client(root):
    import mlflow

    return mlflow.MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}", registry_uri=f"sqlite:///{root / 'mlflow.db'}")


def champion_alias(root) -> dict:
    return {k: v for k, v in mlflow_client(root).get_registered_model("dlma").aliases.items() if k == "champion"}
