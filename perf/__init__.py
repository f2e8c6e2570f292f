"""diffusers-perf: a performance-regression suite for Diffusers inference, on pytest-benchmark.

Where things are:

* ``stages.py``        the ladder: add a stage here, in a few lines
* ``optimizations.py`` what each recipe field does to a pipeline
* ``requirements.py``  why a stage skips on this machine
* ``pipelines.py``     embedded pipelines (sd15, tiny) and ``--perf-model`` loading
* ``runner.py``        builds and measures one stage; ``fixtures.py`` and ``test_ladder.py`` drive it
* ``progress.py``      one line per phase of a stage while the run goes (stage i/N, phase, time left)
* ``timing.py``        synchronize, warm up, size the rounds
* ``guards.py``        black / NaN / flat image guard
* ``flops.py``         FLOPs per generation and the device's measured peak
* ``storage.py``       stored runs on disk: the one validator, numbered saves that never overwrite
* ``baselines.py``     hardware key, and the rule: which stored run a stage is compared with, its history
* ``stats.py``         rank test, bootstrap, robust and run-to-run spread (no verdicts)
* ``gate.py``          per-stage thresholds and verdicts: what "compared" and "regressed" mean
* ``report.py``        the table, in the terminal, Markdown and the GitHub job summary; the final line
* ``preflight.py``     every output the run will write, checked before the first stage
* ``ab.py``, ``worker.py``  A/B in one job (``test_ladder_ab.py``): each side in its own worker, rounds alternating
* ``settings.py``      one run's settings as a plain value (what workers receive)
* ``options.py``, ``plugin.py``  command-line options and pytest hooks
* ``compare.py``       ``python -m perf.compare BASELINE RUN``: re-judge a saved run
"""

__version__ = "0.1.0"
