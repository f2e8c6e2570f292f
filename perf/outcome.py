"""What each selected stage ended as, and the run's last line, derived from pytest's own outcome.

The gate (:mod:`perf.gate`) judges what the suite measured; only pytest knows what actually
happened to each test: a Ctrl-C in the middle of a stage, an error in a fixture after the stage
was judged, ``--benchmark-skip`` skipping every benchmark, ``--setup-only`` building pipelines
and timing nothing. A last line assembled from the suite's bookkeeping alone said PASS on such
runs. Here every selected stage is *settled* from pytest's reports of its test
(:class:`Record`, filled by ``pytest_runtest_logstart``/``pytest_runtest_logreport``) together
with the gate's verdict, into exactly one :class:`Status`; :func:`final` then derives the line
and the exit status together, so that PASS appears only with exit status 0.

Nothing here imports torch or pytest: ``python -m perf.compare`` uses it on any machine.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:  # gate imports this module: the verdict's type only, never at run time
    from .gate import Verdict


class Status(str, enum.Enum):
    """How one stage ended. A ``str`` so that stored verdicts and reports read the same words."""

    OK = "ok"  # compared, within its thresholds
    FASTER = "faster"  # compared, significantly faster
    REGRESSION = "REGRESSION"  # compared, slower (or hungrier, or worse) beyond a threshold
    MEASURED = "measured"  # timed, with nothing to compare (no --benchmark-compare)
    NOT_TIMED = "not timed"  # generated and checked, not timed (--benchmark-disable)
    NOT_COMPARED = "not compared"  # compare mode, but no baseline could judge it (the reason says why)
    FAILED = "failed"  # pytest's error, or the suite's (build, generation, guard)
    SKIPPED = "skipped"  # with its reason (needs CUDA, --benchmark-skip, ...)
    INTERRUPTED = "interrupted"  # it had started when the run was interrupted
    NOT_RUN = "not run"  # never started: deselected, after -x stopped the run, after an interrupt

    def __str__(self) -> str:
        return self.value


#: The stage was judged against a baseline (or the reference side, in A/B).
COMPARED = (Status.OK, Status.FASTER, Status.REGRESSION)


@dataclasses.dataclass
class Record:
    """pytest's reports of one stage's test: which phases ran and how they ended."""

    started: bool = False  # pytest_runtest_logstart was seen
    phases: dict[str, str] = dataclasses.field(default_factory=dict)  # "setup"/"call"/"teardown" -> outcome
    message: str = ""  # the first failure's or skip's reason, one line

    def add(self, phase: str, outcome: str, message: str) -> None:
        self.phases[phase] = outcome
        if outcome in ("failed", "skipped") and not self.message:
            self.message = first_line(message)

    @property
    def failed(self) -> bool:
        return "failed" in self.phases.values()

    @property
    def skipped(self) -> bool:
        return "skipped" in self.phases.values()


def first_line(text: str) -> str:
    """One line of a pytest message: a skip's reason or the last line of a failure's report."""
    lines = [line.strip() for line in str(text or "").splitlines() if line.strip()]
    if not lines:
        return ""
    errors = [line for line in lines if line.startswith("E ")]
    return (errors[0][1:].strip() if errors else lines[-1])[:500]


def settle(stage: str, verdict: Verdict | None, record: Record | None, interrupted: bool,
           make: Callable[[str, Status, str, bool], Verdict]) -> Verdict:
    """The one verdict a stage ends with: the gate's, unless pytest says something else happened.

    ``make(stage, status, detail, failing)`` builds a verdict (a :class:`perf.gate.Verdict`).
    """
    if record is None or not record.started:
        return make(stage, Status.NOT_RUN, "the run was interrupted before it" if interrupted else
                    "the run stopped before it (-x, --maxfail)", False)
    if record.failed:
        if verdict is not None and verdict.failing:
            return verdict
        return make(stage, Status.FAILED, record.message or "failed in pytest", True)
    if record.skipped:
        return verdict if verdict is not None else make(stage, Status.SKIPPED, record.message, False)
    if "call" not in record.phases:
        if interrupted:
            return make(stage, Status.INTERRUPTED, "interrupted while it ran", True)
        return make(stage, Status.NOT_RUN, "set up, never called (--setup-only or --setup-plan)", False)
    if verdict is None:
        return make(stage, Status.FAILED, "its test passed without the stage being measured", True)
    return verdict


@dataclasses.dataclass
class Run:
    """Everything the last line says, gathered as the session ends."""

    verdicts: Sequence = ()  # settled ladder verdicts, in stage order
    ab_verdicts: Sequence = ()  # settled A/B verdicts
    compare: bool = False
    allow_uncompared: bool = False
    exit_status: int = 0  # pytest's, before the suite's verdict
    interrupted: bool = False
    problems: Sequence[str] = ()  # outputs the user asked for that could not be written, in a few words
    baselines: Sequence[str] = ()  # the stored runs compared with
    saved: Sequence[Path] = ()
    save_note: str = ""  # "not saved", "save failed, run kept in ..."
    reference: str = ""  # the A/B reference interpreter


def final(run: Run) -> tuple[str, int, str]:
    """The last line, the exit status and the line's colour ("green", "red", "yellow"), derived together.

    ``diffusers-perf: FAIL, 1 of 2 stages regressed (fp32 latency +27.3% > threshold 15.0%) vs 0002_b.json``
    """
    everything = list(run.verdicts) + list(run.ab_verdicts)
    failing = any(v.failing for v in everything) or bool(run.problems)
    nothing = _nothing_judged(run, everything)
    sections = []
    if run.verdicts:
        sections.append(_section(run.verdicts, run, ladder=True))
    if run.ab_verdicts:
        sections.append("A/B: " + _section(run.ab_verdicts, run, ladder=False))
    if nothing:
        sections.append(nothing)
    if run.problems:
        sections.append("; ".join(run.problems))
    if run.interrupted:
        head, code = "INTERRUPTED", run.exit_status or 2
    elif failing or (nothing and run.compare) or run.exit_status:
        head, code = "FAIL", run.exit_status or 1
        if not failing and not nothing and run.exit_status:
            sections.append(f"pytest exit status {int(run.exit_status)}")
    elif nothing:
        head, code = "NOTHING MEASURED", 0
    else:
        head, code = "PASS", 0
    colour = {"PASS": "green", "NOTHING MEASURED": "yellow"}.get(head, "red")
    return f"diffusers-perf: {head}, " + "; ".join(sections), int(code), colour


def _nothing_judged(run: Run, everything: list) -> str:
    """Why the run judged nothing at all, or "" if it judged something."""
    if run.compare:
        if any(v.status in COMPARED for v in everything):
            return ""
        if run.allow_uncompared and any(v.status == Status.NOT_COMPARED for v in everything):
            return ""  # timed, and uncompared stages were allowed
        return "nothing was compared"
    if any(v.status in (Status.MEASURED, Status.NOT_TIMED) or v.status in COMPARED for v in everything):
        return ""
    return "nothing was measured"


def _count(verdicts: Sequence[Verdict], *statuses: Status) -> list[Verdict]:
    return [v for v in verdicts if v.status in statuses]


def _section(verdicts: Sequence[Verdict], run: Run, ladder: bool) -> str:
    if run.compare or not ladder:
        parts = _compared_parts(verdicts, run.allow_uncompared)
        faster = _count(verdicts, Status.FASTER)
        if faster and not ladder:
            parts[0] += f", {len(faster)} faster ({', '.join(v.stage for v in faster)})"
    else:
        measured, untimed = _count(verdicts, Status.MEASURED), _count(verdicts, Status.NOT_TIMED)
        parts = [f"{len(measured)} of {len(verdicts)} stages measured, not compared (no --benchmark-compare)"]
        if untimed:
            parts.append(f"{len(untimed)} generated and checked, not timed (--benchmark-disable)")
    for status, label in ((Status.FAILED, "failed"), (Status.INTERRUPTED, "interrupted")):
        found = _count(verdicts, status)
        if found:
            parts.append(f"{len(found)} {label}: {', '.join(v.stage for v in found)}")
    for status, label in ((Status.SKIPPED, "skipped"), (Status.NOT_RUN, "not run")):
        found = _count(verdicts, status)
        if found:
            parts.append(f"{len(found)} {label}")
    if ladder:
        if run.saved:
            parts.append("saved " + ", ".join(Path(path).name for path in run.saved))
        elif run.save_note:
            parts.append(run.save_note)
    section = "; ".join(parts)
    if ladder and run.compare and run.baselines:
        section += " vs " + ", ".join(run.baselines)
    if not ladder and run.reference:
        section += f" vs {run.reference}"
    return section


def _compared_parts(verdicts: Sequence[Verdict], allow_uncompared: bool) -> list[str]:
    """How many stages were compared or regressed, and which could not be compared."""
    regressed = _count(verdicts, Status.REGRESSION)
    uncompared = _count(verdicts, Status.NOT_COMPARED)
    if regressed:
        named = ", ".join(v.headline for v in regressed[:3]) + (", ..." if len(regressed) > 3 else "")
        parts = [f"{len(regressed)} of {len(verdicts)} stages regressed ({named})"]
    else:
        parts = [f"{len(_count(verdicts, *COMPARED))} of {len(verdicts)} stages compared, none regressed"]
    if uncompared:
        allowed = " (allowed by --perf-allow-uncompared)" if allow_uncompared else ""
        parts.append(f"{len(uncompared)} not compared{allowed}: {', '.join(v.stage for v in uncompared)}")
    return parts
