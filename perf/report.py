"""The end-of-run report: the guide's table, extended, in the terminal and as Markdown.

Columns: stage, median latency, speed-up over ``fp32``, seconds per step, GPU busy time and
its share of the latency (low: the stage is host-bound), peak GPU memory, share of the device's
measured matmul peak, PSNR of its images against the family's reference stage (:mod:`perf.quality`;
"=" identical, its floor in brackets where declared), the baseline's median, the changes in latency (of the fastest round, what
the first of the gate's :data:`perf.gate.WALL_STATISTICS`) and GPU time (of the median), the
thresholds they were judged by, and the verdict. "cost s" is the stage's own wall time (build,
FLOPs, warm-up and compile, timed, profiled and counted rounds); the session's line under the
table says where the whole run's time went. The Markdown goes to ``--perf-report`` and,
in GitHub Actions, to the job summary. The last line of the output is :func:`perf.outcome.final`'s.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import gate, quality
from .results import StageResult

if TYPE_CHECKING:
    from .ab import Session

Verdicts = Sequence[gate.Verdict]
Results = Mapping[str, StageResult]
WriteLine = Callable[[str], Any]

HEADERS = ("stage", "median s", "speed-up", "s/step", "GPU s", "GPU busy", "peak GiB", "% of peak", "PSNR dB",
           "rounds", "cost s", "baseline s", "change", "GPU change", "threshold", "verdict")


def rows(verdicts: Verdicts, results: Results, root: str = "fp32") -> list[tuple[str, ...]]:
    """One row per stage; speed-ups are over ``root``, the ladder's first stage (Flux's is bf16)."""
    root_result = results.get(root)
    reference = root_result.median if root_result is not None and root_result.outcome == "passed" else None
    table: list[tuple[str, ...]] = []
    for verdict in verdicts:
        result = results.get(verdict.stage)
        median = result.median if result is not None and result.outcome == "passed" else None
        extra = result.extra if result is not None else {}
        change = "" if verdict.latency is None else f"{(verdict.latency.ratio - 1) * 100:+.1f}%"
        gpu_change = "" if verdict.gpu is None else f"{(verdict.gpu.ratio - 1) * 100:+.1f}%"
        thresholds = [f"{c.threshold * 100:.1f}%" for c in (verdict.latency, verdict.gpu) if c is not None]
        table.append((
            verdict.stage,
            _num(median, "{:.3f}"),
            _num(reference / median if reference and median else None, "{:.2f}x"),
            _num(extra.get("seconds_per_step"), "{:.4f}"),
            _num(extra.get("gpu_median"), "{:.3f}"),
            _num(extra.get("gpu_busy") and 100 * extra["gpu_busy"], "{:.0f}%"),
            _num(extra.get("peak_memory_gib"), "{:.2f}"),
            _num(extra.get("fraction_of_peak") and 100 * extra["fraction_of_peak"], "{:.1f}%"),
            _psnr(extra),
            str(extra.get("rounds", "")),
            _num(extra.get("cost_seconds") and sum(extra["cost_seconds"].values()), "{:.0f}"),
            _num(verdict.baseline_median, "{:.3f}"),
            change,
            gpu_change,
            " / ".join(thresholds),
            verdict.status,
        ))
    return table


STEP_HEADERS = ("stage", "first ms", "step ms (fastest)", "step ms (median)", "loop ms", "after ms", "steps",
                "step change", "step threshold", "loop change", "first change", "after change")


def step_rows(verdicts: Verdicts, results: Results) -> list[tuple[str, ...]]:
    """Where each stage's time goes (:mod:`perf.steps`): medians over its timed rounds of the
    prompt and first step, of each round's fastest and median step, of each step's time outside
    the denoiser ("loop"), and of the VAE decode and postprocessing; the changes against the
    baseline the gate judged them by."""
    table: list[tuple[str, ...]] = []
    for verdict in verdicts:
        result = results.get(verdict.stage)
        timing = (result.extra.get("step_timing") if result is not None else None) or {}
        if result is None or not timing:
            continue
        ms = {field: statistics.median(values) * 1000 for field, values in timing.items() if values}
        changes = {field: f"{(c.ratio - 1) * 100:+.1f}%" for field, c in (verdict.steps or {}).items()}
        step = (verdict.steps or {}).get("step_fastest")
        loop = f"{ms['loop_median']:.2f}" if "loop_median" in ms else ""
        table.append((verdict.stage, f"{ms['first']:.1f}", f"{ms['step_fastest']:.2f}", f"{ms['step_median']:.2f}",
                      loop, f"{ms['after']:.1f}", str(result.extra.get("steps", "")), changes.get("step_fastest", ""),
                      "" if step is None else f"{step.threshold * 100:.1f}%", changes.get("loop_median", ""),
                      changes.get("first", ""), changes.get("after", "")))
    return table


def component_table(verdicts: Verdicts, results: Results) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    """GPU busy ms per pipeline component (:mod:`perf.components`), the median over the profiled
    rounds, with each component's change against the baseline where the gate judged it:
    headers and rows, or no rows where no stage split its GPU time."""
    found = gate.component_order(name for verdict in verdicts
                                 for name in gate.gpu_components(getattr(results.get(verdict.stage), "extra", None)))
    table: list[tuple[str, ...]] = []
    for verdict in verdicts:
        result = results.get(verdict.stage)
        parts = gate.gpu_components(result.extra if result is not None else None)
        if not parts:
            continue
        cells = []
        for name in found:
            values = parts.get(name)
            cell = f"{statistics.median(values) * 1000:.1f}" if values else ""
            comparison = (verdict.components or {}).get(name)
            if comparison is not None and cell:
                cell += f" ({(comparison.ratio - 1) * 100:+.1f}%{' > ' + f'{comparison.threshold * 100:.1f}%' if comparison.regressed else ''})"
            cells.append(cell)
        table.append((verdict.stage, *cells))
    return ("stage", *(f"{gate.component_name(name)} GPU ms" for name in found)), table


def _psnr(extra: Mapping[str, Any]) -> str:
    """PSNR against the reference stage: "=" where identical, the floor in brackets where declared."""
    similar = quality.stored(extra)
    if similar is None:
        return ""
    floor = extra["quality"].get("min_psnr_db")
    return ("=" if similar.identical else f"{similar.psnr_db:.1f}") + (f" (>{floor:g})" if floor is not None else "")


def _num(value: Any, fmt: str) -> str:
    return "" if value is None else fmt.format(value)


#: A wall-time threshold this wide means the host drifts more than most regressions: said, not hidden.
WALL_TIME_HOPELESS = 0.5


def _notes(verdicts: Verdicts, missing: Sequence[str], context: Sequence[str], skipped: bool = True) -> list[str]:
    """Lines under the table; pytest's own summary (``-ra``) already gives skip reasons in the terminal."""
    notes = [f"{v.stage}: {v.status} — {v.detail}" for v in verdicts
             if v.detail and (v.status not in ("ok", "measured") or v.counter_changes)
             and (skipped or v.status != "skipped")]
    blind = [f"{v.stage} ({v.latency.threshold * 100:.0f}%)" for v in verdicts
             if v.latency is not None and v.latency.threshold >= WALL_TIME_HOPELESS]
    if blind:
        notes.append(f"wall time cannot judge {', '.join(blind)} on this host: its drift is wider than most "
                     "host-side regressions, which pass unseen below these thresholds; GPU time and the counters "
                     "still judge these stages")
    if missing:
        notes.append(f"in the baseline but not run: {', '.join(missing)}")
    notes.extend(context)
    return notes


def terminal(verdicts: Verdicts, results: Results, missing: Sequence[str], context: Sequence[str],
             write_line: WriteLine, root: str = "fp32") -> None:
    _table([HEADERS, *rows(verdicts, results, root)], write_line)
    steps = step_rows(verdicts, results)
    if steps:
        write_line("")
        _table([STEP_HEADERS, *steps], write_line)
    headers, parts = component_table(verdicts, results)
    if parts:
        write_line("")
        _table([headers] + parts, write_line)
    for note in _notes(verdicts, missing, context, skipped=False):
        write_line(f"  {note}")


def _table(table: Sequence[Sequence[str]], write_line: WriteLine) -> None:
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for index, row in enumerate(table):
        write_line("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
        if index == 0:
            write_line("  ".join("-" * width for width in widths))


def _markdown_table(headers: Sequence[str], table: Sequence[Sequence[str]]) -> list[str]:
    return (["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
            + ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in table])


def markdown(title: str, verdicts: Verdicts, results: Results, missing: Sequence[str], context: Sequence[str],
             root: str = "fp32") -> str:
    lines = [f"## {title}", "", *_markdown_table(HEADERS, rows(verdicts, results, root))]
    legend = ("cost: the stage's own wall time, every phase; change: of the fastest round for wall time, "
              "of the median for GPU time; "
              "threshold: the smallest slowdown the gate fails for this stage here, "
              "wall time / GPU time (from the stage's floor and its measured noise)")
    notes = _notes(verdicts, missing, context)
    lines += ["", f"_{legend}_"]
    steps = step_rows(verdicts, results)
    if steps:
        lines += ["", "### Where the time goes", "", *_markdown_table(STEP_HEADERS, steps), "",
                  "_first: from the call to the first step's end (prompt encoding, latents, step 1); step: "
                  "each round's fastest and median denoising step; after: from the last step's end to the "
                  "synchronized images (VAE decode, postprocessing); loop: each step's time outside the "
                  "denoiser's call (scheduler, guidance); medians over the timed rounds. The gate judges the "
                  "step on each round's fastest step, over the fastest half of the rounds; a change is blank "
                  "where it is not judged (the loop on CUDA where either run's GPU was busy 40 % or more, on "
                  "CUDA-graph stages, and every step part where the GPU paces the steps)._"]
    headers, parts = component_table(verdicts, results)
    if parts:
        lines += ["", "### GPU time per component", "", *_markdown_table(headers, parts), "",
                  "_GPU busy ms of each component's kernels, copies and memsets (median over the profiled "
                  "rounds), with its change against the baseline; other: the scheduler, guidance, latents "
                  "and postprocessing. The gate judges each component as it judges the whole GPU time._"]
    if notes:
        lines.append("")
        lines.extend(f"- {note}" for note in notes)
    return "\n".join(lines) + "\n"


def write_file(text: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def append_summary(text: str, path: Path) -> None:
    """GitHub Actions' job summary (``$GITHUB_STEP_SUMMARY``), appended to as GitHub asks."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(text + "\n")


# -- A/B ------------------------------------------------------------------------------------------

AB_HEADERS = ("stage", "candidate s", "reference s", "pairs", "candidate/reference", "95% CI", "p", "threshold",
              "step c/r", "step threshold", "GPU change", "verdict")


def ab_rows(verdicts: Verdicts, session: Session) -> list[tuple[str, ...]]:
    table: list[tuple[str, ...]] = []
    for verdict in verdicts:
        result = session.results.get(verdict.stage)
        cand = result.candidate if result else None
        ref = result.reference if result else None
        latency = verdict.latency
        step = (verdict.steps or {}).get("step_fastest")
        table.append((
            verdict.stage,
            _num(cand.median if cand else None, "{:.3f}"),
            _num(ref.median if ref else None, "{:.3f}"),
            str(len(result.ratios)) if result and result.ratios else "",
            _num(latency.ratio if latency else None, "{:.3f}"),
            f"{latency.ci[0]:.3f}-{latency.ci[1]:.3f}" if latency else "",
            f"{min(latency.p_slower, latency.p_faster):.2g}" if latency else "",
            _num(latency.threshold * 100 if latency else None, "+{:.1f}%"),
            _num(step.ratio if step else None, "{:.3f}"),
            _num(step.threshold * 100 if step else None, "+{:.1f}%"),
            "" if verdict.gpu is None else f"{(verdict.gpu.ratio - 1) * 100:+.1f}%",
            verdict.status,
        ))
    return table


def ab_sides(session: Session) -> list[str]:
    """Each side's interpreter and versions: what the comparison was between."""
    lines = []
    for side in ("candidate", "reference"):
        soft = session.software.get(side) or {}
        versions = ", ".join(f"{k} {v}" for k, v in soft.items() if v and k in ("python", "torch", "diffusers",
                                                                            "transformers", "cuda"))
        lines.append(f"{side}: {session.pythons[side]}" + (f" ({versions})" if versions else ""))
    return lines


def _ab_notes(verdicts: Verdicts) -> list[str]:
    return [f"{v.stage}: {v.status} — {v.detail}" for v in verdicts
            if v.detail and (v.status not in ("ok",) or v.counter_changes)]


AB_LEGEND = ("candidate/reference: median of the ratios of adjacent rounds (A B B A ...); threshold: the "
             "smallest slowdown the A/B gate fails for this stage here, from the pairs' own spread")


def ab_terminal(verdicts: Verdicts, session: Session, write_line: WriteLine) -> None:
    write_line("")
    write_line("A/B, rounds alternating on this device:")
    _table([AB_HEADERS, *ab_rows(verdicts, session)], write_line)
    for note in ab_sides(session) + _ab_notes(verdicts):
        write_line(f"  {note}")


def ab_markdown(verdicts: Verdicts, session: Session) -> str:
    lines = ["## A/B: candidate against reference, rounds alternating on one device", "",
             *_markdown_table(AB_HEADERS, ab_rows(verdicts, session)), "", f"_{AB_LEGEND}_", ""]
    lines.extend(f"- {note}" for note in ab_sides(session) + _ab_notes(verdicts))
    return "\n".join(lines) + "\n"


def ab_json(verdicts: Verdicts, session: Session) -> dict:
    """The A/B part of the JSON: every round of both sides, so the verdict can be checked."""
    out = {"sides": {side: {"python": session.pythons[side], "software": session.software.get(side) or {}}
                     for side in ("candidate", "reference")}, "stages": {}}
    for verdict in verdicts:
        result = session.results.get(verdict.stage)
        entry: dict[str, Any] = {"status": verdict.status, "detail": verdict.detail}
        if verdict.latency is not None:
            entry.update(ratio=verdict.latency.ratio, threshold=verdict.latency.threshold,
                         p_slower=verdict.latency.p_slower, p_faster=verdict.latency.p_faster,
                         ci=list(verdict.latency.ci))
        for field, comparison in (verdict.steps or {}).items():
            entry.setdefault("steps", {})[field] = {"ratio": comparison.ratio, "threshold": comparison.threshold,
                                                    "p_slower": comparison.p_slower}
        for name, comparison in (verdict.components or {}).items():
            entry.setdefault("gpu_components", {})[name] = {"ratio": comparison.ratio,
                                                            "threshold": comparison.threshold,
                                                            "p_slower": comparison.p_slower}
        if result is not None:
            entry["ratios"] = result.ratios
            for side in ("candidate", "reference"):
                data = getattr(result, side)
                if data is not None:
                    entry[side] = {"rounds": data.rounds, "warmup_seconds": data.warmup_seconds,
                                   "gpu_seconds": data.gpu_seconds, "gpu_components": data.gpu_components,
                                   "counters": data.counters,
                                   "peak_memory_bytes": data.peak_memory_bytes, "step_timing": data.step_timing,
                                   "startup_seconds": data.startup_seconds, "cpus": data.cpus}
        out["stages"][verdict.stage] = entry
    return out
