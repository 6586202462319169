"""`dlma rounds-study`: the rounds pooled over seeds (dlma.rounds.study).

    dlma rounds-study --run 0=../seed0 --run 1=../seed1 --rounds 3

copies each seed's per-round evaluation tables (from a workspace where that seed's multi-round
pipeline ran: `dvc exp apply <experiment>` puts an experiment's outputs there) into
reports/rounds_study/seed<s>/, then writes reports/rounds_study/study.json, the report
reports/rounds_study.md and reports/figures/rounds_study.png. `--control NAME:SEED=WORKSPACE`
adds a one-round control (e.g. one round trained as many steps as the rounds together),
compared with each round on the same prompts. `--variant NAME:SEED=WORKSPACE` adds the same
seed's rounds run with other `rounds.*` settings (`-S rounds.reference=previous`), each round
compared with the study's. Without --run, --control and --variant it recomputes everything
from the copies already in reports/rounds_study/.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import typer

from dlma.core.errors import DlmaError
from dlma.core.io import atomic_path, write_json
from dlma.core.stage import stage_entry
from dlma.rounds.study import collect, collect_control, collect_variant, figure, markdown, summarize

log = logging.getLogger(__name__)


def parse_runs(runs: list[str]) -> dict[int, Path]:
    parsed = {}
    for entry in runs:
        seed, sep, workspace = entry.partition("=")
        if not sep or not seed.strip().isdigit() or not workspace:
            raise DlmaError(f"--run '{entry}': expected SEED=WORKSPACE, e.g. --run 1=../clone-seed1")
        if int(seed) in parsed:
            raise DlmaError(f"--run: seed {seed} given twice")
        parsed[int(seed)] = Path(workspace)
    return parsed


def parse_named(option: str, entries: list[str], example: str) -> list[tuple[str, int, Path]]:
    parsed = []
    for entry in entries:
        name, sep, rest = entry.partition(":")
        if not sep:
            raise DlmaError(f"{option} '{entry}': expected NAME:SEED=WORKSPACE, e.g. {option} {example}")
        parsed += [(name, seed, workspace) for seed, workspace in parse_runs([rest]).items()]
    return parsed


@stage_entry
def main(
    run: list[str] = typer.Option([], "--run", help="SEED=WORKSPACE: a workspace holding that seed's rounds; repeat per seed"),
    control: list[str] = typer.Option([], "--control", help="NAME:SEED=WORKSPACE: a one-round control run of that seed "
                                      "(e.g. trained as many steps as the rounds together); repeat per control and seed"),
    variant: list[str] = typer.Option([], "--variant", help="NAME:SEED=WORKSPACE: that seed's rounds with other rounds.* "
                                      "settings (e.g. rounds.reference=previous); repeat per variant and seed"),
    rounds: int = typer.Option(3, help="rounds to collect from each workspace"),
    out: Path = typer.Option(Path("reports/rounds_study"), help="folder of the copied tables and study.json"),
    report: Path = typer.Option(Path("reports/rounds_study.md"), help="output: the study (Markdown)"),
    figure_path: Path = typer.Option(Path("reports/figures/rounds_study.png"), "--figure", help="output: figure (PNG)"),
    title: str = typer.Option("Rounds on the controlled task, pooled over seeds", help="the report's title"),
    samples: int = typer.Option(2000, help="bootstrap resamples"),
) -> None:
    """Pool the rounds of several seeds: does round k add to round k-1 (paired, with intervals)?"""
    if run:
        copied = collect(parse_runs(run), rounds, out)
        log.info("rounds-study: copied %d files into %s", len(copied), out)
    for name, seed, workspace in parse_named("--control", control, "epochs3:0=../clone-control"):
        collect_control(name, seed, workspace, out)
    for name, seed, workspace in parse_named("--variant", variant, "refprev:0=../clone-refprev"):
        collect_variant(name, seed, workspace, rounds, out)
    summary = summarize(out, samples=samples)
    write_json(summary, out / "study.json")
    link = os.path.relpath(figure_path.resolve(), report.resolve().parent)  # the figure as the report links it
    with atomic_path(report) as tmp:
        tmp.write_text(markdown(summary, title=title, figure=link))
    figure(summary, figure_path)
    log.info("rounds-study: %d seed(s), rounds %s -> %s", len(summary["seeds"]), summary["rounds"], report)
