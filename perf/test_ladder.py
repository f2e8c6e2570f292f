"""The ladder: one benchmark row per optimization stage declared in ``perf/stages.py``."""


def test_generate(benchmark, perf_stage):
    """Fixed-seed generation of the guide's prompt, timed, then checked for black or NaN images."""
    perf_stage.measure(benchmark)

