"""What pytest loads when diffusers-perf is installed (the ``pytest11`` entry point): the suite's
plugins, each a module named for its job, as pytest-benchmark's are. The options, hooks and the
``perf_stage`` fixture are then there in any repository; the ladder itself runs where it is
collected (``pytest --pyargs perf``, or ``pytest perf`` in a checkout), and a run that does not
collect it judges, prints and writes nothing of the suite's."""

pytest_plugins = ("perf.options", "perf.plugin", "perf.fixtures")
