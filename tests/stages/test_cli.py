"""Stage entry points through the `dlma` CLI: clear errors, exit code 2, no partial outputs."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import polars as pl
import pytest
import yaml
from typer.testing import CliRunner

from dlma.cli import app
from dlma.core.io import write_parquet

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


@pytest.fixture
def project(tmp_path, tiny_model_dir, monkeypatch):
    """A working directory with params pointing at the tiny model and a small prompt set."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["model"]["base"] = str(tiny_model_dir)
    params["data"]["source"] = str(REPO / "data" / "prompts.jsonl")
    params["data"]["limit"] = 6
    params["generate"]["max_new_tokens"] = 4
    params["filter"]["drop_truncated"] = "none"  # a tiny random model rarely ends an answer in 4 tokens
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def edit_params(path: Path, section: str, key: str, value) -> None:
    params = yaml.safe_load(path.read_text())
    params[section][key] = value
    path.write_text(yaml.safe_dump(params))


def run(*args):
    return runner.invoke(app, list(args))


def test_every_stage_of_dvc_yaml_is_a_command_with_its_help():
    """Each DVC stage is a `dlma` command of the same name (plus compare, export and rounds-study), and each
    command's --help runs and documents every option dvc.yaml passes it."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    commands = {c.name for c in app.registered_commands}
    assert commands == set(stages) | {"compare", "export", "rounds-study"}
    for name, stage in stages.items():
        result = run(name, "--help")
        assert result.exit_code == 0, result.output
        for option in re.findall(r"(--[a-z][a-z-]*)", (stage.get("do") or stage)["cmd"]):  # foreach stages: under `do`
            assert option in result.output, (name, option)


def test_stages_run_and_chain(project):
    assert run("model", "--out", "model.json").exit_code == 0
    assert run("prepare", "--train", "tr.parquet", "--eval", "ev.parquet", "--report", "prep.json").exit_code == 0
    result = run("generate", "--prompts", "tr.parquet", "--model-id", "model.json", "--out", "gen.parquet", "--report", "gen.json")
    assert result.exit_code == 0, result.output
    generated = pl.read_parquet("gen.parquet")
    assert generated.height == 5  # 6 prompts, 20% (1) held out
    assert set(generated["finish_pos"]) <= {"eos", "length"}
    assert {"id", "prompt", "response_pos", "response_neg", "finish_pos", "finish_neg"} <= set(generated.columns)


def test_missing_model_path(project):
    edit_params(project / "params.yaml", "model", "base", str(project / "no-such-model"))
    result = run("model", "--out", "model.json")
    assert result.exit_code == 2
    assert "no-such-model' does not exist" in result.output
    assert not (project / "model.json").exists()


def test_unknown_prompt_pair_writes_nothing(project):
    assert run("model", "--out", "model.json").exit_code == 0
    write_parquet(pl.DataFrame({"id": ["a"], "prompt": ["hi"], "category": [""]}), project / "tr.parquet")
    edit_params(project / "params.yaml", "prompts", "pair", "nonexistent")
    result = run("generate", "--prompts", "tr.parquet", "--model-id", "model.json", "--out", "gen.parquet", "--report", "gen.json")
    assert result.exit_code == 2
    assert "prompts.pair 'nonexistent' is not defined" in result.output
    assert not (project / "gen.parquet").exists()


def test_malformed_source_line(project):
    (project / "bad.jsonl").write_text('{"prompt": "a"}\n{oops}\n')
    edit_params(project / "params.yaml", "data", "source", "bad.jsonl")
    result = run("prepare", "--train", "tr.parquet", "--eval", "ev.parquet", "--report", "prep.json")
    assert result.exit_code == 2 and "bad.jsonl, line 2: not valid JSON" in result.output
    assert not list(project.glob("*.parquet"))


def test_score_rejects_wrong_columns(project):
    assert run("model", "--out", "model.json").exit_code == 0
    write_parquet(pl.DataFrame({"id": ["a"], "prompt": ["hi"], "answer": ["x"]}), project / "gen.parquet")
    result = run("score", "--generated", "gen.parquet", "--model-id", "model.json", "--out", "sc.parquet", "--report", "s.json")
    assert result.exit_code == 2 and "lacks column(s) ['response_pos', 'response_neg']" in result.output
    assert not (project / "sc.parquet").exists()


def test_changed_model_is_detected(project, tiny_model_dir):
    copy = shutil.copytree(tiny_model_dir, project / "model-copy")
    edit_params(project / "params.yaml", "model", "base", str(copy))
    assert run("model", "--out", "model.json").exit_code == 0
    (copy / "generation_config.json").write_text((copy / "generation_config.json").read_text().replace("}", ', "do_sample": false}'))
    write_parquet(pl.DataFrame({"id": ["a"], "prompt": ["hi"], "category": [""]}), project / "tr.parquet")
    result = run("generate", "--prompts", "tr.parquet", "--model-id", "model.json", "--out", "gen.parquet", "--report", "gen.json")
    assert result.exit_code == 2 and "changed since 'model.json' was written" in result.output


def test_atomic_write_leaves_nothing_on_crash(tmp_path):
    class Boom(pl.DataFrame):
        def write_parquet(self, file, **kwargs):
            Path(file).write_bytes(b"PAR1 half")
            raise RuntimeError("disk full")

    target = tmp_path / "out.parquet"
    with pytest.raises(RuntimeError):
        write_parquet(Boom({"a": [1]}), target)
    assert not target.exists() and not list(tmp_path.iterdir())
