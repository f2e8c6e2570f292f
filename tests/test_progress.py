"""Progress lines: one per phase, with the stage's place and an estimate once a stage has finished."""

from perf import progress


def test_each_phase_is_one_line_and_the_estimate_comes_from_finished_stages(monkeypatch):
    clock = iter([0.0, 0.0, 10.0, 10.0, 10.0, 10.0, 25.0, 25.0, 25.0])
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    lines = []
    p = progress.Progress(lines.append, total=3)
    p.start_stage("fp32")  # t = 0
    p.phase("building")  # t = 10
    p.start_stage("tf32")  # t = 10: fp32 took 10 s
    p.phase("timing 6 rounds (~12 s)")  # t = 10
    p.start_stage("fp16")  # t = 25: tf32 took 15 s
    p.phase("building")  # t = 25
    assert lines == [
        "[1/3] fp32: building; 10 s so far",
        "[2/3] tf32: timing 6 rounds (~12 s); 10 s so far, ~20 s left",
        "[3/3] fp16: building; 25 s so far, ~12 s left",
    ]


def test_silent_without_a_writer():
    p = progress.Progress()
    p.start_stage("fp32")
    p.phase("building")  # nothing to write to: no error
