"""A/B in one job: collected only with --perf-reference-python (:mod:`perf.ab`)."""


def test_ab(perf_ab_stage):
    """This environment against the reference interpreter, rounds alternating on one device."""
    perf_ab_stage.compare()
