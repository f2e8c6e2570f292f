"""GPU time per pipeline component (perf.components): marks around each component, the trace
split at them, and the gate judging each component on its own line. Fabricated traces on CPU; the
H200 runs in reports/h200/components/ show it on real ones."""

import pytest
import torch

from perf import components, gate, report, storage
from perf.results import StageResult


def trace(*items):
    """Events from a compact script: ("mark", id) for a mark's runtime call, ("kernel", id, start, end)."""
    events = []
    for item in items:
        if item[0] == "mark":
            events.append((False, "cudaEventRecord", item[1], 0, 0))
        else:
            events.append((True, "kernel", item[1], item[2], item[3]))
    return events


def test_each_kernel_belongs_to_the_component_that_launched_it():
    labels = [("text_encoder", True), ("text_encoder", False), ("unet", True), ("unet", False),
              ("vae", True), ("vae", False)]
    events = trace(("kernel", 1, 0, 1000),  # latents, before everything: other
                   ("mark", 2), ("kernel", 3, 1000, 3000), ("mark", 4),  # text encoder: 2 us
                   ("kernel", 5, 3000, 3500),  # between: the scheduler's, other
                   ("mark", 6), ("kernel", 7, 4000, 14000), ("kernel", 7, 13000, 15000), ("mark", 8),  # a graph's two
                   ("mark", 9), ("kernel", 10, 20000, 26000), ("mark", 11))
    split = components.split(events, labels)
    assert split == {"other": pytest.approx(1.5e-6), "text_encoder": pytest.approx(2e-6),
                     "unet": pytest.approx(11e-6), "vae": pytest.approx(6e-6)}


def test_marks_the_trace_does_not_match_give_no_components():
    labels = [("unet", True), ("unet", False)]
    assert components.split(trace(("mark", 1), ("kernel", 2, 0, 10), ("mark", 3), ("mark", 4)), labels) == {}
    assert components.split(trace(("kernel", 2, 0, 10)), []) == {}


class Recorder:
    made: list = []

    def record(self):
        Recorder.made.append(self)


class Decoder(torch.nn.Module):
    def forward(self, x):
        return x

    def decode(self, x):
        return x * 2


class Pipe:
    def __init__(self):
        self.unet, self.text_encoder, self.vae, self.scheduler = (torch.nn.Linear(2, 2), torch.nn.Linear(2, 2),
                                                                   Decoder(), object())

    @property
    def components(self):
        return {"text_encoder": self.text_encoder, "unet": self.unet, "vae": self.vae, "scheduler": self.scheduler}

    def __call__(self):
        x = self.text_encoder(torch.ones(2))
        for _ in range(2):
            x = self.unet(x)
        return self.vae.decode(x)


def test_marks_bracket_every_module_component_and_the_decoder_then_leave_no_trace(monkeypatch):
    monkeypatch.setattr(torch.cuda, "Event", Recorder)
    pipe = Pipe()
    compiled = lambda x: x * 3  # a stage that put its own decode on the instance (compile_vae)
    pipe.vae.decode = compiled
    with components.marked(pipe) as labels:
        pipe()
    assert labels == [("text_encoder", True), ("text_encoder", False), ("unet", True), ("unet", False),
                      ("unet", True), ("unet", False), ("vae", True), ("vae", False)]
    assert len(Recorder.made) == len(labels)
    assert pipe.vae.decode is compiled and not pipe.unet._forward_hooks and not pipe.unet._forward_pre_hooks
    del pipe.vae.decode
    with components.marked(pipe):
        pass
    assert "decode" not in vars(pipe.vae)  # the class's own method again


def result(parts):
    return StageResult("fp16", "passed", rounds=[1.0] * 6,
                       extra={"gpu_components": parts, "device": "cuda:0", "steps": 50})


def test_a_component_a_few_percent_of_gpu_time_fails_on_its_own_line():
    base = {"unet": [0.300, 0.301, 0.300], "vae": [0.0070, 0.00701, 0.0070], "other": [0.020, 0.0201, 0.020]}
    slower_vae = dict(base, vae=[0.0084, 0.00841, 0.0084])  # +20 %: the whole GPU time moves +0.4 %
    found = gate.compare_components(base, slower_vae)
    assert found["vae"].regressed and not found["unet"].regressed and not found["other"].regressed
    assert not any(c.regressed for c in gate.compare_components(base, base).values())
    problems = gate._gpu_and_memory_problems(None, None, None, found)
    assert problems == [problems[0]] and problems[0].startswith("VAE decode GPU time +20.0% > threshold 3.0%")
    # The report's table: ms per component, and the change of the one that failed.
    verdict = gate.Verdict("fp16", gate.Status.REGRESSION, components=found)
    headers, rows = report.component_table([verdict], {"fp16": result(slower_vae)})
    assert headers == ("stage", "UNet GPU ms", "VAE decode GPU ms", "other GPU ms")
    assert rows == [("fp16", "300.0 (+0.0%)", "8.4 (+20.0% > 3.0%)", "20.0 (+0.0%)")]


def test_a_component_whose_change_is_a_sliver_of_the_stage_is_left_to_the_whole_gpu_time():
    """The H200 false alarm: sd15 ``cudagraphs``' small kernels +3.2 % (42 us of 330 ms) between two
    unchanged machines. A text encoder or VAE decode 20 % slower still fails on its own line."""
    from pathlib import Path

    base_run = storage.read(Path(__file__).parents[1] / "baselines/NVIDIA_H200-x1/0012_h200.json")
    base = gate.gpu_components(base_run.entries()["cudagraphs"]["extra_info"])
    other = dict(base, other=[t * 1.032 for t in base["other"]])
    assert not gate.compare_components(base, other)["other"].regressed
    assert gate.compare_components(base, other)["other"].threshold > 0.03
    for part in ("text_encoder", "vae"):
        slower = gate.compare_components(base, dict(base, **{part: [t * 1.2 for t in base[part]]}))
        assert slower[part].regressed and slower[part].threshold < 0.2, part


def test_the_gpu_components_chart_draws_one_line_per_component_from_a_stored_h200_run():
    """SDXL's compiled stages on the H200: the VAE line falls where compile_vae compiles the decoder."""
    import statistics
    from pathlib import Path

    from perf import charts, storage

    run = storage.read(Path(__file__).parents[1] / "reports/h200/ladder/sdxl-rerun-compiled.json")
    stages = [(name, {part: statistics.median(v) for part, v in gate.gpu_components(bench["extra_info"]).items()})
              for name, bench in run.entries().items()]
    names = [(part, gate.component_name(part)) for part in gate.COMPONENT_NAMES if part in stages[0][1]]
    chart = charts.gpu_components(stages, names, "sdxl: GPU time per component")
    lines = [line for line in chart.mermaid.splitlines() if line.strip().startswith("line [")]
    assert len(lines) == len(names) == 5 and "VAE decode" in chart.title
    vae = [float(x) for x in lines[[part for part, _ in names].index("vae")].split("[")[1].rstrip("]").split(",")]
    assert [name for name, _ in stages] == ["compile", "cudagraphs", "compile_vae", "frontier"]
    assert vae[2] < vae[1] / 3  # 114.9 -> 34.5 ms
    assert charts.gpu_components([("fp32", {})], names, "t") is None
