"""The evaluate step as a library call: is the aligned model better than the base model?

Both answer the held-out prompts (same sampling params and seed); the configured judges
(dlma/evaluate/judges) give their verdicts, each with its validity; quality guards. The
label agreement (the paper's first question) comes measured from the agreement stage: it
goes into the report, and the judges that are also labellers there read their accuracy
on human labels from it.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from dlma.agreement.run import read_agreement
from dlma.core.config import flatten, load_section
from dlma.core.hashing import file_sha256
from dlma.core.io import atomic_path, write_csv, write_json, write_parquet
from dlma.core.numerics import DtypeChoice, same_numerics
from dlma.evaluate import report as reporting
from dlma.evaluate.answers import answer_logprobs, bare_contexts, read_answers, sample_answers
from dlma.evaluate.judges import JUDGES, JudgeContext, JudgeResult, run_judges
from dlma.evaluate.params import EvaluateParams, check_set_pairs
from dlma.evaluate.quality import quality_guards
from dlma.evaluate.sets import prompt_sets, read_identities
from dlma.evaluate.stats import accuracy_summary, verdict_summary
from dlma.evaluate.validity import failed_checks, headline
from dlma.generate.params import GenerateParams
from dlma.generate.sampling import Sample
from dlma.lm.params import PromptsParams
from dlma.model import (
    ModelParams,
    load_aligned,
    load_causal_lm,
    load_checked,
    read_card,
    stage_dtype,
)
from dlma.score.params import ScoreParams
from dlma.tracking import store
from dlma.tracking.params import TrackingParams

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvaluateConfig:
    """Every params section the evaluate step reads."""

    model: ModelParams
    prompts: PromptsParams
    generate: GenerateParams
    score: ScoreParams
    evaluate: EvaluateParams
    tracking: TrackingParams

    def __post_init__(self) -> None:
        check_set_pairs(self.evaluate, self.prompts.pairs)

    @classmethod
    def load(cls, path: Path) -> EvaluateConfig:
        return cls(
            model=load_section(ModelParams, "model", path), prompts=load_section(PromptsParams, "prompts", path),
            generate=load_section(GenerateParams, "generate", path), score=load_section(ScoreParams, "score", path),
            evaluate=load_section(EvaluateParams, "evaluate", path), tracking=load_section(TrackingParams, "tracking", path),
        )


@dataclass(frozen=True)
class EvaluateInputs:
    eval_prompts: Path
    model_id: Path
    aligned: Path
    scored: Path
    curve: Path
    agreement: Path  # the agreement stage's summary (JSON)
    agreement_samples: Path  # and its per-pair verdicts (Parquet)
    sets: Path | None = None  # identities from the sets stage; None: not checked
    baseline: Path | None = None  # a trained model to compare with instead of the base model (a round's previous round)
    base_answers: Path | None = None  # the base model's answers (base_answers stage); None: sampled here. Unused with baseline


@dataclass(frozen=True)
class EvaluateOutputs:
    metrics: Path
    samples: Path
    report: Path
    score_hist: Path  # plot data (CSV)
    win_rate: Path  # plot data (CSV)
    figure_score_hist: Path  # PNG
    figure_win_rate: Path  # PNG
    figure_train_curve: Path  # PNG


@dataclass
class Evaluation:
    metrics: dict
    samples: pl.DataFrame
    agreement: dict  # the agreement stage's summary, for the report and MLflow
    judges: dict[str, JudgeResult]
    details: dict


def answer_both(config: EvaluateConfig, inputs: EvaluateInputs, base_path: Path, tokenizer, prompts: pl.DataFrame,
                contexts: list[list[int]], numerics: DtypeChoice,
                with_logprobs: bool) -> tuple[dict[str, list[Sample]], np.ndarray | None, object]:
    """Base (or baseline) and aligned answers with the same sampling params; each prompt's
    random stream depends on its set and id only, so the two answers to a prompt are paired
    draws. The base model's answers come from the base_answers stage when given (sampled
    there once for every method of a seed, with their log-probs under the base model).
    Generation runs in the sampling dtype, judging in the scoring dtype: separate copies,
    since casting the judge down and back would lose its precision. The aligned model is
    its adapter merged into the weights (inference only: faster, the same function up to
    rounding); `with_logprobs`: its answers come with their log-probs under it (the KL
    estimate's first term, recorded while sampling). Returns the samples of each model, the
    base answers' log-probs under the base model where the table had them, and the aligned
    model (the KL estimate scores its answers with it where they came without)."""
    dtype, device = numerics.dtype, numerics.device

    def answer(model, logprobs: bool) -> list[Sample]:
        return sample_answers(model, tokenizer, prompts, contexts, config.generate, desc="generate", with_logprobs=logprobs)

    logp_base = None
    if inputs.baseline is not None:  # a baseline method's answers stand in for the base's: no base log-probs
        samples = {"base": answer(load_aligned(inputs.baseline, dtype=dtype, device=device, merged=True)[0], False)}
    elif inputs.base_answers is not None:
        base_samples, logp_base = read_answers(inputs.base_answers, prompts)
        samples = {"base": base_samples}
    else:  # the base model sampled here: its answers' log-probs are the base ones
        samples = {"base": answer(load_causal_lm(base_path, dtype=dtype, device=device), with_logprobs)}
        logp_base = np.array([s.logp for s in samples["base"]], dtype=np.float64) if with_logprobs else None
    aligned_model, _, _ = load_aligned(inputs.aligned, dtype=dtype, device=device, merged=True)
    samples["aligned"] = answer(aligned_model, with_logprobs)
    return samples, logp_base, aligned_model


def kl_terms(policy, base, tokenizer, contexts: list[list[int]], samples: list[Sample], score: ScoreParams) -> tuple[np.ndarray, np.ndarray]:
    """Per prompt, log pi(a | x) and log pi_base(a | x) of the policy's sampled answer a (its
    very token ids, EOS included where the model ended it), summed over its tokens, both in
    the scoring numerics. Their difference averaged over prompts is the sample estimate of
    KL(policy || base) (the reward-vs-KL frontier's x axis, as in the DPO paper); the second
    is also the aligned answers' perplexity under the base model. With the sampler's top-k /
    top-p the answers come from the truncated policy while the log-probs are the full
    softmax's: the estimate is of the log-ratio on the answers the policy actually gives.
    The first term is the one recorded while sampling where every answer has it (`policy`
    is then not run again)."""
    if all(s.logp is not None for s in samples):
        logp_policy = np.array([s.logp for s in samples], dtype=np.float64)
    else:
        logp_policy = answer_logprobs(policy, tokenizer, contexts, samples, score, desc="kl (aligned)")
    return logp_policy, answer_logprobs(base, tokenizer, contexts, samples, score, desc="kl (base)")


def training_data(scored: pl.DataFrame, prompts: PromptsParams) -> dict:
    """What the aligned model was trained from: the prompt format, and the generated pairs'
    share of answers the model ended itself (EOS) and pairs per contrastive pair."""
    ended_pos, ended_neg = scored["finish_pos"] == "eos", scored["finish_neg"] == "eos"
    return {"style": prompts.style, "bare": prompts.bare, "pairs": scored.height,
            "complete_responses_share": float((ended_pos.sum() + ended_neg.sum()) / (2 * scored.height)),
            "complete_pos_share": float(ended_pos.mean()), "complete_neg_share": float(ended_neg.mean()),
            "complete_pairs_share": float((ended_pos & ended_neg).mean()),
            "pairs_by_contrastive_pair": dict(sorted(scored.group_by("pair").len().iter_rows()))}


def judged_summary(name: str, result: JudgeResult, params: EvaluateParams) -> dict:
    """A comparing judge's win / tie / lose with intervals, and whether it is informative."""
    reasons = failed_checks(result.validity, params.validity)
    return verdict_summary(result.verdicts, samples=params.bootstrap, seed=params.seed) | {
        "independent": JUDGES[name].independent, "informative": not reasons, "not_informative_because": reasons,
        "validity": result.validity,
    }


def evaluate(config: EvaluateConfig, inputs: EvaluateInputs) -> Evaluation:
    card = read_card(inputs.aligned)
    judge_numerics = stage_dtype(config.model, "score.dtype", config.score.dtype)
    judge_model, tokenizer, resolved = load_checked(config.model, inputs.model_id, judge_numerics, config.score.attn_implementation)
    identities = read_identities(inputs.sets)
    agreement, labelled = read_agreement(inputs.agreement, inputs.agreement_samples)
    prompts, skipped_sets = prompt_sets(inputs.eval_prompts, config.evaluate, identities, config.prompts)
    prompts, contexts, too_long = bare_contexts(prompts, tokenizer, config.prompts, config.generate)
    queries = prompts["prompt"].to_list()
    sampling_numerics = stage_dtype(config.model, "generate.dtype", config.generate.dtype)
    recorded = same_numerics(sampling_numerics, judge_numerics)
    samples, logp_base_of_base, aligned_model = answer_both(config, inputs, resolved.path, tokenizer, prompts, contexts,
                                                            sampling_numerics, with_logprobs=recorded)
    answers = {who: [s.text for s in answered] for who, answered in samples.items()}
    if not recorded:  # the KL estimate compares both models in one numerics: the scoring one
        aligned_model, _, _ = load_aligned(inputs.aligned, dtype=judge_numerics.dtype, device=judge_numerics.device, merged=True)
    logp_policy, logp_base_of_aligned = kl_terms(aligned_model, judge_model, tokenizer, contexts, samples["aligned"], config.score)
    logratio = logp_policy - logp_base_of_aligned
    del aligned_model
    if logp_base_of_base is None:  # sampled here (no base_answers table, or a baseline's answers)
        logp_base_of_base = answer_logprobs(judge_model, tokenizer, contexts, samples["base"], config.score, desc="perplexity")

    context = JudgeContext(prompts=prompts, queries=queries, aligned=answers["aligned"], base=answers["base"],
                           judge_model=judge_model, tokenizer=tokenizer, params=config, labelled=labelled)
    judged = run_judges(config.evaluate.judges, context)
    perplexity, text = quality_guards(samples, {"base": logp_base_of_base, "aligned": logp_base_of_aligned})
    win_rates = {name: judged_summary(name, result, config.evaluate) for name, result in judged.items() if result.verdicts is not None}
    metrics = {"headline": headline(win_rates), "training_data": training_data(pl.read_parquet(inputs.scored), config.prompts),
               "win_rate": win_rates}
    for result in judged.values():
        metrics.update(result.metrics)
    kl = accuracy_summary(logratio, samples=config.evaluate.bootstrap, seed=config.evaluate.seed)
    metrics |= {"perplexity": perplexity, "text": text,
                "kl_to_base": {"mean": kl["accuracy"], "ci_low": kl["ci_low"], "ci_high": kl["ci_high"], "n": int(logratio.size)},
                "numerics": {c.key: c.record() for c in (sampling_numerics, judge_numerics)}}

    judge_columns = {name: values for result in judged.values() for name, values in result.columns.items()}
    verdict_columns = {f"verdict_{n}": r.verdicts for n, r in judged.items() if r.verdicts is not None}
    samples = prompts.with_columns(
        pl.Series("answer_base", answers["base"], dtype=pl.String), pl.Series("answer_aligned", answers["aligned"], dtype=pl.String),
        pl.Series("kl_aligned", logratio, dtype=pl.Float64),
        *[pl.Series(name, values) for name, values in {**judge_columns, **verdict_columns}.items()],
    )
    details = {"base": config.model.base, "model_dir": str(inputs.aligned), "version": card.get("version", resolved.sha256[:16]),
               "eval_prompts": prompts.height, "skipped_prompt_sets": skipped_sets, "skipped_long_prompts": too_long,
               "judges": {name: JUDGES[name].description for name in judged}}
    return Evaluation(metrics, samples, agreement, judged, details)


def write_outputs(evaluation: Evaluation, inputs: EvaluateInputs, outputs: EvaluateOutputs) -> None:
    metrics = evaluation.metrics
    write_parquet(evaluation.samples, outputs.samples)

    histogram = reporting.score_histogram(pl.read_parquet(inputs.scored)["score"].to_numpy())
    write_csv(histogram, outputs.score_hist)
    win_long = pl.DataFrame(
        [{"judge": j, "outcome": o, "rate": r[o]} for j, r in metrics["win_rate"].items() for o in ("win", "tie", "lose")],
        schema={"judge": pl.String, "outcome": pl.String, "rate": pl.Float64},
    )
    write_csv(win_long, outputs.win_rate)
    figures = {"Score distribution": outputs.figure_score_hist, "Aligned vs base": outputs.figure_win_rate,
               "Training curve": outputs.figure_train_curve}
    reporting.save_score_histogram(histogram, outputs.figure_score_hist)
    reporting.save_win_rates(metrics["win_rate"], outputs.figure_win_rate)
    reporting.save_train_curve(pl.read_csv(inputs.curve), outputs.figure_train_curve)

    samples = evaluation.samples
    examples = pl.concat([samples.filter(pl.col("harm") == h).head(3) for h in ("harmful", "safe")], how="vertical")
    if examples.height == 0:  # an objective without harmful / safe prompts (the controlled task)
        examples = samples.head(6)
    here = outputs.report.parent
    relative = {t: str(p.relative_to(here)) if p.is_relative_to(here) else str(p) for t, p in figures.items()}
    with atomic_path(outputs.report) as tmp:
        tmp.write_text(reporting.markdown_report(metrics, evaluation.agreement, evaluation.details, evaluation.judges, examples,
                                                 relative))
    write_json({**metrics, "skipped_prompt_sets": evaluation.details["skipped_prompt_sets"],
                "skipped_long_prompts": evaluation.details["skipped_long_prompts"]}, outputs.metrics)


def evaluation_id(config: EvaluateConfig, inputs: EvaluateInputs) -> str:
    """What an evaluation depends on besides the model (the pipeline version): its params and
    the content of its prompts, sets and agreement measurement."""
    parts = {section: dataclasses.asdict(getattr(config, section)) for section in ("prompts", "generate", "score", "evaluate")}
    parts["inputs"] = {name: file_sha256(path) for name, path in (("eval_prompts", inputs.eval_prompts), ("sets", inputs.sets),
                                                                    ("agreement", inputs.agreement)) if path and Path(path).is_file()}
    if inputs.baseline is not None:  # against another model than the base model: another evaluation
        parts["baseline"] = read_card(inputs.baseline).get("version", str(inputs.baseline))
    return store.version_id(parts)


def log_evaluation(evaluation: Evaluation, outputs: EvaluateOutputs, config: EvaluateConfig, inputs: EvaluateInputs) -> str:
    """Log the headline metrics and the report into the MLflow run of the model's pipeline
    version, and into the evaluation's own run nested under it (none replaces another)."""
    experiment_id = store.configure(config.tracking)
    metrics = {**evaluation.metrics, "agreement": evaluation.agreement,
               "skipped_prompt_sets": evaluation.details["skipped_prompt_sets"]}
    flat = {f"eval/{k}": float(v) for k, v in flatten(metrics, sep="/", numbers_only=True).items()}
    artifacts = [outputs.report, outputs.metrics, outputs.samples, outputs.figure_score_hist, outputs.figure_win_rate,
                 outputs.figure_train_curve]
    params = {f"evaluate.{k}": str(v)[:500] for k, v in flatten(dataclasses.asdict(config.evaluate)).items()}
    _, run_id = store.log_evaluation_run(experiment_id, evaluation.details["version"], evaluation_id(config, inputs), params,
                                         flat, [str(p) for p in artifacts])
    return run_id
