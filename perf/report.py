"""The end-of-run report: the guide's table, extended, in the terminal and as Markdown.

Columns: stage, median latency, speed-up over ``fp32``, seconds per step, GPU busy time and
its share of the latency (low: the stage is host-bound), peak GPU memory, share of the device's
measured matmul peak, PSNR of its images against the family's reference stage (:mod:`perf.quality`;
"=" identical, its floor in brackets where declared), the baseline's median, the changes in latency (of the fastest round, what
the first of the gate's :data:`perf.gate.WALL_STATISTICS`) and GPU time (of the median), the
thresholds they were judged by, and the verdict. "cost s" is the stage's own wall time (build,
FLOPs, warm-up and compile, timed, profiled and counted rounds); the session's line under the
table says where the whole run's time went. The Markdown goes to ``--perf-report`` and,
in GitHub Actions, to the job summary. :func:`final_line` is the last line of the output.
"""

from __future__ import annotations

import os
from pathlib import Path

from . import quality

HEADERS = ("stage", "median s", "speed-up", "s/step", "GPU s", "GPU busy", "peak GiB", "% of peak", "PSNR dB",
           "rounds", "cost s", "baseline s", "change", "GPU change", "threshold", "verdict")


def rows(verdicts, results, root: str = "fp32") -> list[tuple[str, ...]]:
    """One row per stage; speed-ups are over ``root``, the ladder's first stage (Flux's is bf16)."""
    reference = results.get(root)
    reference = reference.median if reference is not None and reference.outcome == "passed" else None
    table = []
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


def _psnr(extra: dict) -> str:
    """PSNR against the reference stage: "=" where identical, the floor in brackets where declared."""
    similar = quality.stored(extra)
    if similar is None:
        return ""
    floor = extra["quality"].get("min_psnr_db")
    return ("=" if similar.identical else f"{similar.psnr_db:.1f}") + (f" (>{floor:g})" if floor is not None else "")


def _num(value, fmt: str) -> str:
    return "" if value is None else fmt.format(value)


#: A wall-time threshold this wide means the host drifts more than most regressions: said, not hidden.
WALL_TIME_HOPELESS = 0.5


def _notes(verdicts, missing, context, skipped: bool = True) -> list[str]:
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


def terminal(verdicts, results, missing, context, write_line, root: str = "fp32") -> None:
    _table([HEADERS] + rows(verdicts, results, root), write_line)
    for note in _notes(verdicts, missing, context, skipped=False):
        write_line(f"  {note}")


def _table(table, write_line) -> None:
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for index, row in enumerate(table):
        write_line("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
        if index == 0:
            write_line("  ".join("-" * width for width in widths))


def _markdown_table(headers, table) -> list[str]:
    return (["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
            + ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in table])


def markdown(title: str, verdicts, results, missing, context, root: str = "fp32") -> str:
    lines = [f"## {title}", "", *_markdown_table(HEADERS, rows(verdicts, results, root))]
    legend = ("cost: the stage's own wall time, every phase; change: of the fastest round for wall time, "
              "of the median for GPU time; "
              "threshold: the smallest slowdown the gate fails for this stage here, "
              "wall time / GPU time (from the stage's floor and its measured noise)")
    notes = _notes(verdicts, missing, context)
    lines += ["", f"_{legend}_"]
    if notes:
        lines.append("")
        lines.extend(f"- {note}" for note in notes)
    return "\n".join(lines) + "\n"


def _compared_parts(verdicts, allow_uncompared: bool) -> list[str]:
    """How many stages were compared or regressed, and which could not be compared."""
    regressed = [v for v in verdicts if v.status == "REGRESSION"]
    uncompared = [v for v in verdicts if v.status == "not compared"]
    if regressed:
        named = ", ".join(v.headline for v in regressed[:3]) + (", ..." if len(regressed) > 3 else "")
        parts = [f"{len(regressed)} of {len(verdicts)} stages regressed ({named})"]
    else:
        parts = [f"{sum(v.compared for v in verdicts)} of {len(verdicts)} stages compared, none regressed"]
    if uncompared:
        allowed = " (allowed by --perf-allow-uncompared)" if allow_uncompared else ""
        parts.append(f"{len(uncompared)} not compared{allowed}: {', '.join(v.stage for v in uncompared)}")
    return parts


def _failed_part(verdicts) -> list[str]:
    broken = [v for v in verdicts if v.status == "failed"]
    return [f"{len(broken)} failed: {', '.join(v.stage for v in broken)}"] if broken else []


def final_line(verdicts, policy, baseline_names: list[str], saved: list[Path], save_note: str = "",
               save_failed: bool = False, ab_verdicts=(), reference: str = "") -> tuple[str, bool]:
    """The run's verdict in one line, and whether it fails the build.

    ``diffusers-perf: FAIL, 1 of 2 stages regressed (fp32 latency +27.3% > threshold 15.0%) vs 0002_b.json``

    With A/B stages (``ab_verdicts``, against the interpreter ``reference``) their verdict follows
    after ``; A/B: ``; a run of A/B stages alone says only that.
    """
    failed = any(v.failing for v in list(verdicts) + list(ab_verdicts)) or save_failed
    sections = []
    if verdicts:
        if policy.compare:
            parts = _compared_parts(verdicts, policy.allow_uncompared)
        else:
            measured = [v for v in verdicts if v.status not in ("skipped", "failed")]
            parts = [f"{len(measured)} of {len(verdicts)} stages measured, not compared (no --benchmark-compare)"]
        parts += _failed_part(verdicts)
        skipped = [v for v in verdicts if v.status == "skipped"]
        if skipped:
            parts.append(f"{len(skipped)} skipped")
        if saved:
            parts.append("saved " + ", ".join(path.name for path in saved))
        elif save_note:
            parts.append(save_note)
        section = "; ".join(parts)
        if policy.compare and baseline_names:
            section += " vs " + ", ".join(baseline_names)
        sections.append(section)
    if ab_verdicts:
        parts = _compared_parts(ab_verdicts, policy.allow_uncompared)
        faster = [v for v in ab_verdicts if v.status == "faster"]
        if faster:
            parts[0] += f", {len(faster)} faster ({', '.join(v.stage for v in faster)})"
        sections.append("A/B: " + "; ".join(parts + _failed_part(ab_verdicts)) + f" vs {reference}")
    return f"diffusers-perf: {'FAIL' if failed else 'PASS'}, " + "; ".join(sections), failed


def write(text: str, path: Path) -> list[Path]:
    """Write the report file, and append to ``$GITHUB_STEP_SUMMARY`` when GitHub Actions sets it."""
    written = []
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a", encoding="utf-8") as handle:
            handle.write(text + "\n")
        written.append(Path(summary))
    return written


# -- A/B ------------------------------------------------------------------------------------------

AB_HEADERS = ("stage", "candidate s", "reference s", "pairs", "candidate/reference", "95% CI", "p", "threshold",
              "GPU change", "verdict")


def ab_rows(verdicts, session) -> list[tuple[str, ...]]:
    table = []
    for verdict in verdicts:
        result = session.results.get(verdict.stage)
        cand = result.candidate if result else None
        ref = result.reference if result else None
        latency = verdict.latency
        table.append((
            verdict.stage,
            _num(cand.median if cand else None, "{:.3f}"),
            _num(ref.median if ref else None, "{:.3f}"),
            str(len(result.ratios)) if result and result.ratios else "",
            _num(latency.ratio if latency else None, "{:.3f}"),
            f"{latency.ci[0]:.3f}-{latency.ci[1]:.3f}" if latency else "",
            f"{min(latency.p_slower, latency.p_faster):.2g}" if latency else "",
            _num(latency.threshold * 100 if latency else None, "+{:.1f}%"),
            "" if verdict.gpu is None else f"{(verdict.gpu.ratio - 1) * 100:+.1f}%",
            verdict.status,
        ))
    return table


def ab_sides(session) -> list[str]:
    """Each side's interpreter and versions: what the comparison was between."""
    lines = []
    for side in ("candidate", "reference"):
        soft = session.software.get(side) or {}
        versions = ", ".join(f"{k} {v}" for k, v in soft.items() if v and k in ("python", "torch", "diffusers",
                                                                            "transformers", "cuda"))
        lines.append(f"{side}: {session.pythons[side]}" + (f" ({versions})" if versions else ""))
    return lines


def _ab_notes(verdicts) -> list[str]:
    return [f"{v.stage}: {v.status} — {v.detail}" for v in verdicts
            if v.detail and (v.status not in ("ok",) or v.counter_changes)]


AB_LEGEND = ("candidate/reference: median of the ratios of adjacent rounds (A B B A ...); threshold: the "
             "smallest slowdown the A/B gate fails for this stage here, from the pairs' own spread")


def ab_terminal(verdicts, session, write_line) -> None:
    write_line("")
    write_line("A/B, rounds alternating on this device:")
    _table([AB_HEADERS] + ab_rows(verdicts, session), write_line)
    for note in ab_sides(session) + _ab_notes(verdicts):
        write_line(f"  {note}")


def ab_markdown(verdicts, session) -> str:
    lines = ["## A/B: candidate against reference, rounds alternating on one device", "",
             *_markdown_table(AB_HEADERS, ab_rows(verdicts, session)), "", f"_{AB_LEGEND}_", ""]
    lines.extend(f"- {note}" for note in ab_sides(session) + _ab_notes(verdicts))
    return "\n".join(lines) + "\n"


def ab_json(verdicts, session) -> dict:
    """The A/B part of the JSON: every round of both sides, so the verdict can be checked."""
    out = {"sides": {side: {"python": session.pythons[side], "software": session.software.get(side) or {}}
                     for side in ("candidate", "reference")}, "stages": {}}
    for verdict in verdicts:
        result = session.results.get(verdict.stage)
        entry = {"status": verdict.status, "detail": verdict.detail}
        if verdict.latency is not None:
            entry.update(ratio=verdict.latency.ratio, threshold=verdict.latency.threshold,
                         p_slower=verdict.latency.p_slower, p_faster=verdict.latency.p_faster,
                         ci=list(verdict.latency.ci))
        if result is not None:
            entry["ratios"] = result.ratios
            for side in ("candidate", "reference"):
                data = getattr(result, side)
                if data is not None:
                    entry[side] = {"rounds": data.rounds, "warmup_seconds": data.warmup_seconds,
                                   "gpu_seconds": data.gpu_seconds, "counters": data.counters,
                                   "peak_memory_bytes": data.peak_memory_bytes,
                                   "startup_seconds": data.startup_seconds}
        out["stages"][verdict.stage] = entry
    return out
