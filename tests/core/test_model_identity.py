"""The identity of a model folder (what reruns the model stages): every file that defines the
model's behaviour counts, whatever its weights' format."""

from __future__ import annotations

import shutil

from dlma.model import directory_sha256


def test_every_weight_format_and_config_counts_and_nothing_else(tiny_model_dir, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    first = directory_sha256(folder)
    (folder / "notes.md").write_text("a readme is not the model")
    assert directory_sha256(folder) == first
    for name in ("pytorch_model.bin", "training_args.pt", "tokenizer.model"):  # older weight formats and vocabularies
        (folder / name).write_bytes(b"v1")
        before = directory_sha256(folder)
        (folder / name).write_bytes(b"v2")
        assert directory_sha256(folder) != before, name
    (folder / "config.json").write_text((folder / "config.json").read_text().replace("2048", "4096"))
    assert directory_sha256(folder) != first


def test_the_sets_stage_records_an_external_judge_model_by_content(tiny_model_dir, tmp_path, monkeypatch):
    """evaluate.reward_model outside the pipeline, replaced in place: data/eval_sets.json changes,
    so agreement and evaluate rerun; the reward stage's own folder is left to DVC."""
    import json

    import yaml
    from typer.testing import CliRunner

    from dlma.cli import app
    from tests.helpers import REPO

    shutil.copytree(tiny_model_dir, tmp_path / "judge")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["evaluate"].update({"agreement_sets": [], "prompt_sets": [], "reward_model": "judge"})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / ".dvc").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DVC_ROOT", raising=False)

    def recorded() -> dict:
        assert CliRunner().invoke(app, ["sets", "--out", "sets.json", "--reward-dir", "models/reward"]).exit_code == 0
        return json.loads((tmp_path / "sets.json").read_text())

    first = recorded()
    assert first["models/reward_model"]["sha256"] == directory_sha256(tmp_path / "judge") and first["models/judge_model"] == {"source": ""}
    config = tmp_path / "judge" / "config.json"
    config.write_text(config.read_text().replace("2048", "1024"))
    assert recorded()["models/reward_model"]["sha256"] != first["models/reward_model"]["sha256"]
    params["evaluate"]["reward_model"] = "models/reward"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert "sha256" not in recorded()["models/reward_model"]  # the pipeline's own: a DVC output
