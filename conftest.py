"""diffusers-perf's pytest plugins, each a module named for its job (as in pytest-benchmark)."""

pytest_plugins = ("perf.options", "perf.plugin", "perf.fixtures")
