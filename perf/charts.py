"""Charts of a run: the ladder (latency, speed-up, GPU busy time) and each stage's trend.

Mermaid ``xychart-beta``: plain text that GitHub renders wherever Markdown is shown, the job
summary included, so the charts need no dependency, no image upload and no browser. Each chart
is written beside the Markdown report as a ``.mmd`` file (``perf-report-charts/``) and embedded
in the report itself.

* The **ladder chart** is the guide's table drawn: one bar per stage for its median latency,
  its speed-up over ``fp32`` in the stage's label, and a line for its GPU busy time, so the gap
  between bar and line is the time the GPU waited on the host.
* The **components chart**: per stage, the medians of its rounds' parts (:mod:`perf.steps`): the
  prompt and first step, the denoising steps after it, the VAE decode and postprocessing.
* The **GPU components chart**: per stage, the GPU busy time of each pipeline component
  (:mod:`perf.components`): text encoders, denoiser, VAE decode, the rest.
* A **trend chart** per stage: its median in every stored run of this hardware that measured it
  the same way (:func:`perf.baselines.trend`), oldest first, then this run.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class Chart:
    name: str  # file stem, e.g. "ladder" or "trend-fp32"
    title: str
    mermaid: str


def _label(text: str) -> str:
    return '"' + text.replace('"', "'") + '"'


def _axis_max(values: list[float]) -> float:
    top = max(values) * 1.1
    digits = 3 if top < 1 else 2 if top < 10 else 1
    return round(top, digits) or 1.0


def ladder(stages: list[tuple[str, float, float | None]], title: str, root: str = "fp32") -> Chart | None:
    """``stages``: (name, median seconds, GPU busy seconds or None) in ladder order; speed-ups over ``root``."""
    measured = [(name, median, gpu) for name, median, gpu in stages if median]
    if not measured:
        return None
    reference = next((median for name, median, _ in measured if name == root), None)
    labels = [f"{name} {reference / median:.2f}x" if reference else name for name, median, _ in measured]
    medians = [median for _, median, _ in measured]
    lines = ["xychart-beta", f"    title {_label(title)}",
             f"    x-axis [{', '.join(map(_label, labels))}]",
             f'    y-axis "seconds per image" 0 --> {_axis_max(medians)}',
             f"    bar [{', '.join(f'{m:.3f}' for m in medians)}]"]
    gpu = [g for _, _, g in measured]
    drawn = "median latency"
    if all(g is not None for g in gpu):
        lines.append(f"    line [{', '.join(f'{g:.3f}' for g in gpu)}]")
        drawn = "median latency (bars) and GPU busy time (line)"
    speedup = f"; labels give the speed-up over {root}" if reference else ""
    return Chart("ladder", f"Ladder: {drawn}{speedup}", "\n".join(lines) + "\n")


def components(stages: list[tuple[str, float, float, float]], title: str) -> Chart | None:
    """``stages``: (name, first, denoising, after) in seconds, medians of each timed round's parts
    (:mod:`perf.steps`): one line per part, so a reader sees where each stage's time goes."""
    if not stages:
        return None
    top = _axis_max([max(first, denoising, after) for _, first, denoising, after in stages])
    lines = ["xychart-beta", f"    title {_label(title)}",
             f"    x-axis [{', '.join(_label(name) for name, *_ in stages)}]",
             f'    y-axis "seconds per image" 0 --> {top}']
    for index in (1, 2, 3):
        lines.append(f"    line [{', '.join(f'{row[index]:.4f}' for row in stages)}]")
    return Chart("components", "Where the time goes: the denoising steps (highest line, in most stages), "
                               "the prompt and first step, the VAE decode and postprocessing", "\n".join(lines) + "\n")


def gpu_components(stages: list[tuple[str, dict[str, float]]], names: list[tuple[str, str]], title: str) -> Chart | None:
    """``stages``: (name, GPU seconds per component) in ladder order; ``names``: (component, label)
    in the order drawn. One line per component (:mod:`perf.components`), so a reader sees which
    component a stage's recipe made faster, and which it left alone."""
    stages = [(name, parts) for name, parts in stages if parts]
    if not stages or not names:
        return None
    top = _axis_max([max(parts.values()) for _, parts in stages])
    lines = ["xychart-beta", f"    title {_label(title)}",
             f"    x-axis [{', '.join(_label(name) for name, _ in stages)}]",
             f'    y-axis "GPU seconds per image" 0 --> {top}']
    for component, _ in names:
        lines.append(f"    line [{', '.join(f'{parts.get(component, 0.0):.4f}' for _, parts in stages)}]")
    order = ", ".join(label for _, label in names)
    return Chart("gpu-components", f"GPU time per component, one line each: {order}", "\n".join(lines) + "\n")


def trend(stage: str, points: list[tuple[str, float]]) -> Chart | None:
    """``points``: (run label, median seconds), oldest first, this run last."""
    if len(points) < 2:
        return None
    values = [value for _, value in points]
    lines = ["xychart-beta", f"    title {_label(f'{stage}: median latency per run')}",
             f"    x-axis [{', '.join(_label(label) for label, _ in points)}]",
             f'    y-axis "seconds per image" 0 --> {_axis_max(values)}',
             f"    line [{', '.join(f'{v:.4f}' for v in values)}]"]
    return Chart(f"trend-{stage}", f"{stage} across runs", "\n".join(lines) + "\n")


def folder_for(report: Path) -> Path:
    """Where the chart files of ``--perf-report`` go: ``perf-report.md`` -> ``perf-report-charts/``."""
    return report.with_name(f"{report.stem}-charts")


def write(charts: list[Chart], folder: Path) -> list[Path]:
    """One ``.mmd`` file per chart; replaces the files of an earlier report in the same folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.mmd"):
        old.unlink()
    paths = []
    for chart in charts:
        path = folder / f"{chart.name}.mmd"
        path.write_text(chart.mermaid, encoding="utf-8")
        paths.append(path)
    return paths


def markdown(charts: list[Chart]) -> str:
    """The charts as Markdown: the ladder in the open, the trends folded under ``<details>``."""
    if not charts:
        return ""
    parts = ["### Charts", ""]
    for chart in charts:
        block = [f"**{chart.title}**", "", "```mermaid", chart.mermaid.rstrip(), "```", ""]
        if chart.name.startswith("trend-"):
            block = ["<details>", f"<summary>{chart.title}</summary>", "", *block, "</details>", ""]
        parts.extend(block)
    return "\n".join(parts)
