"""The evaluation sets named in params (`evaluate.agreement_sets`, `evaluate.prompt_sets`):
where each one is, and its content identity.

The `sets` stage writes that identity to a file that `evaluate` depends on, so DVC reruns
the evaluation when a set's file changes, even one outside the repository, and a queued
experiment evaluates the very files the workspace does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dlma.core.config import build, read_params_file
from dlma.core.errors import DlmaError
from dlma.core.hashing import file_sha256
from dlma.core.paths import looks_like_path, resolve_source
from dlma.data.identity import source_identity
from dlma.data.params import AgreementSet, PromptSet


@dataclass(frozen=True)
class EvalSets:
    agreement_sets: list[AgreementSet]
    prompt_sets: list[PromptSet]

    @classmethod
    def load(cls, path: str | Path = "params.yaml") -> EvalSets:
        """Only the two set lists of the `evaluate` section (the sets stage needs no more)."""
        section = read_params_file(path).get("evaluate") or {}
        lists = {}
        for key, spec_cls in (("agreement_sets", AgreementSet), ("prompt_sets", PromptSet)):
            entries = section.get(key)
            if not isinstance(entries, list):
                raise DlmaError(f"missing key 'evaluate.{key}' in params.yaml (a list of sets; may be empty)")
            lists[key] = [build(spec_cls, entry, f"evaluate.{key}[{i}]") for i, entry in enumerate(entries)]
        return cls(**lists)


def locate(spec: AgreementSet | PromptSet) -> tuple[str, str | None]:
    """(where to read the set, why it is skipped or None). A missing file is an error
    unless the set is marked optional."""
    source = resolve_source(spec.source)
    if looks_like_path(spec.source) and not Path(source).is_file():
        reason = f"{spec.source} not found" + (f" (resolved to {source})" if source != spec.source else "")
        if not spec.optional:
            raise DlmaError(
                f"evaluation set '{spec.name}': {reason}. Fix its source, or mark it `optional: true` "
                "in params.yaml to report it as skipped"
            )
        return source, reason
    return source, None


def identity(sets: EvalSets) -> dict:
    """Per set: its source as written and the sha256 of its content (no absolute path, so
    the identity is the same in an experiment's copy)."""
    out = {}
    for kind, specs in (("agreement", sets.agreement_sets), ("prompts", sets.prompt_sets)):
        for spec in specs:
            source, skipped = locate(spec)
            entry = {"kind": kind, "source": spec.source}
            if skipped:
                entry["skipped"] = skipped
            elif looks_like_path(spec.source):
                entry["sha256"] = file_sha256(source)
            else:  # a hub data set: the content hash of its copy, rows and revision (as data.source)
                hub = source_identity(spec.source, key=f"evaluation set '{spec.name}'")
                entry |= {key: hub[key] for key in ("split", "sha256", "rows", "revision")}
            out[f"{kind}/{spec.name}"] = entry
    return out
