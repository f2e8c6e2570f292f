"""Progress lines: one per phase, with the stage's place and an estimate once a stage has finished;
the same clock gives each stage's cost by phase."""

from perf import progress


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_each_phase_is_one_line_and_the_estimate_comes_from_finished_stages(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(progress.time, "perf_counter", clock)
    lines = []
    p = progress.Progress(lambda line, final: lines.append(line), total=3)
    p.start_stage("fp32")
    clock.now = 10.0
    p.phase("building")
    p.start_stage("tf32")  # fp32 took 10 s
    p.phase("timing 6 rounds (~12 s)")
    clock.now = 25.0
    p.start_stage("fp16")  # tf32 took 15 s
    p.phase("building")
    assert lines == [
        "[1/3] fp32: building; 10 s so far",
        "[2/3] tf32: timing 6 rounds (~12 s); 10 s so far, ~20 s left",
        "[3/3] fp16: building; 25 s so far, ~12 s left",
    ]


def test_costs_add_up_each_phase_until_the_next(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(progress.time, "perf_counter", clock)
    p = progress.Progress()
    p.start_stage("compile")
    p.phase("building", "build")
    clock.now = 1.0
    p.phase("compiling and warming up (3 rounds)", "warmup")
    clock.now = 61.0
    p.phase("timing 20 rounds (~9 s)", "timing")
    clock.now = 70.0
    p.charge("build")  # a short step, no line of its own: adds to what it was already spent on
    clock.now = 70.5
    p.phase("profiling 5 rounds for GPU time", "gpu_time")
    clock.now = 75.0
    assert p.costs() == {"build": 1.5, "warmup": 60.0, "timing": 9.0, "gpu_time": 4.5}
    p.start_stage("cudagraphs")  # a new stage starts from nothing
    assert p.costs() == {}
    line = progress.summarize(300.0, [{"build": 1.5, "warmup": 60.0, "timing": 9.0, "gpu_time": 4.0}])
    assert line == ("session: 5 min 0 s; stages spent building 2 s, warm-up and compile 1 min 0 s, timed rounds 9 s, "
                    "profiling GPU time 4 s; start-up, teardown and the rest 3 min 46 s")


def test_silent_without_a_writer():
    p = progress.Progress()
    p.start_stage("fp32")
    p.phase("building")  # nothing to write to: no error


def test_an_interactive_terminal_redraws_one_line_per_stage(monkeypatch):
    """On a tty the phases of a stage rewrite one line, which its verdict ends; elsewhere each is a line."""

    class Terminal:
        def __init__(self, tty):
            self.tty, self.out = tty, ""

        def isatty(self):
            return self.tty

        def ensure_newline(self):
            if self.out and not self.out.endswith("\n"):
                self.out += "\n"

        def rewrite(self, line, erase=False):
            self.out += "\r" + line

        def write(self, text):
            self.out += text

        def write_line(self, line):
            self.out += line + "\n"

        def flush(self):
            pass

    class Config:
        def __init__(self, terminal):
            self.pluginmanager = type("P", (), {"get_plugin": lambda _, name: terminal if name == "terminalreporter" else None})()

    for tty in (True, False):
        terminal = Terminal(tty)
        p = progress.Progress(progress.pytest_writer(Config(terminal)), total=1)
        p.start_stage("fp32")
        p.phase("building")
        p.phase("timing 6 rounds (~1 s)")
        p.say("fp32: ok")
        if tty:
            assert terminal.out == "\r[1/1] fp32: building; 0 s so far\r[1/1] fp32: timing 6 rounds (~1 s); 0 s so far\rfp32: ok\n"
        else:
            assert terminal.out.splitlines() == ["[1/1] fp32: building; 0 s so far",
                                                 "[1/1] fp32: timing 6 rounds (~1 s); 0 s so far", "fp32: ok"]
