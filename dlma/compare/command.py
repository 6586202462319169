"""`dlma compare`: run a comparison (every method x grid point x seed as a DVC experiment)
and write its reports; group its runs under one MLflow parent run.

Without --preset it runs params.yaml's `compare` section and writes reports/compare.json
and reports/compare.md. With --preset NAME it runs `compare.presets.NAME`; a preset whose
`report` names a study (the controlled task's `controlled`, `frontier` and `margin` all say
`controlled`) writes its numbers to reports/<study>/<NAME>.json, and the study's report,
reports/<study>.md and reports/<study>.json, is rebuilt from every preset of it that has run.
"""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path

import typer

from dlma.compare.champion import ALIAS, choose_champion
from dlma.compare.params import load_compare
from dlma.compare.report import render
from dlma.compare.runner import collect, finished_runs, recorded_minutes, run_experiments
from dlma.compare.study import write_study
from dlma.compare.summary import compare_runs
from dlma.core.config import flatten, load_section
from dlma.core.io import atomic_path, write_json
from dlma.core.paths import repository_root
from dlma.core.stage import stage_entry
from dlma.model import ModelParams
from dlma.tracking import store
from dlma.tracking.params import TrackingParams
from dlma.truth.params import TruthParams

log = logging.getLogger(__name__)


@stage_entry
def main(
    preset: str = typer.Option(None, help="run compare.presets.<PRESET> instead of the compare section (e.g. controlled)"),
    params_file: Path = typer.Option(Path("params.yaml"), "--params", help="params file (its compare section)"),
    queue: bool = typer.Option(False, help="only queue the experiments (then `dvc queue start -j N`, then --collect)"),
    collect_only: bool = typer.Option(False, "--collect", help="do not run: read the finished experiments and write the reports"),
    resume: bool = typer.Option(False, help="keep the experiments already finished on this commit and run only the others "
                                "(a comparison cut short); the time reported adds the kept experiments' recorded times"),
    out_json: Path = typer.Option(None, help="output: the comparison's numbers (default: see above)"),
    out_md: Path = typer.Option(None, help="output: the comparison's report (default: see above)"),
) -> None:
    """DLMA against RLCD, RLAIF, context distillation, DPO on human labels (or, on a
    controlled objective, on true labels: oracle) and the base model, over seeds."""
    params = load_compare(params_file, preset)
    true_reward = str(params.set.get("truth.reward", load_section(TruthParams, "truth", params_file).reward))
    root = repository_root()
    study = Path("reports") / params.report if params.report else None
    out_json = out_json or (study / f"{params.name}.json" if study else Path("reports/compare.json"))
    out_md = out_md or (None if study else Path("reports/compare.md"))
    started = time.perf_counter()
    minutes, failed = None, {}
    if not collect_only:
        # --resume: the experiments it keeps count with the time they took when they ran
        # (recorded as each finished, so also when the earlier run never got to its report)
        kept = finished_runs(params, root, true_reward) if resume else []
        before = recorded_minutes(root)
        unrecorded = [name for name in kept if name not in before]
        if unrecorded:
            log.warning("compare --resume: no recorded time for %s (run by a queue, or before times were recorded): "
                        "the time reported leaves them out", ", ".join(unrecorded))
        failed = run_experiments(params, root, queue=queue, true_reward=true_reward, resume=resume)
        if queue:
            log.info("queued; run `dvc queue start -j <jobs>`, wait for `dvc queue status`, then `dlma compare --collect`")
            return
        minutes = (time.perf_counter() - started) / 60 + sum(before.get(name, 0.0) for name in kept)
    runs, left_out = collect(params, root, failed, true_reward)
    variants = [v for v in dict.fromkeys(r.method for r in runs) if v not in left_out]
    if "base" in params.methods:
        variants.append("base")
    result = compare_runs(runs, variants, params.seeds, samples=params.bootstrap, seed=params.bootstrap_seed)
    if minutes is None and out_json.is_file():  # --collect: keep the measured time of the run that made the experiments
        minutes = json.loads(out_json.read_text()).get("minutes")
    recorded = recorded_minutes(root)  # each experiment's wall time (null: run by a queue's workers)
    result |= {"left_out": left_out, "name": params.name, "set": params.set, "grid": params.grid, "minutes": minutes,
               "experiments": {r.name: f"{r.method}/seed {r.seed}" for r in runs},
               "experiment_minutes": {r.name: recorded.get(r.name) for r in runs}}
    names = {(r.method, r.seed): r.name for r in runs}
    for variant, entry in result["budget"].items():  # what each method cost, beside what it trained on
        entry["minutes"] = [recorded.get(names.get((variant, seed), "")) for seed in params.seeds]
    tracking = load_section(TrackingParams, "tracking", params_file)
    experiment_id = store.configure(tracking, root)
    result["champion"] = crown(choose_champion(result, runs), experiment_id, tracking.model_name)
    model = str(params.set.get("model.base") or load_section(ModelParams, "model", params_file).base)
    write_json(result, out_json)
    artifacts = [str(out_json)]
    if out_md is not None:
        with atomic_path(out_md) as tmp:
            tmp.write_text(render(result, name=params.name, minutes=minutes, model=model))
        artifacts.append(str(out_md))
    if study is not None:
        artifacts += [str(p) for p in write_study(study, model=model)]
    # MLflow metric names take letters, digits and _-. /: a grid variant's "beta=0.1" becomes "beta_0.1"
    headline_numbers = {re.sub(r"[^\w\-. /]", "_", k): v for k, v in flatten({"vs_base": result["vs_base"], "reward": result["reward"],
                                                  "true_reward": result["true_reward"], "kl": result["kl"]},
                                                 numbers_only=True).items()
                        if k.endswith((".all.mean", ".all.ci_low", ".all.ci_high"))}
    parent = store.group_comparison(experiment_id, params.name, headline_numbers, artifacts)
    log.info("compare: wrote %s; MLflow parent run %s", ", ".join(artifacts), parent)
    print(Path(artifacts[1] if len(artifacts) > 1 else artifacts[0]).read_text())


def crown(choice: dict, experiment_id: str, model_name: str) -> dict:
    """Set the `champion` alias on the chosen model, or say why there is none."""
    if "none_because" in choice:
        log.info("compare: no %s alias set: %s", ALIAS, choice["none_because"])
        return choice
    registered = store.set_version_alias(experiment_id, model_name, choice["pipeline_version"], ALIAS)
    if registered is None:
        return choice | {"none_because": f"the model of {choice['experiment']} is not registered in this store"}
    log.info("compare: models:/%s@%s is version %s (%s, seed %s)", model_name, ALIAS, registered, choice["method"], choice["seed"])
    return choice | {"alias": ALIAS, "model": model_name, "registered_version": int(registered)}


if __name__ == "__main__":
    typer.run(main)
