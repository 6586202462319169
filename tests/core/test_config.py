from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dlma.core.config import load_section
from dlma.core.errors import DlmaError
from dlma.filter.params import FilterParams
from dlma.generate.params import GenerateParams
from dlma.lm.prompts import PromptsParams

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
