"""A round past rounds.count: its note, written without loading any model library."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MODEL_LIBRARIES = {"torch", "transformers", "trl", "peft", "mlflow", "datasets"}


def test_an_inactive_round_writes_its_note_without_importing_model_libraries(tmp_path):
    # Every `dvc exp run` of a one-round pipeline reruns rounds 2 and 3 (round 1's model, an input,
    # changed): importing torch, transformers, trl and mlflow for them cost 2 x 13 s an experiment.
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"round": 2, "active": False}))
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())  # rounds.count: 1
    missing = str(tmp_path / "not-needed")  # an inactive round reads none of its other inputs
    inputs = ["--previous-model", "--previous-preferences", "--prompts", "--eval-prompts", "--model-id", "--sets",
              "--agreement", "--agreement-samples", "--base-answers", "--checkpoints"]
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "stages.round", "--round", "2", "--plan", str(plan),
         *[arg for name in inputs for arg in (name, missing)], "--out", str(tmp_path / "rounds/2"),
         "--metrics", str(tmp_path / "metrics.json"), "--params", str(tmp_path / "params.yaml")],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    note = {"round": 2, "active": False, "reason": "rounds.count is 1"}
    assert json.loads((tmp_path / "metrics.json").read_text()) == note
    assert [p.name for p in (tmp_path / "rounds/2").iterdir()] == ["inactive.json"]
    assert json.loads((tmp_path / "rounds/2/inactive.json").read_text()) == note
    imported = {line.rsplit("|", 1)[1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert "dlma.rounds.params" in imported  # -X importtime did report the stage's imports
    assert not MODEL_LIBRARIES & imported, sorted(MODEL_LIBRARIES & imported)
