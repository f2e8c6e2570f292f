"""What one run measures and how, as a plain value: built from the command line by
:mod:`perf.options`, and sent to the A/B workers (:mod:`perf.worker`), which may run under another
environment's Python without pytest."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from .timing import Budget

if TYPE_CHECKING:
    from .stages import Recipe


@dataclasses.dataclass(frozen=True)
class Settings:
    pipeline: str  # an embedded pipeline's name, or "model" for --perf-model
    model: Path | None
    stages: list[str]
    steps: int
    size: int
    batch: int
    budget: Budget
    report: Path | None
    count_flops: bool
    #: The faults injected on purpose, by name (``{"inject_step_delay": 0.1}``): what ``-p perf.inject``
    #: fills from its ``--perf-inject-*`` options and alone reads (:mod:`perf.inject`). The rest of
    #: the suite only asks whether there are any: such a run is never saved, nor read as a baseline.
    faults: dict = dataclasses.field(default_factory=dict)
    reference_python: str | None = None  # A/B runs: the reference environment's interpreter
    worker_timeout: float = 60.0  # A/B runs: the least seconds a worker has to answer a request
    affinity: tuple[int, ...] = ()  # A/B runs: the CPUs both workers' main threads are pinned to; (): not pinned
    host_drift: float | None = None
    allow_uncompared: bool = False
    family: str = "sd"  # the pipeline's model family (perf.stages.FAMILIES): which ladder applies
    threads: int | None = None  # torch intra-op threads of the timed process; None: torch's default
    threads_given: bool = False  # --perf-threads was typed: A/B workers use it too
    compile_cache: Path | None = None  # folder of the compile cache (perf.compile_cache; CUDA); None: off

    def recipe(self, stage: str) -> Recipe:
        """The stage's recipe for this run's pipeline family."""
        from . import stages

        return stages.recipe(stage, self.family)

    def skip_reason(self, stage: str) -> str | None:
        """Why the stage cannot run in this run: not for this pipeline's family, or not on this machine."""
        from . import requirements, stages

        return (stages.not_applicable(stage, self.family) or requirements.skip_reason(self.recipe(stage))
                or self._memory_skip(stage))

    def _memory_skip(self, stage: str) -> str | None:
        """A stage of an embedded pipeline, at its default size and batch, on a GPU too small for it."""
        from . import pipelines, requirements

        spec = pipelines.SPECS.get(self.pipeline) if self.model is None else None
        if spec is None or (self.size, self.batch) != (spec.size, spec.batch):
            return None
        return requirements.memory_skip(self.pipeline, stage, requirements.card_gib())

    @property
    def injecting(self) -> bool:
        """Whether a fault is injected on purpose: such a run is never saved, nor read as a baseline."""
        return bool(self.injected())

    def injected(self) -> dict:
        """The faults injected on purpose, as stored in the run's JSON (which side of an A/B run they
        act on is where they go, not a fault)."""
        return {name: value for name, value in self.faults.items() if value and name != "inject_side"}

    def without_faults(self) -> "Settings":
        """The same run with no injected fault: what A/B workers and the reference images build from."""
        return dataclasses.replace(self, faults={}, count_flops=False)

    @property
    def label(self) -> str:
        return self.pipeline if self.model is None else f"model:{self.model.name}"

    def describe(self) -> dict:
        """The run settings as saved in the JSON (``diffusers_perf.settings``)."""
        return {"pipeline": self.label, "steps": self.steps, "size": self.size, "batch": self.batch,
                "stages": self.stages, "gpu_rounds": self.budget.gpu_rounds, "threads": self.threads}

    def to_json(self) -> dict:
        """The settings a worker needs, as JSON (the report path stays with the parent)."""
        data = dataclasses.asdict(self)
        data.update(model=None if self.model is None else str(self.model), report=None,
                    compile_cache=None if self.compile_cache is None else str(self.compile_cache))
        return data

    @classmethod
    def from_json(cls, data: dict) -> "Settings":
        data = dict(data)
        data["budget"] = Budget(**data["budget"])
        data["affinity"] = tuple(data.get("affinity") or ())
        data["model"] = None if data["model"] is None else Path(data["model"])
        data["compile_cache"] = None if data.get("compile_cache") is None else Path(data["compile_cache"])
        return cls(**data)
