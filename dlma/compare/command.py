"""`dlma compare`: run the comparison (every method x seed as a DVC experiment) and write
reports/compare.json and reports/compare.md; group its runs under one MLflow parent run."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import typer

from dlma.compare.params import CompareParams
from dlma.compare.report import render
from dlma.compare.runner import collect, run_experiments
from dlma.compare.summary import compare_runs
from dlma.core.config import flatten, load_section
from dlma.core.io import atomic_path, write_json
from dlma.core.paths import repository_root
from dlma.core.stage import stage_entry
from dlma.model import ModelParams
from dlma.tracking import store
from dlma.tracking.params import TrackingParams

log = logging.getLogger(__name__)


@stage_entry
def main(
    params_file: Path = typer.Option(Path("params.yaml"), "--params", help="params file (its compare section)"),
    queue: bool = typer.Option(False, help="only queue the experiments (then `dvc queue start -j N`, then --collect)"),
    collect_only: bool = typer.Option(False, "--collect", help="do not run: read the finished experiments and write the reports"),
    out_json: Path = typer.Option(Path("reports/compare.json"), help="output: the comparison's numbers"),
    out_md: Path = typer.Option(Path("reports/compare.md"), help="output: the comparison's report"),
) -> None:
    """DLMA against RLCD, RLAIF, context distillation, DPO on human labels and the base
    model: every method with every seed of params.yaml's compare section."""
    params = load_section(CompareParams, "compare", params_file)
    root = repository_root()
    started = time.perf_counter()
    minutes, failed = None, {}
    if not collect_only:
        failed = run_experiments(params, root, queue=queue)
        if queue:
            log.info("queued; run `dvc queue start -j <jobs>`, wait for `dvc queue status`, then `dlma compare --collect`")
            return
        minutes = (time.perf_counter() - started) / 60
    runs, left_out = collect(params, root, failed)
    methods = [m for m in params.methods if m not in left_out]
    result = compare_runs(runs, methods, params.seeds, samples=params.bootstrap)
    result |= {"left_out": left_out, "name": params.name, "set": params.set, "minutes": minutes, "experiments": {r.name: f"{r.method}/seed {r.seed}" for r in runs}}
    model = str(params.set.get("model.base") or load_section(ModelParams, "model", params_file).base)
    write_json(result, out_json)
    with atomic_path(out_md) as tmp:
        tmp.write_text(render(result, name=params.name, minutes=minutes, model=model))
    tracking = load_section(TrackingParams, "tracking", params_file)
    experiment_id = store.configure(tracking, root)
    headline_numbers = {k: v for k, v in flatten({"vs_base": result["vs_base"], "reward": result["reward"]}, numbers_only=True).items()
                        if k.endswith((".all.mean", ".all.ci_low", ".all.ci_high"))}
    parent = store.group_comparison(experiment_id, params.name, headline_numbers, [str(out_json), str(out_md)])
    log.info("compare: wrote %s and %s; MLflow parent run %s", out_json, out_md, parent)
    print(out_md.read_text())


if __name__ == "__main__":
    typer.run(main)
