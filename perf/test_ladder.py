"""The ladder: one benchmark row per optimization stage declared in ``perf/stages.py``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from perf.fixtures import BuiltStage


def test_generate(benchmark: Any, perf_stage: BuiltStage) -> None:
    """Fixed-seed generation of the guide's prompt, timed, then checked for black or NaN images."""
    perf_stage.measure(benchmark)
