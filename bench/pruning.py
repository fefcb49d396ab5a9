"""10. Pruning: what the median stopping rule saves on sweeps of known quality, and what it costs.

Simulated sweeps (no processes: nbrunner.pruning's pure rule over synthetic curves, seeded,
so the figures are exact and repeatable): each run's metric (maximized) rises as
`q · (1 − exp(−(t+1)/τ))` plus Gaussian noise, with its quality q and speed τ drawn per run,
so slow starters that end best cross faster ones. The sweep's runs start in order as slots
free up (a machine-wide limit) or all at once; every run is judged at each step it reports,
against every other run of the sweep that has been as far (running, ended or pruned), as the
service does. A pruned run frees its slot at once.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from nbrunner.pruning import PruneRule, judge

from .context import Context
from .harness import Section, Target

RUNS = 12
STEPS = 50
NOISE = 0.01
LONG_GRACE = 25  # half the run: the remedy for slow starters, at its price
BEST_STOPPED_TARGET = 5.0  # % of sweeps, at most, with clear poor runs among good ones


@dataclass(frozen=True)
class Mix:
    """How many runs are poor, their quality range and the others'; and whether the best
    run is a late bloomer (the slowest start of all, the highest end)."""

    poor: int
    poor_quality: tuple[float, float]
    good_quality: tuple[float, float]
    late_bloomer: bool = False


MIXES = {
    "a few poor (2 of 12)": Mix(2, (0.2, 0.5), (0.8, 0.9)),
    "half poor (6 of 12)": Mix(6, (0.2, 0.5), (0.8, 0.9)),
    "all close (0.85–0.9)": Mix(0, (0.0, 0.0), (0.85, 0.9)),
    "the best starts slowest": Mix(0, (0.0, 0.0), (0.8, 0.85), late_bloomer=True),
}


@dataclass(frozen=True)
class Outcome:
    steps_run: int
    steps_full: int
    best_stopped: bool


def curves(mix: Mix, seed: int) -> list[list[tuple[float, float]]]:
    """One sweep's runs' full curves, (step, value) each, and nothing random elsewhere."""
    rng = random.Random(seed)
    made = []
    for index in range(RUNS):
        quality = rng.uniform(*(mix.poor_quality if index < mix.poor else mix.good_quality))
        speed = rng.uniform(5, 25)
        if mix.late_bloomer:  # quick starters, and one that starts slowest and ends best
            quality, speed = (1.2, 30.0) if index == 0 else (quality, rng.uniform(3, 8))
        made.append(
            [
                (float(t), quality * (1 - math.exp(-(t + 1) / speed)) + rng.gauss(0, NOISE))
                for t in range(STEPS)
            ]
        )
    rng.shuffle(made)  # poor runs anywhere in the queue
    return made


def simulate(full: list[list[tuple[float, float]]], rule: PruneRule, slots: int) -> Outcome:
    """Run the sweep step by step with `slots` at a time; which runs the rule stops."""
    shown = [0] * len(full)  # points each run has reported so far
    waiting, running, pruned = list(range(len(full))), [], set()
    while waiting or running:
        while waiting and len(running) < slots:
            running.append(waiting.pop(0))
        for run in running:
            shown[run] += 1
        for run in list(running):
            peers = [full[p][: shown[p]] for p in range(len(full)) if p != run and shown[p]]
            if judge(rule, full[run][: shown[run]], peers) is not None:
                pruned.add(run)
                running.remove(run)
            elif shown[run] == STEPS:
                running.remove(run)
    best = max(range(len(full)), key=lambda r: full[r][-1][1])
    return Outcome(sum(shown), STEPS * len(full), best in pruned)


def run(ctx: Context) -> Section:
    sweeps = ctx.size(100, 10)
    rule = PruneRule("acc", "max")  # the defaults: grace 5 steps, 3 peers at least
    long_grace = PruneRule.parse(rule, grace=LONG_GRACE)
    section = Section(
        "pruning",
        "10. Pruning: steps saved, best runs lost",
        f"{sweeps} simulated sweeps per mix of {RUNS} runs × {STEPS} steps, pruned by "
        f"`--prune acc:max` with the default grace ({rule.grace} steps) and fewest peers "
        f"({rule.min_peers}). *Saved*: the share of the sweep's steps its pruned runs did "
        "not run (mean over the sweeps). *Best stopped*: the share of sweeps whose best run "
        "(highest final value) was pruned. *4 slots*: the runs wait behind a limit of 4 and "
        "are judged against those before them; *all at once*: all 12 start together; "
        f"*grace {LONG_GRACE}*: no run is judged before step {LONG_GRACE}.",
    )
    for name, mix in MIXES.items():
        saved = section.figure(f"steps saved, {name}", "%", higher_is_better=True)
        lost = section.figure(f"best run stopped, {name}", "%")
        for variant, slots, judged in (
            ("4 slots", 4, rule),
            ("all at once", RUNS, rule),
            (f"4 slots, grace {LONG_GRACE}", 4, long_grace),
        ):
            outcomes = [simulate(curves(mix, seed), judged, slots) for seed in range(sweeps)]
            saved.add(variant, 100 * sum(1 - o.steps_run / o.steps_full for o in outcomes) / sweeps)
            lost.add(variant, 100 * sum(o.best_stopped for o in outcomes) / sweeps)
        saved.subject = lost.subject = "4 slots"
        if mix.poor:
            stopped = lost.median("4 slots")
            section.targets.append(
                Target(
                    f"{name}: the best run is stopped in ≤ {BEST_STOPPED_TARGET:g} % of sweeps",
                    f"{stopped:.1f} %, saving {saved.median('4 slots'):.0f} % of steps",
                    stopped <= BEST_STOPPED_TARGET,
                    "",
                )
            )
    section.notes.append(
        "The median stopping rule judges a run by how far it has come, so a run that starts "
        "slowest and ends best (the last mix) is at risk: a longer grace "
        "(`--prune-grace`) is the remedy when slow starters are expected."
    )
    section.notes.append(
        "The same rule runs in the service on real runs: tests/test_pruning.py sweeps real "
        "runs that report through `nbrunner.report`, queued behind a limit, and checks the "
        "poor one ends `pruned` while the one ahead runs on."
    )
    return section
