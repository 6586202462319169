"""One later round (k > 1) as a library call: sample, score, filter, train, evaluate.

    generate: round k-1's model answers every training prompt under p+ and p-
    score:    its self-rewarding score R (it is its own judge); reference log-probs from
              rounds.reference (the base model, or round k-1's model)
    filter:   the shipped filter params (+ the earlier rounds' pairs with rounds.keep_pairs)
    train:    DLMA's loss, from rounds.start (round k-1's adapter trains on, or a fresh one
              on the base model); logged to MLflow under the rounds' parent run, registered
              with the tag dlma.round
    evaluate: against the base model and against round k-1's model, with the evaluate params
"""

from __future__ import annotations

import dataclasses
import gc
import logging
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import torch

from dlma.core.config import flatten, load_section, read_params_file
from dlma.core.errors import DlmaError
from dlma.core.hashing import file_sha256
from dlma.core.io import write_csv, write_json, write_parquet
from dlma.core.numerics import same_numerics
from dlma.core.parallel import is_main_process
from dlma.core.paths import repository_root
from dlma.evaluate.run import EvaluateConfig, EvaluateInputs, evaluate, evaluation_id
from dlma.filter.params import FilterParams
from dlma.filter.preferences import build_preferences
from dlma.generate.params import GenerateParams
from dlma.lm.params import PromptsParams
from dlma.model import MODEL_CARD, ModelParams, checked_model, load_aligned, load_resolved, read_card, resolve_device, stage_dtype
from dlma.rounds.pairs import check_round_method, refresh_reference, round_pairs, with_earlier_pairs
from dlma.rounds.params import RoundsParams
from dlma.score.params import ScoreParams
from dlma.score.summary import score_summary
from dlma.tracking import store
from dlma.tracking.params import TrackingParams
from dlma.tracking.pyfunc import predict_signature
from dlma.train.data import add_reference_logps, check_reference_numerics, tokenise_preferences
from dlma.train.params import TrainParams
from dlma.train.run import check_lora_targets, curve_rows, final_metrics, hold_version_lock, save_model, train

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RoundConfig:
    """Every params section a later round reads."""

    model: ModelParams
    prompts: PromptsParams
    generate: GenerateParams
    score: ScoreParams
    filter: FilterParams
    train: TrainParams
    tracking: TrackingParams
    rounds: RoundsParams

    @classmethod
    def load(cls, path: Path) -> RoundConfig:
        sections = {"model": ModelParams, "prompts": PromptsParams, "generate": GenerateParams, "score": ScoreParams,
                    "filter": FilterParams, "train": TrainParams, "tracking": TrackingParams, "rounds": RoundsParams}
        return cls(**{name: load_section(kind, name, path) for name, kind in sections.items()})

    def loop_params(self) -> dict:
        """The rounds params that shape every later round (not the count: adding a round
        leaves the earlier ones, and their MLflow parent, as they are)."""
        return {"start": self.rounds.start, "reference": self.rounds.reference, "keep_pairs": self.rounds.keep_pairs}


@dataclass(frozen=True)
class RoundPaths:
    round: int
    previous_model: Path  # round k-1's model folder (round 1: the train stage's)
    previous_preferences: Path  # the pairs round k-1 trained on
    prompts: Path
    eval_prompts: Path
    model_id: Path
    sets: Path
    agreement: Path
    agreement_samples: Path
    checkpoints: Path
    out: Path  # this round's folder
    base_answers: Path | None = None  # the base model's answers (base_answers stage); None: evaluate samples them

    def file(self, name: str) -> Path:
        return self.out / name


def _free() -> None:
    gc.collect()


def round_data(config: RoundConfig, paths: RoundPaths, resolved) -> tuple[pl.DataFrame, dict]:
    """Generate, score and filter round k's pairs, written into the round's folder. Returns
    the preferences (reference log-probs included) and the reports of the three steps."""
    check_round_method(config.generate, config.score)
    sampling = stage_dtype(config.model, "generate.dtype", config.generate.dtype)
    scoring = stage_dtype(config.model, "score.dtype", config.score.dtype)
    if sampling.dtype != scoring.dtype:
        raise DlmaError("rounds.count > 1 samples and scores with one copy of the previous round's model: "
                        f"set generate.dtype and score.dtype alike (got {sampling.name} and {scoring.name})")
    previous, tokenizer, _ = load_aligned(paths.previous_model, dtype=scoring.dtype, device=scoring.device,
                                          attn_implementation=config.score.attn_implementation)
    reference = previous if config.rounds.reference == "previous" else load_resolved(
        config.model, resolved, scoring, config.score.attn_implementation)[0]
    generated, scored, generate_report = round_pairs(previous, reference, tokenizer, pl.read_parquet(paths.prompts),
                                                     config.prompts, config.generate, config.score,
                                                     use_recorded=same_numerics(sampling, scoring))
    preferences, filter_report = build_preferences(scored, config.filter, str(paths.file("scored.parquet")))
    if config.rounds.keep_pairs:
        preferences = with_earlier_pairs(preferences, pl.read_parquet(paths.previous_preferences), paths.round)
        if config.rounds.reference == "previous":  # the kept pairs were scored against an older reference
            preferences = refresh_reference(preferences, reference, tokenizer, config.prompts, config.score)
        filter_report["pairs_with_earlier_rounds"] = preferences.height
    write_parquet(generated, paths.file("generated.parquet"))
    write_parquet(scored, paths.file("scored.parquet"))
    write_parquet(preferences, paths.file("preferences.parquet"))
    reports = {"generate": generate_report | {"numerics": {sampling.key: sampling.record()}},
               "score": score_summary(scored["score"].to_numpy()), "filter": filter_report}
    del previous, reference
    _free()
    return preferences, reports


def round_models(config: RoundConfig, paths: RoundPaths, resolved, numerics):
    """(model to train, model whose log-probs the reference must equal at step 0, tokenizer):
    rounds.start picks the first (round k-1's adapter training on, or a fresh adapter on the
    base model), rounds.reference the second (the same object where they coincide)."""
    device = resolve_device(config.model.device)
    if config.rounds.start == "previous":
        start, tokenizer, _ = load_aligned(paths.previous_model, dtype=numerics.dtype, device=device,
                                           attn_implementation="eager", trainable=True)
    else:
        start, tokenizer = load_resolved(config.model, resolved, numerics, "eager")
    start.eval()  # the trainer switches it to training mode; the check below runs without dropout
    if config.rounds.start == config.rounds.reference:
        return start, start, tokenizer
    if config.rounds.reference == "previous":
        reference = load_aligned(paths.previous_model, dtype=numerics.dtype, device=device, attn_implementation="eager")[0]
    else:
        reference = load_resolved(config.model, resolved, numerics, "eager")[0]
    return start, reference.eval(), tokenizer


def train_round(config: RoundConfig, paths: RoundPaths, preferences: pl.DataFrame, reports: dict, resolved) -> dict:
    """Train round k's model on its pairs, log and register it. Returns the training summary."""
    import mlflow

    params = config.train
    numerics = stage_dtype(config.model, "train.dtype", params.dtype)
    params = dataclasses.replace(params, dtype=numerics.name)
    master = stage_dtype(config.model, "train (master weights)", "float32")
    start, reference, tokenizer = round_models(config, paths, resolved, master)
    if config.rounds.start == "base":
        check_lora_targets(start, params)
    rows, data_report = tokenise_preferences(preferences, tokenizer, config.prompts, max_length=params.max_length)
    autocast = numerics.dtype if numerics.dtype != torch.float32 else None
    if autocast is not None:  # the reference in training's numerics, as the train stage does
        add_reference_logps(rows, reference, tokenizer, batch_size=params.batch_size * 2, autocast_dtype=autocast)
    gap = check_reference_numerics(rows, reference, tokenizer, pairs=4, tolerance=params.reference_tolerance, autocast_dtype=autocast)
    log.info("round %d: reference log-probs (%s model) match at step 0 (largest gap %.2e nats)", paths.round,
             config.rounds.reference, gap)
    if reference is not start:
        del reference
        _free()

    previous_card = read_card(paths.previous_model)
    preferences_path = paths.file("preferences.parquet")
    version = store.version_id({"round": paths.round, "model": resolved.sha256, "previous": previous_card["version"],
                                "preferences": file_sha256(preferences_path), "train": dataclasses.asdict(params),
                                "rounds": config.loop_params(), "bare": [config.prompts.bare, config.prompts.bare_tag]})
    lock = hold_version_lock(paths.checkpoints, version)  # noqa: F841 (held until training ends)
    device = resolve_device(config.model.device)
    card = {"base": config.model.base, "base_sha256": resolved.sha256, "peft": params.peft, "bare": config.prompts.bare,
            "bare_tag": config.prompts.bare_tag, "version": version, "generate": dataclasses.asdict(config.generate),
            "train": dataclasses.asdict(params), "preferences_sha256": file_sha256(preferences_path),
            "pairs": preferences.height, "round": paths.round, "previous_version": previous_card["version"],
            "rounds": config.loop_params()}
    model_dir = paths.file("model")
    if not is_main_process():
        trainer, _, _ = train(start, tokenizer, rows, params, paths.checkpoints / version, device)
        final_metrics(trainer, params)
        save_model(trainer, tokenizer, card, model_dir, MODEL_CARD)
        return {}
    root = repository_root()
    experiment_id = store.configure(config.tracking, root)
    rounds_version = store.version_id({"first": previous_card["version"] if paths.round == 2 else previous_card.get("rounds_first"),
                                       "rounds": config.loop_params()})
    card["rounds_first"] = previous_card["version"] if paths.round == 2 else previous_card.get("rounds_first")
    parent = store.rounds_parent(experiment_id, rounds_version, card["rounds_first"])
    tags = {"dlma.stage": "round", "dlma.round": str(paths.round), store.ROUNDS_TAG: rounds_version,
            "mlflow.parentRunId": parent, **store.run_tags(root, config.tracking.group)}
    with store.start_version_run(experiment_id, version, f"dlma-{version[:8]}-round{paths.round}", tags) as run:
        store.log_run_params(run.info.run_id, {k: str(v)[:500] for k, v in flatten(read_params_file(Path("params.yaml"))).items()})
        trainer, summary, timings = train(start, tokenizer, rows, params, paths.checkpoints / version, device)
        summary |= final_metrics(trainer, params) | data_report | {"version": version, "round": paths.round,
                                                           "numerics": {numerics.key: numerics.record()}}
        save_model(trainer, tokenizer, card, model_dir, MODEL_CARD)
        write_csv(pl.DataFrame(curve_rows(trainer.state.log_history), infer_schema_length=None), paths.file("curve.csv"))
        write_json(summary, paths.file("train.json"))
        for name, report in reports.items():
            write_json(report, paths.file(f"{name}.json"))
        mlflow.log_metrics({f"final/{k}": float(v) for k, v in summary.items() if isinstance(v, (int, float))})
        mlflow.log_metrics({f"timing/{k}": float(v) for k, v in timings.items()})
        store.log_trained_model(model_dir, model_name=config.tracking.model_name, version=version,
                                signature=predict_signature(config.generate),
                                aliases=store.run_aliases(run.info.run_name, None), tags={"dlma.round": str(paths.round)})
    store.replace_version_runs(experiment_id, version, keep_run_id=run.info.run_id)
    import shutil

    shutil.rmtree(paths.checkpoints / version, ignore_errors=True)
    del start, trainer
    _free()
    return summary


def evaluate_round(eval_config: EvaluateConfig, paths: RoundPaths) -> dict:
    """Round k's model against the base model and against round k-1's model (paired: the
    same prompts and per-prompt sampling streams), each with every configured judge."""
    results = {}
    for against, baseline in (("vs_base", None), ("vs_previous", paths.previous_model)):
        inputs = EvaluateInputs(paths.eval_prompts, paths.model_id, paths.file("model"), paths.file("scored.parquet"),
                                paths.file("curve.csv"), paths.agreement, paths.agreement_samples, paths.sets, baseline,
                                paths.base_answers)
        evaluation = evaluate(eval_config, inputs)
        write_parquet(evaluation.samples, paths.file(f"eval_samples_{against}.parquet"))
        results[against] = evaluation.metrics
        if is_main_process():
            experiment_id = store.configure(eval_config.tracking)
            flat = {f"eval/{against}/{k}": float(v) for k, v in flatten(evaluation.metrics, sep="/", numbers_only=True).items()}
            store.log_evaluation_run(experiment_id, evaluation.details["version"], evaluation_id(eval_config, inputs),
                                     {"evaluate.against": against}, flat, [])
        _free()
    return results


def checked_paths(paths: RoundPaths) -> None:
    for name, path in (("previous round's model", paths.previous_model), ("previous round's pairs", paths.previous_preferences)):
        if not path.exists():
            raise DlmaError(f"round {paths.round}: the {name} '{path}' does not exist; run the earlier rounds first (dvc repro)")
    if read_card(paths.previous_model).get("peft") not in ("lora", "none"):
        raise DlmaError(f"'{paths.previous_model}' is not a model the train stage wrote")


def run_round(config: RoundConfig, eval_config: EvaluateConfig, paths: RoundPaths) -> dict:
    """The whole round; returns its metrics (what `dvc exp show` lists per round)."""
    checked_paths(paths)
    resolved = checked_model(config.model, paths.model_id)
    paths.out.mkdir(parents=True, exist_ok=True)
    preferences, reports = round_data(config, paths, resolved)
    summary = train_round(config, paths, preferences, reports, resolved)
    evaluations = evaluate_round(eval_config, paths)
    keys = ("final_loss", "reward_accuracy", "reward_margin", "pairs", "steps", "version")
    return {"round": paths.round, "active": True, **config.loop_params(),
            "pairs_sampled": reports["filter"]["rows_in"], "train": {k: summary.get(k) for k in keys},
            "score": {k: reports["score"][k] for k in ("mean", "positive_fraction")}, **evaluations}
