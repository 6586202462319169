"""Stage `evaluate`: is the aligned model better, measured the paper's two ways?

    python -m stages.evaluate --eval-prompts data/prompts_eval.parquet --model-id data/model.json \
        --aligned models/dlma --scored data/scored.parquet --curve reports/plots/train.csv \
        --metrics reports/metrics.json --samples reports/eval_samples.parquet --report reports/report.md \
        --plots reports/plots --figures reports/figures

1. Label agreement: on human-labelled pairs, how often the contrastive score, an A/B
   (RLAIF-style) judge and plain likelihood pick the human-preferred answer.
2. Aligned versus base: both answer the held-out prompts (same sampling params and seed);
   named judges give win / tie / lose; refusal rates, perplexity, length and diversity.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import polars as pl
import typer

from dlma import report as reporting
from dlma import tracking
from dlma.data import load_records
from dlma.errors import DlmaError
from dlma.evalstats import distinct_n, perplexity, rates, verdict_from_margin, verdict_from_two_orders
from dlma.evaluation import ab_judge, answer_logps, label_agreement, reward_model_scores, self_contrast
from dlma.generation import sample_responses
from dlma.io import atomic_path, write_csv, write_json, write_parquet
from dlma.mlflow_model import load_aligned, read_card
from dlma.modelio import load_causal_lm, resolve_device, resolve_dtype
from dlma.params import (EvaluateParams, GenerateParams, ModelParams, PromptsParams, ScoreParams, TrackingParams,
                         load_section)
from dlma.prompts import encode_contexts
from dlma.refusal import is_refusal
from dlma.stage import stage_entry
from dlma.stagemodel import load_checked

log = logging.getLogger(__name__)
HARMFUL_CATEGORIES = {"harmful", "unsafe"}
SAFE_CATEGORIES = {"helpful", "borderline", "safe"}


def missing_local_file(source: str) -> bool:
    """A file path (not a hub id) that is not there: the set is skipped and reported."""
    return source.lower().endswith((".jsonl", ".gz", ".csv", ".parquet", ".json")) and not Path(source).expanduser().exists()


def prompt_sets(eval_prompts: Path, params: EvaluateParams) -> tuple[pl.DataFrame, dict[str, str]]:
    """Held-out prompts plus extra sets, with a `harm` label (harmful / safe / unknown)."""
    def labelled(frame: pl.DataFrame, name: str, kind: str) -> pl.DataFrame:
        frame = frame.head(params.limit) if params.limit else frame
        category = frame["category"].str.to_lowercase()
        if kind == "mixed":
            harm = pl.when(category.is_in(list(HARMFUL_CATEGORIES))).then(pl.lit("harmful")).when(
                category.is_in(list(SAFE_CATEGORIES))).then(pl.lit("safe")).otherwise(pl.lit("unknown"))
        else:
            harm = pl.lit(kind)
        return frame.select("id", "prompt", "category").with_columns(pl.lit(name).alias("set"), harm.alias("harm"))

    frames = [labelled(pl.read_parquet(eval_prompts), "heldout", "mixed")]
    skipped = {}
    for spec in params.prompt_sets:
        if missing_local_file(spec.source):
            skipped[spec.name] = f"{spec.source} not found"
            log.warning("prompt set %s skipped: %s not found", spec.name, spec.source)
            continue
        records, _ = load_records(spec.source, format=spec.format, columns=spec.columns)
        frames.append(labelled(records, spec.name, spec.kind))
    prompts = pl.concat(frames, how="vertical")
    if prompts.height == 0:
        raise DlmaError("no evaluation prompts: the held-out split is empty and no prompt set was loaded")
    return prompts, skipped


def agreement(model, tokenizer, params: EvaluateParams, prompts: PromptsParams, score: ScoreParams) -> tuple[dict, list[pl.DataFrame]]:
    results, rows = {}, []
    for spec in params.agreement_sets:
        if missing_local_file(spec.source):
            results[spec.name] = {"skipped": f"{spec.source} not found"}
            log.warning("agreement set %s skipped: %s not found", spec.name, spec.source)
            continue
        frame, _ = load_records(spec.source, format=spec.format, columns=spec.columns, pku_label=spec.pku_label)
        if "chosen" not in frame.columns:
            raise DlmaError(f"agreement set '{spec.name}' ({spec.source}) has no chosen/rejected fields; map them with columns")
        frame = frame.head(params.limit) if params.limit else frame
        summary, detail = label_agreement(
            model, tokenizer, frame, prompts, score, params.judge_prompt, params.judge_tokens,
            samples=params.bootstrap, seed=params.seed,
        )
        results[spec.name] = summary
        rows.append(detail.with_columns(pl.lit(spec.name).alias("set")))
        log.info("agreement %s: %s", spec.name, {k: v for k, v in summary.items()})
    return results, rows


def generate_answers(model, tokenizer, prompts_frame, prompt_params, generate: GenerateParams) -> list[str]:
    contexts = encode_contexts(tokenizer, prompt_params, prompts_frame["prompt"].to_list(), "bare")
    return [s.text for s in sample_responses(model, tokenizer, contexts, generate)]


@stage_entry
def main(
    eval_prompts: Path = typer.Option(..., help="input: held-out prompts (Parquet)"),
    model_id: Path = typer.Option(..., help="input: model identity written by the model stage"),
    aligned: Path = typer.Option(..., help="input: the trained model directory"),
    scored: Path = typer.Option(..., help="input: scored pairs, for the score histogram"),
    curve: Path = typer.Option(..., help="input: training curve CSV"),
    metrics_out: Path = typer.Option(..., "--metrics", help="output: headline metrics (JSON)"),
    samples_out: Path = typer.Option(..., "--samples", help="output: every prompt, both answers, every verdict (Parquet)"),
    agreement_out: Path = typer.Option(..., "--agreement-samples", help="output: per-pair verdicts on the labelled sets (Parquet)"),
    report_out: Path = typer.Option(..., "--report", help="output: the Markdown report"),
    plots: Path = typer.Option(..., help="output folder: plot data (CSV) for dvc plots"),
    figures: Path = typer.Option(..., help="output folder: PNG figures for the report"),
    params_file: Path = typer.Option(Path("params.yaml"), "--params", help="params file"),
) -> None:
    """Evaluate the aligned model against the base model and the score against human labels."""
    model_params = load_section(ModelParams, "model", params_file)
    prompt_params = load_section(PromptsParams, "prompts", params_file)
    generate = load_section(GenerateParams, "generate", params_file)
    score = load_section(ScoreParams, "score", params_file)
    params = load_section(EvaluateParams, "evaluate", params_file)
    tracking_params = load_section(TrackingParams, "tracking", params_file)
    card = read_card(aligned)

    judge_model, tokenizer, resolved = load_checked(model_params, model_id, score.dtype, score.attn_implementation)
    agreement_results, agreement_rows = agreement(judge_model, tokenizer, params, prompt_params, score)

    prompts, skipped_sets = prompt_sets(eval_prompts, params)
    device = resolve_device(model_params.device)
    gen_dtype = resolve_dtype(generate.dtype if generate.dtype != "auto" else model_params.dtype, device)
    # Generation runs in the sampling dtype, judging in the scoring dtype: separate copies,
    # since casting the judge down and back would lose its precision.
    base_model = load_causal_lm(resolved.path, dtype=gen_dtype, device=device)
    answers_base = generate_answers(base_model, tokenizer, prompts, prompt_params, generate)
    del base_model
    aligned_model, _, _ = load_aligned(aligned, dtype=gen_dtype, device=device)
    answers_aligned = generate_answers(aligned_model, tokenizer, prompts, prompt_params, generate)
    del aligned_model

    queries = prompts["prompt"].to_list()
    verdicts: dict[str, list[str]] = {}
    columns: dict[str, list] = {}
    if "self_contrast" in params.judges:
        contrast = self_contrast(judge_model, tokenizer, prompt_params, score, queries, answers_aligned, answers_base)
        margins = contrast["score"].to_numpy()
        columns["self_contrast_score"] = margins.tolist()
        verdicts["self_contrast"] = [verdict_from_margin(m, params.tie_margin) for m in margins]
    if "ab_judge" in params.judges:
        judged = ab_judge(judge_model, tokenizer, prompt_params, params.judge_prompt, params.judge_tokens,
                          queries, answers_aligned, answers_base, batch_size=score.batch_size)
        # "chosen" is the aligned answer: shown first, then second (base first).
        verdicts["ab_judge"] = [
            verdict_from_two_orders(bool(first), not bool(swapped))
            for first, swapped in zip(judged["picks_chosen_first_order"], judged["picks_chosen_swapped_order"])
        ]
        columns["ab_judge_prob_aligned"] = judged["prob_chosen"].tolist()
    if "reward_model" in params.judges:
        reward_aligned = reward_model_scores(params.reward_model, queries, answers_aligned, trust_remote_code=model_params.trust_remote_code)
        reward_base = reward_model_scores(params.reward_model, queries, answers_base, trust_remote_code=model_params.trust_remote_code)
        columns["reward_aligned"], columns["reward_base"] = reward_aligned.tolist(), reward_base.tolist()
        verdicts["reward_model"] = [verdict_from_margin(a - b, 0.0) for a, b in zip(reward_aligned, reward_base)]
    for judge, values in verdicts.items():
        columns[f"verdict_{judge}"] = values

    refusal_base = [is_refusal(a) for a in answers_base]
    refusal_aligned = [is_refusal(a) for a in answers_aligned]
    harm = prompts["harm"].to_numpy()
    refusal_rate = {}
    for who, flags in (("base", np.array(refusal_base)), ("aligned", np.array(refusal_aligned))):
        refusal_rate[who] = {
            kind: float(flags[harm == kind].mean()) if (harm == kind).any() else None for kind in ("harmful", "safe")
        }
    if "self_contrast" in params.judges:
        # Its scoring pass already holds each answer's log-prob given the bare query.
        logp_aligned, tokens_aligned = contrast["ref_logp_pos"].to_numpy(), contrast["n_tokens_pos"].to_numpy()
        logp_base, tokens_base = contrast["ref_logp_neg"].to_numpy(), contrast["n_tokens_neg"].to_numpy()
    else:
        logp_base, tokens_base = answer_logps(judge_model, tokenizer, prompt_params, queries, answers_base, batch_size=score.batch_size)
        logp_aligned, tokens_aligned = answer_logps(judge_model, tokenizer, prompt_params, queries, answers_aligned, batch_size=score.batch_size)

    metrics = {
        "agreement": agreement_results,
        "win_rate": {judge: rates(v) for judge, v in verdicts.items()},
        "refusal_rate": refusal_rate if "refusal" in params.judges else {},
        "perplexity": {"base": perplexity(logp_base, tokens_base), "aligned": perplexity(logp_aligned, tokens_aligned)},
        "text": {
            who: {"mean_tokens": float(np.mean(tokens) - 1), "distinct_1": distinct_n(answers, 1), "distinct_2": distinct_n(answers, 2)}
            for who, answers, tokens in (("base", answers_base, tokens_base), ("aligned", answers_aligned, tokens_aligned))
        },
    }
    samples = prompts.with_columns(
        pl.Series("answer_base", answers_base, dtype=pl.String), pl.Series("answer_aligned", answers_aligned, dtype=pl.String),
        pl.Series("refusal_base", refusal_base), pl.Series("refusal_aligned", refusal_aligned),
        *[pl.Series(name, values) for name, values in columns.items()],
    )
    write_parquet(samples, samples_out)
    write_parquet(pl.concat(agreement_rows, how="vertical") if agreement_rows else pl.DataFrame({"set": []}, schema={"set": pl.String}), agreement_out)

    histogram = reporting.score_histogram(pl.read_parquet(scored)["score"].to_numpy())
    write_csv(histogram, plots / "score_hist.csv")
    win_long = pl.DataFrame(
        [{"judge": j, "outcome": o, "rate": r[o]} for j, r in metrics["win_rate"].items() for o in ("win", "tie", "lose")],
        schema={"judge": pl.String, "outcome": pl.String, "rate": pl.Float64},
    )
    write_csv(win_long, plots / "win_rate.csv")
    figure_paths = {"Score distribution": figures / "score_hist.png", "Aligned vs base": figures / "win_rate.png",
                    "Training curve": figures / "train_curve.png"}
    reporting.save_score_histogram(histogram, figure_paths["Score distribution"])
    reporting.save_win_rates(metrics["win_rate"], figure_paths["Aligned vs base"])
    reporting.save_train_curve(pl.read_csv(curve), figure_paths["Training curve"])

    examples = pl.concat([samples.filter(pl.col("harm") == h).head(3) for h in ("harmful", "safe")], how="vertical")
    details = {"base": model_params.base, "model_dir": str(aligned), "version": card.get("version", "?"),
               "eval_prompts": prompts.height, "skipped_prompt_sets": skipped_sets}
    relative = {t: str(p.relative_to(report_out.parent)) if p.is_relative_to(report_out.parent) else str(p) for t, p in figure_paths.items()}
    with atomic_path(report_out) as tmp:
        tmp.write_text(reporting.markdown_report(metrics, details, examples, relative))
    metrics["skipped_prompt_sets"] = skipped_sets
    write_json(metrics, metrics_out)

    experiment_id = tracking.configure(tracking_params)
    flat = {f"eval/{k}": float(v) for k, v in _flatten_numbers(metrics).items()}
    run_id = tracking.log_to_version_run(
        experiment_id, card.get("version", resolved.sha256[:16]), flat,
        [str(report_out), str(metrics_out), str(samples_out), *map(str, figure_paths.values())],
    )
    log.info("evaluation logged to MLflow run %s", run_id)
    log.info("win rates: %s; refusal: %s; perplexity: %s", metrics["win_rate"], metrics["refusal_rate"], metrics["perplexity"])


def _flatten_numbers(data: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten_numbers(value, name + "/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value):
            out[name] = value
    return out


if __name__ == "__main__":
    typer.run(main)
