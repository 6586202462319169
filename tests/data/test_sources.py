"""Data sources by identity: a local file by its hash, a `datasets` hub id by the fingerprint of
its copy (here a real entry of the local datasets cache, as a load on a connected machine
leaves it: the hub is unreachable from these machines), through the shipped dvc.yaml."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dlma.cli import app
from dlma.core.errors import DlmaError
from dlma.data.identity import source_identity
from dlma.data.loaders import load_records
from tests.dvcrepo import DvcRepo

PROMPTS = [{"id": f"h{i}", "prompt": f"Describe a {thing} in two sentences."}
           for i, thing in enumerate(["sunrise", "market", "train ride", "library", "garden", "storm", "bakery", "harbour"])]


def cache_hub_dataset(cache: Path, repo_id: str, rows: list[dict], work: Path) -> None:
    """Put `rows` into the datasets cache at `cache` as hub data set `repo_id` (split train), in the
    layout `datasets.load_dataset(repo_id)` leaves after a download: offline, it loads from there."""
    import datasets

    source = work / f"{repo_id.replace('/', '_')}.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    staging = work / f"staging-{len(rows)}"
    datasets.load_dataset("json", data_files=str(source), split="train", cache_dir=str(staging))
    (built,) = [p for p in staging.glob("json/*/0.0.0/*") if p.is_dir()]
    owner, name = repo_id.split("/")
    target = cache / f"{owner}___{name}" / "default" / "0.0.0" / built.name
    shutil.rmtree(cache / f"{owner}___{name}", ignore_errors=True)
    shutil.copytree(built, target)
    (target / "json-train.arrow").rename(target / f"{name}-train.arrow")


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """Offline, with an empty datasets cache of the test's own: the variables for new
    processes, and the values datasets and huggingface_hub read at import for this one."""
    import datasets.config
    import huggingface_hub.constants

    cache = tmp_path / "datasets-cache"
    for name, value in (("HF_DATASETS_CACHE", str(cache)), ("HF_HUB_OFFLINE", "1"), ("HF_DATASETS_OFFLINE", "1")):
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return cache


def test_a_cached_hub_data_set_is_named_by_its_content(offline_hub, tmp_path):
    cache_hub_dataset(offline_hub, "dlma/prompts", PROMPTS, tmp_path)
    first = source_identity("dlma/prompts", key="data.source")
    assert first["kind"] == "hub" and first["rows"] == 8 and first["revision"] is None and len(first["sha256"]) == 64
    assert source_identity("dlma/prompts", key="data.source") == first  # stable: nothing reruns
    frame, report = load_records("dlma/prompts")
    assert frame["prompt"].to_list() == [r["prompt"] for r in PROMPTS] and report.source == "dlma/prompts[train]"
    cache_hub_dataset(offline_hub, "dlma/prompts", PROMPTS[:6], tmp_path)
    changed = source_identity("dlma/prompts", key="data.source")
    assert changed["rows"] == 6 and changed["sha256"] != first["sha256"]


def test_a_hub_id_neither_reachable_nor_cached_is_one_clear_line(offline_hub, tmp_path, monkeypatch):
    with pytest.raises(DlmaError) as error:
        source_identity("nobody/no-such-set", key="data.source")
    message = str(error.value)
    assert "\n" not in message and message.startswith("data.source 'nobody/no-such-set' split 'train': not reachable")
    assert "HF_HUB_OFFLINE is set" in message and "local JSONL / CSV / Parquet file" in message
    # The same through the CLI: exit code 2, the line, no traceback.
    (tmp_path / "params.yaml").write_text((Path(__file__).resolve().parents[2] / "params.yaml").read_text()
                                          .replace("source: data/prompts.jsonl", "source: nobody/no-such-set"))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["sources", "--out", "sources.json"])
    assert result.exit_code == 2 and "data.source 'nobody/no-such-set'" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "sources.json").exists()


def test_files_are_named_by_content_and_optional_ones_may_be_missing(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps(PROMPTS[0]) + "\n")
    first = source_identity(str(path), key="data.source")
    path.write_text(json.dumps(PROMPTS[1]) + "\n")
    assert first["kind"] == "file" and source_identity(str(path), key="data.source")["sha256"] != first["sha256"]
    assert source_identity(str(tmp_path / "none.jsonl"), key="human.source", optional=True)["skipped"] == "file not found"
    with pytest.raises(DlmaError, match="human.source: file .* does not exist"):
        source_identity(str(tmp_path / "none.jsonl"), key="human.source")
    assert source_identity("", key="human.source") == {"source": "", "skipped": "human.source is empty"}


def test_the_shipped_dvc_yaml_takes_a_hub_id_as_data_source(tmp_path_factory, tiny_model_dir):
    """`dvc exp run -S data.source=<hub id>` with the shipped dvc.yaml: prepare reads the cached
    data set; a second repro reruns nothing after `sources`; a changed copy reruns prepare."""
    work = tmp_path_factory.mktemp("hub")
    cache = work / "datasets-cache"
    cache_hub_dataset(cache, "dlma/prompts", PROMPTS, work)
    repo = DvcRepo(work / "project", tiny_model_dir, {"data": {"source": "dlma/prompts", "limit": None, "eval_fraction": 0.25}})
    repo.env |= {"HF_DATASETS_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    ran = repo.repro("prepare")
    assert set(ran) == {"sources", "prepare"}
    identity = json.loads((repo.root / "data/sources.json").read_text())["data"]
    assert identity["kind"] == "hub" and identity["rows"] == 8
    report = json.loads((repo.root / "reports/prepare.json").read_text())
    assert report["train_prompts"] + report["eval_prompts"] == 8 and report["source"] == "dlma/prompts"
    assert repo.repro("prepare") == ["sources"]  # re-checked, unchanged: prepare does not rerun
    cache_hub_dataset(cache, "dlma/prompts", PROMPTS[:4], work)
    assert "prepare" in repo.repro("prepare")
    assert json.loads((repo.root / "reports/prepare.json").read_text())["train_prompts"] == 3
    # Offline, a hub id nobody cached stops the `sources` stage with the one line, before any model stage.
    repo.set_param("data", "source", "nobody/no-such-set")
    failed = repo.run("dvc", "repro", "prepare", check=False)
    assert failed.returncode != 0 and "error: data.source 'nobody/no-such-set' split 'train': not reachable" in failed.stderr


def test_a_hub_evaluation_set_is_named_by_its_content(offline_hub, tmp_path):
    """An evaluation set given as a hub id is named as data.source is (content hash of the
    cached copy, rows): a copy replaced in place changes the `sets` stage's output, so the
    stages that judge with it rerun."""
    from dlma.data.params import AgreementSet
    from dlma.data.sets import EvalSets, identity

    pairs = [{"id": f"p{i}", "prompt": r["prompt"], "chosen": "Sure, gladly.", "rejected": "No."} for i, r in enumerate(PROMPTS)]
    cache_hub_dataset(offline_hub, "dlma/pairs", pairs, tmp_path)
    spec = AgreementSet(name="hubset", source="dlma/pairs", format="auto", columns={}, pku_label="safer", pair="", optional=False)
    first = identity(EvalSets(agreement_sets=[spec], prompt_sets=[]))["agreement/hubset"]
    assert first["rows"] == 8 and len(first["sha256"]) == 64 and first["split"] == "train" and "hub" not in first
    cache_hub_dataset(offline_hub, "dlma/pairs", pairs[:5], tmp_path)
    changed = identity(EvalSets(agreement_sets=[spec], prompt_sets=[]))["agreement/hubset"]
    assert changed["rows"] == 5 and changed["sha256"] != first["sha256"]
    with pytest.raises(DlmaError, match="evaluation set 'gone' 'nobody/none' split 'train': not reachable"):
        identity(EvalSets(agreement_sets=[spec.__class__(**{**spec.__dict__, "name": "gone", "source": "nobody/none"})], prompt_sets=[]))
