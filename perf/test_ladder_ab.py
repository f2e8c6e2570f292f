"""A/B in one job: collected only with --perf-reference-python (:mod:`perf.ab`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from perf.fixtures import ABStage


def test_ab(perf_ab_stage: ABStage) -> None:
    """This environment against the reference interpreter, rounds alternating on one device."""
    perf_ab_stage.compare()
