"""Model-side evaluation: label agreement of the three judging methods, judging aligned vs
base answers, and perplexity. The bookkeeping is in dlma.evalstats."""

from __future__ import annotations

import numpy as np
import polars as pl
import torch
from tqdm.auto import tqdm

from dlma.errors import DlmaError
from dlma.evalstats import ab_judge_summary, accuracy_summary
from dlma.generation import left_pad
from dlma.logprobs import response_logprobs
from dlma.params import PromptsParams, ScoreParams
from dlma.prompts import bare_uses_chat, encode_context, encode_contexts, encode_response
from dlma.scorer import score_table


def answer_token_ids(tokenizer, tokens: list[str]) -> list[int]:
    ids = []
    for token in tokens:
        encoded = tokenizer(token, add_special_tokens=False)["input_ids"]
        if len(encoded) != 1:
            raise DlmaError(f"evaluate.judge_tokens: '{token}' is {len(encoded)} tokens for this tokenizer; use single-token answers")
        ids.append(encoded[0])
    return ids


@torch.inference_mode()
def next_token_probs(model, tokenizer, contexts: list[list[int]], token_ids: list[int], *, batch_size: int) -> np.ndarray:
    """P(next token = each of token_ids | context) for every context, [N, len(token_ids)]."""
    device = next(model.parameters()).device
    out = np.zeros((len(contexts), len(token_ids)))
    order = sorted(range(len(contexts)), key=lambda i: len(contexts[i]))
    for start in tqdm(range(0, len(order), batch_size), desc="ab-judge", unit="batch"):
        chunk = order[start:start + batch_size]
        input_ids, attention_mask = left_pad([contexts[i] for i in chunk], tokenizer.pad_token_id)
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        logits = model(
            input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
            position_ids=position_ids.to(device), logits_to_keep=1, use_cache=False,
        ).logits[:, -1].float()
        out[chunk] = torch.softmax(logits, dim=-1)[:, token_ids].double().cpu().numpy()
    return out


def ab_judge_contexts(tokenizer, bare: str, template: str, queries, first, second) -> list[list[int]]:
    chat = bare_uses_chat(tokenizer, bare)
    contexts = []
    for q, a, b in zip(queries, first, second):
        text = template.format(q=q, a=a, b=b)
        if chat:
            text = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)
        contexts.append(encode_context(tokenizer, text, chat=chat))
    return contexts


def ab_judge(model, tokenizer, prompts: PromptsParams, template: str, tokens: list[str], queries, first, second, *, batch_size: int) -> dict:
    """Ask the judge in both orders; see evalstats.ab_judge_summary for what comes back."""
    token_ids = answer_token_ids(tokenizer, tokens)
    forward = next_token_probs(model, tokenizer, ab_judge_contexts(tokenizer, prompts.bare, template, queries, first, second), token_ids, batch_size=batch_size)
    swapped = next_token_probs(model, tokenizer, ab_judge_contexts(tokenizer, prompts.bare, template, queries, second, first), token_ids, batch_size=batch_size)
    return ab_judge_summary(forward[:, 0], forward[:, 1], swapped[:, 0], swapped[:, 1])


def label_agreement(model, tokenizer, frame: pl.DataFrame, prompts: PromptsParams, score: ScoreParams,
                    template: str, tokens: list[str], *, samples: int, seed: int) -> tuple[dict, pl.DataFrame]:
    """Agreement with human labels of (chosen, rejected) pairs for three judging methods."""
    pairs = frame.select("id", "prompt", pl.col("chosen").alias("response_pos"), pl.col("rejected").alias("response_neg"))
    scored = score_table(model, tokenizer, pairs, prompts, score, with_reference=False)
    contrastive = (scored["score"].to_numpy() > 0).astype(float)
    # Plain likelihood under the positive prompt: is the human-preferred answer more likely?
    likelihood = (scored["logp_pos_given_pos"].to_numpy() > scored["logp_neg_given_pos"].to_numpy()).astype(float)
    judge = ab_judge(model, tokenizer, prompts, template, tokens, frame["prompt"].to_list(),
                     frame["chosen"].to_list(), frame["rejected"].to_list(), batch_size=score.batch_size)
    ab_correct = (judge["prob_chosen"] > 0.5).astype(float)
    shorter = (scored["n_tokens_pos"].to_numpy() < scored["n_tokens_neg"].to_numpy()).astype(float)
    summary = {
        "rows": frame.height,
        "contrastive": accuracy_summary(contrastive, samples=samples, seed=seed) | {"order_consistency": 1.0},
        "ab_judge": accuracy_summary(ab_correct, samples=samples, seed=seed) | {
            "order_consistency": float(judge["consistent"].mean()),
            "prefers_a_both_orders": float(judge["prefers_a_both"].mean()),
            "answer_token_mass": float(judge["answer_mass"].mean()),
        },
        "likelihood": accuracy_summary(likelihood, samples=samples, seed=seed),
        "chosen_is_shorter": float(shorter.mean()),
    }
    rows = frame.select("id", "prompt", "chosen", "rejected").with_columns(
        pl.Series("score", scored["score"]), pl.Series("contrastive_right", contrastive),
        pl.Series("likelihood_right", likelihood), pl.Series("ab_prob_chosen", judge["prob_chosen"]),
        pl.Series("ab_consistent", judge["consistent"]), pl.Series("ab_answer_mass", judge["answer_mass"]),
    )
    return summary, rows


def self_contrast(model, tokenizer, prompts: PromptsParams, score: ScoreParams, queries, ours, theirs) -> pl.DataFrame:
    """The base model's contrastive score of (ours as a1, theirs as a2): `score` > 0 favours
    ours. The frame also holds each answer's log-prob given the bare query (ref_logp_pos for
    ours, ref_logp_neg for theirs) and token counts, which the perplexity reuses."""
    frame = pl.DataFrame({"id": [str(i) for i in range(len(queries))], "prompt": queries, "response_pos": ours, "response_neg": theirs})
    return score_table(model, tokenizer, frame, prompts, score)


def answer_logps(model, tokenizer, prompts: PromptsParams, queries, answers, *, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Summed log-prob of each answer given the bare query, and its token count."""
    contexts = encode_contexts(tokenizer, prompts, queries, "bare")
    responses = [encode_response(tokenizer, a) for a in answers]
    logps = response_logprobs(model, list(zip(contexts, responses)), pad_id=tokenizer.pad_token_id, batch_size=batch_size, desc="perplexity")
    return logps, np.array([len(r) for r in responses])


@torch.inference_mode()
def reward_model_scores(path: str, queries, answers, *, batch_size: int = 8, trust_remote_code: bool = False) -> np.ndarray:
    """Scalar rewards from a Hugging Face sequence-classification reward model."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        model = AutoModelForSequenceClassification.from_pretrained(path, trust_remote_code=trust_remote_code).eval()
    except (OSError, ValueError) as exc:
        raise DlmaError(f"evaluate.reward_model: cannot load '{path}' ({exc})") from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    scores = []
    for start in range(0, len(queries), batch_size):
        q, a = queries[start:start + batch_size], answers[start:start + batch_size]
        if getattr(tokenizer, "chat_template", None):
            texts = [tokenizer.apply_chat_template([{"role": "user", "content": x}, {"role": "assistant", "content": y}], tokenize=False) for x, y in zip(q, a)]
            batch = tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=1024, add_special_tokens=False)
        else:
            batch = tokenizer(q, a, return_tensors="pt", padding=True, truncation=True, max_length=1024)
        scores.extend(model(**batch).logits[:, 0].float().tolist())
    return np.array(scores)
