"""`dlma export` and serving, on a model the real train stage wrote and registered (tiny
model, real MLflow store): the exported folder loads in a Python without dlma or peft and
answers as the pipeline's model does; `mlflow models serve` answers over HTTP on 127.0.0.1."""

from __future__ import annotations

import copy
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

from dlma.cli import app
from dlma.export.template import export_chat_template
from dlma.lm.prompts import user_turn_ids
from dlma.model import load_aligned, load_causal_lm, load_tokenizer
from tests.train.test_train import preference_frame

REPO = Path(__file__).resolve().parents[2]
PROMPTS = ["How do I make coffee?", "Tell me about the fox.", "Explain photosynthesis.", "Hi"]
NEW_TOKENS = 12

# Run in an interpreter that cannot import dlma: started without `site` (so no .pth file, and
# no editable install of dlma), with the environment's site-packages on its path.
STANDALONE = r'''
import importlib.util, json, sys
sys.path.append(sys.argv[4])
assert importlib.util.find_spec("dlma") is None, "dlma is importable here"
from transformers import AutoModelForCausalLM, AutoTokenizer
folder, prompts, new_tokens = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
tokenizer = AutoTokenizer.from_pretrained(folder)
model = AutoModelForCausalLM.from_pretrained(folder).eval()
answers = []
for prompt in prompts:
    inputs = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)
    output = model.generate(**inputs, do_sample=False, max_new_tokens=new_tokens)
    answers.append({"prompt_ids": inputs["input_ids"][0].tolist(), "answer_ids": output[0, inputs["input_ids"].shape[1]:].tolist()})
sampled = model.generate(**inputs)  # with the exported generation config: samples, as the pipeline did
assert not [m for m in sys.modules if m.split(".")[0] in ("dlma", "peft")]  # peft: a plain model, no adapter
print(json.dumps({"answers": answers, "sampled_tokens": int(sampled.shape[1] - inputs["input_ids"].shape[1])}))
'''


def standalone_answers(folder: Path, cwd: Path) -> dict:
    import sysconfig

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    result = subprocess.run([sys.executable, "-S", "-c", STANDALONE, str(folder), json.dumps(PROMPTS), str(NEW_TOKENS),
                             sysconfig.get_paths()["purelib"]],
                            cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def pipeline_greedy(model, tokenizer, card) -> list[dict]:
    """The pipeline's aligned model (adapter on its base), prompted as the pipeline prompts it."""
    answers = []
    for prompt in PROMPTS:
        ids = user_turn_ids(tokenizer, card["bare"], card["bare_tag"], prompt)
        with torch.no_grad():
            output = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                    do_sample=False, max_new_tokens=NEW_TOKENS, pad_token_id=tokenizer.pad_token_id)
        answers.append({"prompt_ids": ids, "answer_ids": output[0, len(ids):].tolist()})
    return answers


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir):
    """A project whose train stage ran: models/dlma and a registered version in its store."""
    project = tmp_path_factory.mktemp("export-project")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["model"]["base"] = str(tiny_model_dir)
    params["train"].update({"max_steps": 4, "save_steps": 2, "batch_size": 2, "learning_rate": 1e-2})
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    (project / "dvc.yaml").write_text((REPO / "dvc.yaml").read_text())  # `dlma export` reads the model folder's path there
    (project / ".dvc").mkdir()  # marks the repository root for the MLflow store
    base = load_causal_lm(tiny_model_dir, dtype=torch.float32, device=torch.device("cpu"), attn_implementation="eager")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(project)
        for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "DVC_ROOT"):
            patch.delenv(name, raising=False)
        runner = CliRunner()
        assert runner.invoke(app, ["model", "--out", "model.json"]).exit_code == 0
        preference_frame(base, load_tokenizer(tiny_model_dir)).write_parquet(project / "prefs.parquet")
        result = runner.invoke(app, ["train", "--preferences", "prefs.parquet", "--model-id", "model.json", "--out", "models/dlma", "--checkpoints", "models/checkpoints",
                                     "--report", "reports/train.json", "--curve", "reports/plots/train.csv"])
        assert result.exit_code == 0, result.output
    return project


def export(project: Path, *args: str):
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(project)
        for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "DVC_ROOT"):
            patch.delenv(name, raising=False)
        return CliRunner().invoke(app, ["export", *args])


def test_the_exported_template_renders_the_training_prompt(tiny_model_dir, default_tokenizer):
    tag = "USER: {q}\nASSISTANT:\n"
    for tokenizer in (load_tokenizer(tiny_model_dir), default_tokenizer):
        for bare in ("auto", "tag"):
            exported = copy.deepcopy(tokenizer)
            exported.chat_template = export_chat_template(tokenizer, bare, tag)
            for prompt in ("How do I make coffee?", "Write a short, warm review of a small cafe."):
                rendered = exported.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                                        tokenize=True, return_dict=True)["input_ids"]
                assert list(rendered) == user_turn_ids(tokenizer, bare, tag, prompt), (bare, prompt)
            if bare == "auto":  # a caller's own system message is kept, not replaced by the empty one
                text = exported.apply_chat_template([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
                                                    add_generation_prompt=True, tokenize=False)
                assert text.count("system") == 1 and "Be brief." in text
    # SmolLM2's template writes its default system prompt when there is none: the export writes the empty one
    exported = copy.deepcopy(default_tokenizer)
    exported.chat_template = export_chat_template(default_tokenizer, "auto", tag)
    text = exported.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True, tokenize=False)
    assert "SmolLM" not in text and text.startswith("<|im_start|>system\n<|im_end|>")


def test_an_export_loads_without_dlma_and_answers_as_the_pipeline_model(trained, tiny_model_dir, tmp_path):
    result = export(trained, "--out", str(tmp_path / "exported"))
    assert result.exit_code == 0, result.output
    folder = tmp_path / "exported"
    assert (folder / "model.safetensors").is_file() and not list(folder.glob("adapter_*")) and not list(folder.glob("*.bin"))
    aligned, tokenizer, card = load_aligned(trained / "models/dlma")
    expected = pipeline_greedy(aligned, tokenizer, card)
    got = standalone_answers(folder, tmp_path)
    assert got["answers"] == expected
    # ... and the adapter mattered: the base model answers otherwise on some prompt.
    base = load_causal_lm(tiny_model_dir, dtype=torch.float32, device=torch.device("cpu"))
    assert pipeline_greedy(base, tokenizer, card) != expected
    # The generation config samples with the pipeline's params, up to its max_new_tokens.
    generation = json.loads((folder / "generation_config.json").read_text())
    assert generation["do_sample"] is True and generation["max_new_tokens"] == card["generate"]["max_new_tokens"]
    assert generation["top_k"] == card["generate"]["top_k"] and 0 < got["sampled_tokens"] <= card["generate"]["max_new_tokens"]
    # The card says what it is: version, method, data digest, the evaluation's absence.
    record = json.loads((folder / "dlma_export.json").read_text())
    readme = (folder / "README.md").read_text()
    assert record["pipeline_version"] == card["version"] and record["merged"] is True
    assert record["method"].startswith("DLMA") and record["training_data"]["pairs"] == 6
    assert record["registered"]["version"] == 1 and record["registered"]["aliases"] == [f"dlma-{card['version'][:8]}"]
    assert card["preferences_sha256"] in readme and "No evaluation of this model was logged" in readme


def test_the_merged_model_is_the_adapter_model_up_to_rounding(trained, tiny_model_dir):
    """What evaluate samples from (load_aligned(merged=True)): no adapter left, the same
    logits as the base model with its adapter, and not the base model's."""
    adapter, tokenizer, _ = load_aligned(trained / "models/dlma")
    merged, _, _ = load_aligned(trained / "models/dlma", merged=True)
    base = load_causal_lm(tiny_model_dir, dtype=torch.float32, device=torch.device("cpu"))
    assert not any("lora" in name for name, _ in merged.named_parameters())
    ids = torch.tensor([tokenizer("Tell me about the sea, please.")["input_ids"]])
    with torch.no_grad():
        expected, got, plain = (m(input_ids=ids).logits for m in (adapter, merged, base))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert (plain - expected).abs().max() > 1e-3
    with pytest.raises(ValueError, match="no adapter to train"):
        load_aligned(trained / "models/dlma", merged=True, trainable=True)


def test_export_by_alias_and_version_take_the_registered_model(trained, tmp_path):
    card = json.loads((trained / "models/dlma/dlma_model.json").read_text())
    exported = {}
    for args in (["--from", "models/dlma"], ["--version", "1"], ["--alias", "latest"], ["--alias", f"dlma-{card['version'][:8]}"]):
        out = tmp_path / args[1].replace("/", "-")
        result = export(trained, *args, "--out", str(out))
        assert result.exit_code == 0, result.output
        exported[args[1]] = load_file(out / "model.safetensors")
        assert json.loads((out / "dlma_export.json").read_text())["registered"]["version"] == 1
    reference = exported.pop("models/dlma")  # the workspace's folder, merged
    for weights in exported.values():
        assert weights.keys() == reference.keys() and all(torch.equal(weights[k], reference[k]) for k in reference)


def test_export_errors_are_one_line(trained, tmp_path):
    result = export(trained, "--alias", "nosuch", "--out", str(tmp_path / "x"))
    assert result.exit_code == 2 and "models:/dlma@nosuch is not in the registry" in result.output and "dlma-" in result.output
    assert not (tmp_path / "x").exists()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    result = export(trained, "--out", str(tmp_path / "full"))
    assert result.exit_code == 2 and "pass --overwrite" in result.output and (tmp_path / "full" / "keep.txt").is_file()
    result = export(trained, "--version", "1", "--alias", "latest", "--out", str(tmp_path / "y"))
    assert result.exit_code == 2 and "one of --from, --version and --alias" in result.output


def test_a_full_fine_tune_exports_as_it_is(tiny_model_dir, tmp_path):
    """A folder with full weights (train.peft none): exported weights equal the trained ones."""
    from dlma.model import resolve_model

    folder = tmp_path / "models" / "dlma"
    model = load_causal_lm(tiny_model_dir, dtype=torch.float32, device=torch.device("cpu"))
    with torch.no_grad():
        model.model.layers[0].mlp.down_proj.weight.add_(0.5)  # stands in for training
    model.save_pretrained(folder, safe_serialization=True)
    load_tokenizer(tiny_model_dir).save_pretrained(folder)
    generate = yaml.safe_load((REPO / "params.yaml").read_text())["generate"]
    (folder / "dlma_model.json").write_text(json.dumps({
        "base": str(tiny_model_dir), "base_sha256": resolve_model(str(tiny_model_dir)).sha256, "peft": "none", "bare": "auto",
        "bare_tag": "USER: {q}\nASSISTANT:\n", "version": "0123456789abcdef", "generate": generate}))
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    (tmp_path / "dvc.yaml").write_text((REPO / "dvc.yaml").read_text())
    (tmp_path / ".dvc").mkdir()
    result = export(tmp_path, "--from", str(folder), "--out", str(tmp_path / "exported"))
    assert result.exit_code == 0, result.output
    saved, trained_weights = load_file(tmp_path / "exported/model.safetensors"), load_file(folder / "model.safetensors")
    assert saved.keys() == trained_weights.keys() and all(torch.equal(saved[k], trained_weights[k]) for k in saved)
    assert json.loads((tmp_path / "exported/dlma_export.json").read_text())["merged"] is False


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_mlflow_serves_the_registered_model_by_alias_over_http(trained):
    """`mlflow models serve -m models:/dlma@<alias> --env-manager local` on 127.0.0.1 answers a
    real request with the registered model's answer (the pyfunc loaded here, same params)."""
    import mlflow

    card = json.loads((trained / "models/dlma/dlma_model.json").read_text())
    uri = f"models:/dlma@dlma-{card['version'][:8]}"
    store = f"sqlite:///{trained / 'mlflow.db'}"
    port = free_port()
    env = dict(os.environ, MLFLOW_TRACKING_URI=store, MLFLOW_REGISTRY_URI=store)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    server = subprocess.Popen(["mlflow", "models", "serve", "-m", uri, "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
                              cwd=trained, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.time() + 240
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert server.poll() is None, server.stdout.read()[-3000:]
            assert time.time() < deadline, "the server did not answer /ping within 240 s"
            time.sleep(1)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations", method="POST", headers={"Content-Type": "application/json"},
            data=json.dumps({"inputs": PROMPTS[:2], "params": {"max_new_tokens": 6, "seed": 3}}).encode())
        with urllib.request.urlopen(request, timeout=120) as response:
            served = json.loads(response.read())["predictions"]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
    mlflow.set_tracking_uri(store)
    mlflow.set_registry_uri(store)
    local = mlflow.pyfunc.load_model(uri).predict(PROMPTS[:2], params={"max_new_tokens": 6, "seed": 3})
    assert served == local and len(served) == 2 and all(isinstance(a, str) for a in served)


VLLM_SERVE = r'''
import json, sys
from vllm import LLM, SamplingParams
folder, prompts, new_tokens = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
llm = LLM(model=folder, dtype="float32", enforce_eager=True, gpu_memory_utilization=0.1, seed=0)
outputs = llm.chat([[{"role": "user", "content": p}] for p in prompts], SamplingParams(temperature=0.0, max_tokens=new_tokens))
print("RESULT " + json.dumps([{"prompt_ids": list(o.prompt_token_ids), "answer_ids": list(o.outputs[0].token_ids)} for o in outputs]))
'''


@pytest.mark.skipif(not os.environ.get("DLMA_VLLM_PYTHON"), reason="needs a vLLM environment (DLMA_VLLM_PYTHON)")
def test_vllm_serves_an_exported_folder_with_its_chat_template(tmp_path):
    """The exported folder in vLLM (its own environment, no dlma): `LLM.chat` renders the
    training prompt from the exported template and answers greedily as transformers does.
    The default model: vLLM's CPU attention has no kernel for the tiny model's heads."""
    from peft import LoraConfig, get_peft_model

    from dlma.export.merge import write_export
    from dlma.export.source import ExportSource
    from dlma.model import ModelParams, resolve_model
    from tests.helpers import shipped

    base = resolve_model(shipped(ModelParams, "model").base)
    model = load_causal_lm(base.path, dtype=torch.float32, device=torch.device("cpu"))
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():  # stands in for training: a non-zero update
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0.0, 0.02)
    folder = tmp_path / "aligned"
    model.save_pretrained(folder, safe_serialization=True)
    load_tokenizer(base.path).save_pretrained(folder)
    card = {"base": base.base, "base_sha256": base.sha256, "peft": "lora", "bare": "auto", "bare_tag": "USER: {q}\nASSISTANT:\n",
            "version": "0" * 16, "generate": yaml.safe_load((REPO / "params.yaml").read_text())["generate"]}
    (folder / "dlma_model.json").write_text(json.dumps(card))
    write_export(ExportSource(model_dir=folder, card=card, described_as=str(folder)), tmp_path / "exported", dtype="float32",
                 overwrite=False)
    result = subprocess.run([os.environ["DLMA_VLLM_PYTHON"], "-c", VLLM_SERVE, str(tmp_path / "exported"), json.dumps(PROMPTS),
                             str(NEW_TOKENS)], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    served = json.loads(next(line for line in result.stdout.splitlines() if line.startswith("RESULT "))[len("RESULT "):])
    expected = standalone_answers(tmp_path / "exported", tmp_path)["answers"]
    assert [s["prompt_ids"] for s in served] == [e["prompt_ids"] for e in expected]  # the same prompt, from the template
    assert served == expected
