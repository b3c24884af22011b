"""The protocols the claims are judged under, each one entry: the study's own and its arms.

A protocol is an experiment config (``conf/experiment/<experiment>.yaml``, its grid of run ids)
and what the report and ``scripts/run_arms.py`` need to know about it: its names, which other
experiments' records join its speed comparisons, whether its seed blocks are interleaved
(comparisons pair by seed), whether its learning rates come from the lr selection, and how the
arms script runs it. Adding a protocol arm is its experiment yaml plus one entry here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Protocol:
    key: str  # the claims matrix's column and the anchor prefix of its evidence
    experiment: str  # conf/experiment/<experiment>.yaml
    title: str  # its evidence section's heading
    speed_label: str  # its name in the speed tiers' and time-to-target tables
    # The claims' seed-mean checks are judged on its grid (the timed arm only feeds the tiers).
    seed_means: bool = True
    # Experiments whose records join its speed tiers besides its own (the study's sparse reruns).
    also_timed: tuple[str, ...] = ()
    paired: bool = False  # run seed block by seed block: speed comparisons pair by seed
    # Its lrs come from the lr selection: its verdicts wait until the selection is settled and
    # its yaml carries the choices.
    waits_for_lr_selection: bool = False
    # How scripts/run_arms.py runs it: "" (not an arm: `make sweep` runs the study), "sweep"
    # (one Hydra sweep of its grid), "seed blocks" (every optimizer of a seed back to back,
    # dense then with exact sparse rows).
    arm_run: str = "sweep"

    @property
    def experiments(self) -> tuple[str, ...]:
        """Every experiment label whose records its speed tiers read."""
        return (self.experiment, *self.also_timed)


PROTOCOLS: tuple[Protocol, ...] = (
    Protocol("study", "paper", "Study protocol: lr 0.01, dropout 0.5", "study",
             also_timed=("fastest_exact",), arm_run=""),
    Protocol("tuned_lr", "tuned_lr", "Tuned lr: each cell at its dev-chosen lr", "tuned lr",
             waits_for_lr_selection=True),
    Protocol("no_dropout", "no_dropout", "No dropout: lr 0.01, model.dropout=0", "no dropout"),
    Protocol("timed", "timed", "Timed arm: tuned lr, seed blocks interleaved", "timed (tuned lr)",
             seed_means=False, paired=True, arm_run="seed blocks"),
)  # fmt: skip
STUDY = PROTOCOLS[0]


def arms() -> tuple[Protocol, ...]:
    """The protocols scripts/run_arms.py runs, in order."""
    return tuple(p for p in PROTOCOLS if p.arm_run)
