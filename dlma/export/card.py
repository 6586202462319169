"""The exported model's card (README.md, as the hub shows it) and its provenance record."""

from __future__ import annotations

from dlma.evaluate.report import headline_lines
from dlma.export.source import ExportSource
from dlma.truth import TRUE_REWARDS


def method_of(params: dict, train: dict) -> str:
    """The method in the paper's terms (dlma/compare/methods.py), from the params that define
    it: the loss, the labeller of the pairs and the margin weight."""
    labeller, weight = params.get("score.labeller"), float(train.get("margin_weight", 0.0))
    if train.get("loss") == "sft":
        return "context distillation (SFT on the answers under p+)"
    if train.get("loss") == "weighted":
        return "DPO with each pair's loss weighted by its score"
    if labeller is None:
        return f"DPO with margin weight {weight:g} (the labeller is not recorded: no MLflow run of this version)"
    if labeller == "contrastive":
        return "DLMA (self-rewarding contrastive score, margin-DPO)" if weight > 0 else "RLCD (contrastive pairs, plain DPO)"
    if labeller == "ab_judge":
        return "RLAIF (the model as A/B judge, both orders)"
    if labeller == "human":
        return "DPO on human labels"
    if labeller in TRUE_REWARDS:
        return f"DPO on pairs labelled by the true reward `{labeller}` (oracle)"
    return f"DPO on pairs labelled by `{labeller}`"


def _evaluation_lines(evaluation: dict | None) -> list[str]:
    if evaluation is None:
        return ["No evaluation of this model was logged (the evaluate stage has not run for its pipeline version).", ""]
    lines = headline_lines(evaluation["headline"])
    for name in TRUE_REWARDS:
        if name in evaluation and "gain" in evaluation[name]:
            gain = evaluation[name]["gain"]
            lines += [f"True reward `{name}`: gain over the base model {gain['difference']:+.3f} "
                      f"[{gain['ci_low']:+.3f}, {gain['ci_high']:+.3f}] (paired, 95% bootstrap over {gain['n']} prompts).", ""]
    kl = evaluation.get("kl_to_base")
    if kl:
        lines += [f"KL(aligned || base) per answer: {kl['mean']:.3f} nats [{kl['ci_low']:.3f}, {kl['ci_high']:.3f}] over {kl['n']} prompts.", ""]
    return lines


def provenance(source: ExportSource, chat_format: str) -> dict:
    card = source.card
    # The train params: in the card (models since the card held them), else as the run logged them.
    train = card.get("train") or {key.split(".", 1)[1]: value for key, value in source.params.items() if key.startswith("train.")}
    return {
        "exported_from": source.described_as,
        "registered": source.registered,
        "pipeline_version": card["version"],
        "base": card["base"],
        "base_sha256": card["base_sha256"],
        "peft": card["peft"],
        "merged": card["peft"] == "lora",
        "method": method_of(source.params, train),
        "train": train,
        "labeller": source.params.get("score.labeller"),
        "pairs_from": source.params.get("generate.pairs_from"),
        "contrastive_pair": source.params.get("prompts.pair"),
        "training_data": {"preferences_sha256": card.get("preferences_sha256"), "pairs": card.get("pairs")},
        "prompt_format": chat_format,
        "evaluation_headline": (source.evaluation or {}).get("headline"),
    }


def _data_line(data: dict, labeller: str | None) -> str:
    if data["preferences_sha256"] is None:
        return "Not recorded in this model's folder (trained before dlma recorded it); see its MLflow run's input."
    labelled = "labelled by humans" if labeller == "human" else "labelled without human labels"
    return f"{data['pairs']} preference pairs, {labelled}; `preferences.parquet` sha256 `{data['preferences_sha256']}`."


def model_card(record: dict, source: ExportSource) -> str:
    train = record["train"] or {}
    registered = record["registered"]
    where = (f"version {registered['version']} of registered model `{registered['name']}` "
             f"(aliases: {', '.join(registered['aliases']) or 'none'}; MLflow run `{registered['run_id']}`)"
             if registered else "the train stage's folder, not registered")
    keys = ("loss", "beta", "margin_weight", "learning_rate", "epochs", "max_steps", "batch_size",
            "gradient_accumulation_steps", "peft", "lora_r", "lora_alpha", "seed")
    train_params = ", ".join(f"`{k}` {train[k]}" for k in keys if k in train) or "not recorded"
    lines = [
        "---",
        f"base_model: {record['base']}",
        "library_name: transformers",
        "pipeline_tag: text-generation",
        "tags: [dlma, dpo, self-rewarding, contrastive-prompts]",
        "---",
        "",
        f"# {record['base'].split('/')[-1]} aligned with dlma",
        "",
        f"Exported by `dlma export` from {record['exported_from']}: {where}. "
        f"dlma pipeline version `{record['pipeline_version']}`; base model `{record['base']}` (content sha256 "
        f"`{record['base_sha256'][:16]}`), " + ("LoRA adapter merged into its weights." if record["merged"] else "full fine-tune, as trained."),
        "",
        "## Method",
        "",
        f"{record['method']}. Labeller `{record['labeller']}`, pairs from `{record['pairs_from']}`, contrastive pair "
        f"`{record['contrastive_pair']}`. Training: {train_params}.",
        "",
        "## Training data",
        "",
        _data_line(record["training_data"], record["labeller"]),
        "",
        "## Evaluation",
        "",
        *_evaluation_lines(source.evaluation),
        "## Use",
        "",
        f"The chat template is the prompt format the model was trained with ({record['prompt_format']}); "
        "`generation_config.json` holds the pipeline's sampling params. It loads with plain transformers:",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "tokenizer = AutoTokenizer.from_pretrained(FOLDER)",
        "model = AutoModelForCausalLM.from_pretrained(FOLDER)",
        'ids = tokenizer.apply_chat_template([{"role": "user", "content": "Write a short review of a cafe."}],',
        "                                    add_generation_prompt=True, return_tensors=\"pt\", return_dict=True)",
        "print(tokenizer.decode(model.generate(**ids)[0, ids[\"input_ids\"].shape[1]:], skip_special_tokens=True))",
        "```",
        "",
        "The pipeline encodes a control string typed in a user's text (`<|im_end|>`) as text; a plain "
        "`apply_chat_template` makes it the special token, so pass such text with care.",
        "",
    ]
    return "\n".join(lines)
