"""diffusers-perf: a performance-regression suite for Diffusers inference, on pytest-benchmark.

Where things are:

* ``stages.py``        the ladder: add a stage here, in a few lines
* ``optimizations.py`` what each recipe field does to a pipeline
* ``requirements.py``  why a stage skips on this machine
* ``pipelines.py``     embedded pipelines (sd15, tiny) and ``--perf-model`` loading
* ``runner.py``        builds and measures one stage; ``fixtures.py`` and ``test_ladder.py`` drive it
* ``timing.py``        synchronize, warm up, size the rounds
* ``guards.py``        black / NaN / flat image guard
* ``flops.py``         FLOPs per generation and the device's measured peak
* ``baselines.py``     hardware key, reading and atomic writing of baselines
* ``gate.py``          per-stage thresholds, rank test, bootstrap, verdicts
* ``report.py``        the table, in the terminal, Markdown and the GitHub job summary
* ``options.py``, ``plugin.py``  command-line options and pytest hooks
"""

__version__ = "0.1.0"
