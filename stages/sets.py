"""Stage `sets`: locate every evaluation set named in params and record its content hash (and
those of the judge models named in `evaluate.reward_model` / `judge_model`).

    python -m stages.sets --out data/eval_sets.json --reward-dir models/reward

`evaluate` depends on that file, so editing a set (even one outside the repository)
reruns the evaluation. Always run (cheap), like the `model` stage: downstream reruns only
when an identity changed. A missing set is an error unless marked `optional: true`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from dlma.core.config import read_params_file
from dlma.core.io import write_json
from dlma.core.stage import stage_entry
from dlma.data.sets import EvalSets, identity
from dlma.model import judge_model_identity

log = logging.getLogger(__name__)


@stage_entry
def main(
    out: Path = typer.Option(..., help="output: identity of each evaluation set (JSON)"),
    reward_dir: Path = typer.Option(..., help="the reward stage's model folder (a DVC output: not hashed here)"),
    params_file: Path = typer.Option(Path("params.yaml"), "--params", help="params file"),
) -> None:
    """Locate the evaluation sets and record their content hashes."""
    found = identity(EvalSets.load(params_file))
    # The judge models evaluate and agreement load from outside the pipeline: an external
    # folder edited in place must rerun them, as an edited set does.
    section = read_params_file(params_file).get("evaluate") or {}
    for key in ("reward_model", "judge_model"):
        found[f"models/{key}"] = judge_model_identity(str(section.get(key) or ""), reward_dir)
    write_json(found, out)
    log.info("evaluation sets and judge models: %s", {name: entry.get("skipped", "ok") for name, entry in found.items()})


if __name__ == "__main__":
    typer.run(main)
