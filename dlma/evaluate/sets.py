"""The prompt sets and human-labelled pair sets that `evaluate` reads, as configured,
checked against the identities the `sets` stage recorded."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import polars as pl

from dlma.core.errors import DlmaError
from dlma.core.hashing import file_sha256
from dlma.data.loaders import load_records
from dlma.data.params import AgreementSet, PromptSet
from dlma.data.sets import locate
from dlma.evaluate.params import EvaluateParams
from dlma.lm.params import PromptsParams
from dlma.lm.prompts import pairs_of

log = logging.getLogger(__name__)
HARMFUL_CATEGORIES = {"harmful", "unsafe"}
SAFE_CATEGORIES = {"helpful", "borderline", "safe"}


def read_identities(path: Path | None) -> dict:
    if path is None:
        return {}
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise DlmaError(f"cannot read the evaluation sets' identities '{path}' ({exc}); run the sets stage first") from exc


def _load(spec: AgreementSet | PromptSet, kind: str, identities: dict, **options) -> tuple[pl.DataFrame | None, str | None]:
    """The set's rows, or (None, why it is skipped)."""
    source, skipped = locate(spec)
    if skipped:
        log.warning("%s set %s skipped: %s", kind, spec.name, skipped)
        return None, skipped
    recorded = identities.get(f"{kind}/{spec.name}", {}).get("sha256")
    if recorded and file_sha256(source) != recorded:
        raise DlmaError(f"evaluation set '{spec.name}' ({spec.source}) changed since the sets stage ran; run `dvc repro`")
    hint = f"the columns of evaluate.{'agreement' if kind == 'agreement' else 'prompt'}_sets '{spec.name}'"
    frame, _ = load_records(source, format=spec.format, columns=spec.columns, hint=hint,
                            source_key=f"the source of evaluation set '{spec.name}'", **options)
    return frame, None


def _with_harm(frame: pl.DataFrame, name: str, kind: str, limit: int | None, pairs: list[str]) -> pl.DataFrame:
    frame = frame.head(limit) if limit else frame
    category = frame["category"].str.to_lowercase()
    if kind == "mixed":
        harm = pl.when(category.is_in(list(HARMFUL_CATEGORIES))).then(pl.lit("harmful")).when(
            category.is_in(list(SAFE_CATEGORIES))).then(pl.lit("safe")).otherwise(pl.lit("unknown"))
    else:
        harm = pl.lit(kind)
    return frame.select("id", "prompt", "category").with_columns(pl.lit(name).alias("set"), harm.alias("harm"),
                                                               pl.Series("pair", pairs[: frame.height], dtype=pl.String))


def prompt_sets(eval_prompts: Path, params: EvaluateParams, identities: dict, prompts: PromptsParams) -> tuple[pl.DataFrame, dict[str, str]]:
    """Held-out prompts plus extra sets, with a `harm` label (harmful / safe / unknown) and
    the contrastive pair that judges each prompt; and the optional sets skipped because
    their file is missing, with the reason."""
    heldout = pl.read_parquet(eval_prompts)
    frames = [_with_harm(heldout, "heldout", "mixed", params.limit, pairs_of(prompts, heldout["category"].to_list(), heldout.height))]
    skipped = {}
    for spec in params.prompt_sets:
        records, reason = _load(spec, "prompts", identities)
        if reason:
            skipped[spec.name] = reason
            continue
        pairs = pairs_of(prompts, records["category"].to_list(), records.height, spec.pair)
        frames.append(_with_harm(records, spec.name, spec.kind, params.limit, pairs))
    prompts = pl.concat(frames, how="vertical")
    if prompts.height == 0:
        raise DlmaError("no evaluation prompts: the held-out split is empty and no prompt set was loaded")
    return prompts, skipped


def agreement_sets(params: EvaluateParams, identities: dict | None = None) -> tuple[dict[str, tuple[pl.DataFrame, int]], dict[str, dict]]:
    """Each configured labelled set (capped at evaluate.limit rows) with its count of dropped
    identical pairs, and the skipped ones
    with the reason. Pairs whose two answers are identical carry no label: they are
    dropped and counted; a set with none left is an error."""
    loaded, skipped = {}, {}
    for spec in params.agreement_sets:
        frame, reason = _load(spec, "agreement", identities or {}, pku_label=spec.pku_label)
        if reason:
            skipped[spec.name] = {"skipped": reason}
            continue
        if "chosen" not in frame.columns:
            raise DlmaError(f"agreement set '{spec.name}' ({spec.source}) has no chosen/rejected fields; map them with its columns")
        frame = frame.head(params.limit) if params.limit else frame
        identical = frame.filter(pl.col("chosen") == pl.col("rejected")).height
        if identical == frame.height:
            raise DlmaError(f"agreement set '{spec.name}' ({spec.source}): chosen equals rejected in all {identical} rows; "
                            "there is nothing to agree with")
        if identical:
            log.warning("agreement set %s: dropped %d pair(s) whose chosen equals rejected", spec.name, identical)
        loaded[spec.name] = (frame.filter(pl.col("chosen") != pl.col("rejected")), identical)
    return loaded, skipped


def evaluation_prompts(params: EvaluateParams) -> set[str]:
    """Every prompt that evaluate judges from its configured sets (as capped by
    evaluate.limit): training data that contains one would leak into the checks."""
    found: set[str] = set()
    for frame, _ in agreement_sets(params)[0].values():
        found.update(frame["prompt"].to_list())
    for spec in params.prompt_sets:
        records, reason = _load(spec, "prompts", {})
        if records is not None:
            found.update((records.head(params.limit) if params.limit else records)["prompt"].to_list())
    return found
