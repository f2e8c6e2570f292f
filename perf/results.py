"""What one stage produced, whatever happened to it: the type the gate, the report and the
stored runs share. It imports neither torch nor pytest, so that judging stored runs again
(``python -m perf.compare``) works on a machine that has neither."""

from __future__ import annotations

import dataclasses
import statistics
from typing import Any


@dataclasses.dataclass
class StageResult:
    """What the report and the gate need of one stage, whatever happened to it."""

    stage: str
    outcome: str  # "passed" | "failed" | "skipped"
    message: str = ""
    rounds: list[float] = dataclasses.field(default_factory=list)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def median(self) -> float | None:
        return statistics.median(self.rounds) if self.rounds else None
