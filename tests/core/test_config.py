from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dlma.core.config import load_section
from dlma.core.errors import DlmaError
from dlma.filter.params import FilterParams
from dlma.generate.params import GenerateParams
from dlma.lm.params import PromptsParams

REPO_PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"


def write(tmp_path, data) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def shipped_raw() -> dict:
    return yaml.safe_load(REPO_PARAMS.read_text())


def test_shipped_params_load():
    prompts = load_section(PromptsParams, "prompts", REPO_PARAMS)
    assert {"harmless", "helpful"} <= set(prompts.pairs)
    assert load_section(GenerateParams, "generate", REPO_PARAMS).temperature == 1.0


def test_unknown_key_is_named(tmp_path):
    data = shipped_raw()
    data["generate"]["max_new_token"] = 5
    with pytest.raises(DlmaError, match=r"unknown key\(s\) generate.max_new_token"):
        load_section(GenerateParams, "generate", write(tmp_path, data))


def test_unknown_pair_and_style(tmp_path):
    data = shipped_raw()
    data["prompts"]["pair"] = "polite"
    with pytest.raises(DlmaError, match=r"prompts.pair 'polite' is not defined; defined pairs: \['harmless', 'helpful', 'positive'\]"):
        load_section(PromptsParams, "prompts", write(tmp_path, data))
    data = shipped_raw()
    data["prompts"]["style"] = "banner"
    with pytest.raises(DlmaError, match=r"prompts.style must be one of \['tag', 'system'\]"):
        load_section(PromptsParams, "prompts", write(tmp_path, data))


def test_user_defined_pair(tmp_path):
    data = shipped_raw()
    data["prompts"]["pairs"]["concise"] = {
        "tag_pos": "Q: {q}\nA (concise):", "tag_neg": "Q: {q}\nA (rambling):",
        "system_pos": "Be concise.", "system_neg": "Ramble.",
    }
    data["prompts"]["pair"] = "concise"
    assert load_section(PromptsParams, "prompts", write(tmp_path, data)).selected.system_neg == "Ramble."
    del data["prompts"]["pairs"]["concise"]["tag_neg"]
    with pytest.raises(DlmaError, match="missing key 'prompts.pairs.concise.tag_neg'"):
        load_section(PromptsParams, "prompts", write(tmp_path, data))


def test_wrong_type(tmp_path):
    data = shipped_raw()
    data["filter"]["min_abs_score"] = "high"
    with pytest.raises(DlmaError, match="filter.min_abs_score must be float"):
        load_section(FilterParams, "filter", write(tmp_path, data))


def test_a_float_written_by_dvc_in_exponent_form_is_a_float(tmp_path):
    """`dvc exp run -S train.learning_rate=5e-7` writes 5e-07, which PyYAML (YAML 1.1) reads as a string."""
    from dlma.train.params import TrainParams

    data = shipped_raw()
    data["train"]["learning_rate"] = yaml.safe_load("5e-07")
    assert data["train"]["learning_rate"] == "5e-07"  # the YAML pitfall itself
    assert load_section(TrainParams, "train", write(tmp_path, data)).learning_rate == 5e-07
    data["train"]["learning_rate"] = "fast"
    with pytest.raises(DlmaError, match="train.learning_rate must be float, got 'fast'"):
        load_section(TrainParams, "train", write(tmp_path, data))


SECTIONS = {"run": "dlma.core.params:RunParams", "model": "dlma.model:ModelParams", "data": "dlma.data.params:DataParams",
            "prompts": "dlma.lm.params:PromptsParams", "generate": "dlma.generate.params:GenerateParams",
            "score": "dlma.score.params:ScoreParams", "human": "dlma.data.params:HumanParams", "reward": "dlma.reward.params:RewardParams",
            "filter": "dlma.filter.params:FilterParams", "train": "dlma.train.params:TrainParams",
            "tracking": "dlma.tracking.params:TrackingParams", "evaluate": "dlma.evaluate.params:EvaluateParams",
            "truth": "dlma.truth.params:TruthParams"}


def readme_exp_run_lines() -> list[list[str]]:
    """Every `dvc exp run` command of the README, as the shell would split it."""
    import re
    import shlex

    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for command in block.replace("\\\n", " ").splitlines():
            if command.strip().startswith("dvc exp run"):
                commands.append(shlex.split(command))
    return commands


def test_every_dvc_exp_run_line_of_the_readme_gives_valid_params(tmp_path):
    """Each -S of each README line applied as DVC applies it (the value parsed as YAML), then
    every section loaded and checked, as the stages will."""
    import importlib

    commands = readme_exp_run_lines()
    assert len(commands) >= 4
    for command in commands:
        data = shipped_raw()
        for flag, assignment in zip(command, command[1:]):
            if flag != "-S":
                continue
            key, _, value = assignment.partition("=")
            section, name = key.split(".", 1)
            assert section in data and name in data[section], f"README: unknown param {key} in {' '.join(command)[:80]}"
            data[section][name] = yaml.safe_load(value)
        path = write(tmp_path, data)
        for section, target in SECTIONS.items():
            module, cls = target.split(":")
            load_section(getattr(importlib.import_module(module), cls), section, path)


def test_the_readme_sentiment_line_is_the_controlled_presets_objective():
    """The README's one line for the controlled task sets exactly what the presets' runs set."""
    from dlma.compare.params import load_compare

    (command,) = [c for c in readme_exp_run_lines() if "-n" in c and c[c.index("-n") + 1] == "sentiment"]
    values = {}
    for flag, assignment in zip(command, command[1:]):
        if flag == "-S":
            key, _, value = assignment.partition("=")
            values[key] = yaml.safe_load(value)
    assert values == load_compare(REPO_PARAMS, "controlled").set


def test_a_full_disk_is_one_line_and_exit_code_2(capsys):
    """Wherever in a stage the disk fills (an OSError ENOSPC, or SQLite's error wrapped by
    SQLAlchemy and MLflow), the stage says so in one line: no traceback."""
    import errno
    import sqlite3

    import pytest
    import typer

    from dlma.core.stage import stage_entry

    def from_sqlite():
        try:
            raise sqlite3.OperationalError("database or disk is full")
        except sqlite3.OperationalError as exc:
            raise RuntimeError("(sqlalchemy) something wrapped it") from exc

    for failing in (from_sqlite, lambda: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device"))):
        with pytest.raises(typer.Exit) as stopped:
            stage_entry(failing)()
        assert stopped.value.exit_code == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert err.startswith("error: the disk is full (") and "free space" in err
    with pytest.raises(ValueError):  # anything else is not swallowed
        stage_entry(lambda: int("x"))()
