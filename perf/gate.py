"""The regression gate: is this stage really slower (or hungrier) than its baseline?

Eager pipelines on an H100 spread 13-17 % from run to run, CUDA-graph ones 1 %. One fixed
percentage for every stage either cries wolf on the first or sleeps through the second, so
each stage gets a threshold from its own measured noise, and a verdict needs three things:

1. **Effect size.** The wall time slowed by more than the stage's threshold,
   ``max(stage.min_effect, device floor, host floor, 2 x round-to-round CV, 2 x run-to-run CV)``.
   Round-to-round CV is the robust spread of the baseline's rounds; run-to-run CV is the noise
   of the stage's median over its history (:mod:`perf.baselines`: the stored runs up to the
   baseline since the last software change, read from consecutive differences). The second
   matters more: on the shared H100 host the cudagraphs stage moved 0.43-0.54 s between
   unchanged runs while its rounds within a run spread 1 %. Wall time is judged twice, on the
   fastest round and on the median (``WALL_STATISTICS``), GPU time on the median.
2. **Significance.** A one-sided Mann-Whitney rank test says the current rounds are slower,
   ``p <= ALPHA``. Rank tests ignore outliers' size and assume no distribution. With ``n``
   rounds against ``m`` the smallest p is ``1/C(n+m, n)``: 5 a side reach 1/252; a comparison
   that cannot reach ``ALPHA`` is *not compared*, never silently "ok".
3. **Confidence.** The bootstrap 95 % interval of the median ratio lies wholly above 1.

On CUDA the same rule runs a second time on **GPU busy time** (:mod:`perf.gpu_time`), the
time the GPU spent executing kernels, with a floor of ``GPU_TIME_MIN_EFFECT`` and a level of
``GPU_TIME_ALPHA`` (three profiled rounds a side suffice): it repeats to
a fraction of a percent where wall time drifts tens of percent, so more GPU work (a slower
kernel, an extra op) fails the stage at a few percent whatever the host did. Only where GPU
time is compared does wall time get the wider host floor; a run without GPU time is judged on
wall time as a stage without GPU time would be.

**Host-work counters** (:mod:`perf.counters`) are exact where time is not: a new sync, a
device-to-host copy, a graph break or a recompilation fails on any increase; kernel launches and
aten ops beyond 2 %, Python calls beyond 5 %. Every change is reported, a lighter stage is not failed.

Peak GPU memory is near-deterministic, so it fails on growth beyond ``MEMORY_THRESHOLD``
plus a small absolute slack for allocator rounding. ``--benchmark-compare-fail`` expressions
are judged here too, so the user sees one verdict per stage.

**Quality** (:mod:`perf.quality`): a stage's PSNR against its family's reference stage, made in the
same run from the same seed, fails under the stage's floor wherever one was measured (the runner
checks that as it checks for black images, compare or not), and here when it drops below its
baseline's by more than ``max(QUALITY_MIN_DROP_DB, 2 x run-to-run SD)``: 3 dB is the error against
the reference doubling. CPU runs repeat it exactly; a subtle fault (one attention x1.2) cost the
float16 stages of ``tiny`` 5 dB and of ``tiny-sdxl`` 6.5 dB.

**Compared** means all of that was possible. In compare mode a stage that was selected but
could not be judged (no baseline entry, a recipe or timer change, too few rounds, no GPU time
where the baseline has it, a baseline stage that now skips) fails unless the user typed
``--perf-allow-uncompared``.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

from . import counters, quality, stages
from .baselines import StagePlan, gpu_samples
from .outcome import Status
from .results import StageResult
from .stats import (bootstrap_median_ci, bootstrap_ratio_ci, mann_whitney_p, robust_cv, run_to_run_cv,
                    run_to_run_sd, signed_rank_p, smallest_p)
from .gpu_time import GPU_ROUNDS

if TYPE_CHECKING:  # perf.ab imports this module
    from .ab import ABResult

ALPHA = 0.01
MEMORY_THRESHOLD = 0.05
MEMORY_SLACK_BYTES = 32 * 2**20
NOISE_MULTIPLE = 2.0

#: Floor of every stage's wall-time threshold on a device, where its runs drift more than stages
#: declare. CPU: the 2-core CI machine moves between unchanged runs far more than within one. Against
#: a pair of recordings, unchanged runs of ``tiny`` (2 steps, 64 px, rounds of 0.2-0.5 s) moved
#: fp32 -16 ... +16 % and bf16 -21 ... +18 % over 25 runs, and fp32 up to +33 % in an earlier series,
#: while each run's rounds spread 1-3 %; the issue that asked for this saw +17.6, +18.9 and +32.9 %
#: in 25 (``reports/cpu/README.md``). The earlier 15 % false-alarmed there. 40 % sits above the
#: worst seen: on CPU wall time catches gross slowdowns, and the host-work counters
#: (:mod:`perf.counters`) catch more work of any size. Dec 3, at the defaults with glibc's malloc
#: thresholds fixed (``reports/cpu/malloc/``): eight reruns moved the fastest round -10.5 ... +8.8 %,
#: but ten beside one busy process moved it up to +41.8 % (fp32) and +41.3 % (bf16), two false
#: alarms at 40 %: 50 %, the step floor.
DEVICE_MIN_EFFECT = {"cpu": 0.50}

#: Smallest drop of a stage's PSNR against the reference (dB) that fails it against its baseline: the
#: error's energy doubling. Unchanged CPU runs repeat PSNR exactly (``reports/cpu/quality/``).
QUALITY_MIN_DROP_DB = 3.0

#: Floor of every stage's GPU-busy-time threshold. GPU work repeats closely: ``fp32``, whose
#: GPU is busy 94 % of the time, spread 2 % (max/min, CV 0.7 %) over five unchanged H100 runs
#: while host-bound stages spread up to 56 %; profiled rounds repeated within 0.7 % (sdpa,
#: 0.5421-0.5458 s) and 0.01 % (fp32), ``reports/h100/probe_profiler.log``.
GPU_TIME_MIN_EFFECT = 0.03

#: The per-step components of a timed round (:mod:`perf.steps`) the gate judges, each on the fastest
#: half of its per-round values (:data:`STEP_STATISTIC`), with its name in the verdict and the floor
#: of its threshold per device. The denoising step is judged on each round's *fastest* step: the
#: least disturbed sample of the denoiser's pace, which a per-step fault moves by its whole size
#: while a noisy host moves mostly the slower steps (H200 probe: fastest step robust CV 2.2 % where
#: whole generations spread 4.8 %). ``first`` holds the prompt's encoding and the first step, ``after``
#: the VAE decode and postprocessing; both follow the host's drift between runs more. Floors
#: measured: ``reports/cpu/steps/`` and ``reports/h200/steps/``.
STEP_COMPONENTS = {
    "step_fastest": ("denoising step", "fastest step of each round"),
    "first": ("prompt and first step", "call to the first step's end"),
    "after": ("VAE decode and postprocessing", "last step's end to the images"),
    "loop_median": ("denoising loop outside the denoiser", "each step's time outside the denoiser's call"),
    "denoiser_over_loop": ("denoiser's call against the loop",
                           "each round's median step less its loop, over its loop"),
}
#: Step components that hold the loop outside the denoiser, judged only where it is host time
#: (:data:`LOOP_HOST_PACED_BELOW`).
LOOP_FIELDS = ("loop_median", "denoiser_over_loop")
#: The statistic a step component is judged on where it is not :data:`STEP_STATISTIC`: a ratio of
#: two parts of the same rounds, which a disturbance of either part moves either way.
STEP_FIELD_STATISTIC = {"denoiser_over_loop": "median"}

#: Floors of the stored gate's step statistics, per device and kind of stage (as :data:`HOST_DRIFT`):
#: what unchanged runs moved by between runs, with room above it.
STEP_MIN_EFFECT = {
    # Eager stages, H200: a step is host time, and the host drifts between runs as it does for the
    # whole generation. Dec 1 (reports/h200/steps/) three runs of sdpa moved its fastest step 8.5 %;
    # Dec 2 (reports/h200/ladder/) reruns of the full eager ladder minutes after its recording, on
    # the same machine, moved it +11.4 % (tf32), +11.1 % (fp16), +57.6 % (sdpa), +25.6 % (bf16),
    # -21.1 % (fused_qkv), "first" up to +80.2 % and "after" up to +25.6 %, GPU time within 0.2 %.
    # A 10 % floor false-alarmed on 4 of 13 unchanged stage-runs; only A/B's pairs see 10 % there.
    # The loop outside the denoiser (loop_median) is host time on eager stages, 0.6-1.1 ms of a
    # 31-39 ms step on the H200 (0013_h200): the 10 % host fault per step is 3 ms there,
    # +300 % or more, where a slower host moves it in proportion, as it moves the step. On CUDA-graph
    # stages it is mostly the scheduler's sync waiting for the replayed UNet (6.1-6.3 ms of 7.6), so
    # a host fault moves it little: not judged there.
    ("cuda", "eager"): {"step_fastest": 0.60, "first": 1.00, "after": 0.30, "loop_median": 1.00},
    # CUDA-graph stages, H200: on the median of rounds steps moved +7.9 % (cudagraphs, Dec 1), -11.1 %
    # (compile_vae) and -15.9 % (frontier, Dec 2). On the fastest half of rounds (STEP_STATISTIC),
    # over every stored unchanged pair (reports/h200/host-drift/replay.txt, reports/h200/rerun-dec3/)
    # cudagraphs moved +0.7, -2.4, -3.2, -4.5, +5.7, +5.0 and +7.9 %: 10 % passes them all and fails
    # the 10 % host fault per step (+10.2 % on Dec 1, +27.8 % on Dec 3). "first" (the eager text
    # encoder and the first step) moved up to +142.7 % and "after" up to +34.3 % (frontier on a fresh
    # H200 against a baseline from a faster host, Dec 3): host time, as on eager stages.
    ("cuda", "graphs"): {"step_fastest": 0.10, "first": 1.50, "after": 0.50},
    # The 2-core CPU machine (reports/cpu/steps/): unchanged reruns of tiny moved fp32's fastest step
    # by up to +43 % and "first" by +55 %, quiet or beside a busy process. With glibc's malloc
    # thresholds fixed (Dec 3, reports/cpu/malloc/) eight reruns at the defaults moved it -4.5 ...
    # +13.2 % (bf16 -10.1 ... +1.4 %); the floors stay until the tests' reduced settings are measured
    # too. "first" and "after" are short parts of a CPU round (tens of ms at the tests' 64 px, 2 steps): they fail only when doubled.
    # The denoiser's call over the loop (with_derived): 44 unchanged stage-runs of tiny, quiet or
    # beside a busy process, moved it -7.2 ... +9.3 % where their steps moved -44 ... +52 %; a host
    # fault inside the denoiser's call worth 15 % of the step moved it +16.8 ... +29.5 % in 6
    # (reports/cpu/denoiser/, reports/cpu/loop/), where the step floor lets 50 % pass: 13 %.
    ("cpu", "eager"): {"step_fastest": 0.50, "first": 1.00, "after": 1.00, "loop_median": 1.00,
                       "denoiser_over_loop": 0.13},
}


#: The same floors in A/B, where both sides run in the same minutes. CUDA: the H200 A/As of Dec 2
#: (``reports/h200/components/``) judged steps within 3.0-5.7 % and failed a 10 % step fault.
#: CPU: two identical worker processes differ for their whole life, as for whole stages
#: (``AB_DEVICE_MIN_EFFECT``): 13 A/A stage-runs of tiny on Dec 2 gave step ratios 0.79-1.28 and
#: one false alarm under the 20 % of the time; with a fixed layout, 21 runs gave 0.88-1.21
#: (``reports/cpu/ab-steps/``): 35 %. With glibc's malloc thresholds fixed (Dec 3,
#: ``reports/cpu/malloc/``), 12 A/A stage-runs gave step ratios 0.934-1.115: 20 %. The 15 % step
#: fault moved steps 1.129-1.162 there and fails on the whole generation (``AB_DEVICE_MIN_EFFECT``).
#: "first" and "after" are short parts of a CPU round at the tests' settings (32 px, 2 steps): the
#: tests' own A/A (``tests/test_ab.py::test_a_a_passes``) moved "first" +20.1 % on Dec 2 evening, a
#: false alarm at 20 %, and "after" +30.9 % (rank test p=0.004) in a clean-clone CI run on Dec 3, a
#: false alarm at 30 %. The 70 A/A stage-runs stored in ``reports/cpu/`` moved them 0.66-1.30
#: ("first") and 0.74-1.25 ("after"): 50 % for both, as for the loop. The step fault is judged on
#: the step and the whole generation, which these parts do not hold.
#: The loop outside the denoiser (``loop_median``): 8 A/A stage-runs at the defaults moved it
#: 0.779-1.223, the 15 % step fault 11.8x and 15.8x (``reports/cpu/loop/ab/``): 50 %. On CUDA it is
#: recorded, not judged, until a device run measures it.
AB_STEP_MIN_EFFECT = {
    "cuda": {"step_fastest": 0.03, "first": 0.06, "after": 0.10},
    "cpu": {"step_fastest": 0.20, "first": 0.50, "after": 0.50, "loop_median": 0.50},
}


#: The statistic A/B judges a step component on (``LatencyComparison.statistic``).
FASTEST_HALF = "fastest half of each side's rounds"


def fastest_halves(reference: list[float], candidate: list[float], floor: float) -> LatencyComparison | None:
    """One step component in A/B: each side's fastest half of rounds, compared by rank test.

    Why not the pairs, as for whole generations: on the H200 a disturbance of the host slowed one
    worker, not both, for several rounds at a time (A/A of Dec 1, ``reports/h200/steps/ab-aa.json``:
    the candidate's fastest step 42-54 ms in rounds 1-3 and 26-30 ms after, the reference's
    45 ms in rounds 7-8), so adjacent pairs do not cancel it and their ratios spread 36 %. Such a
    disturbance only ever adds time, and a step fault slows every round: the fastest half of each
    side's rounds is its undisturbed pace (there, 26.7 ms against 26.1 ms, 1.023). None when the
    halves are too few for the rank test to reach ``ALPHA`` (fewer than 5 rounds a side)."""
    ours, theirs = _fastest_half(candidate), _fastest_half(reference)
    if not comparable(len(ours), len(theirs)):
        return None
    return LatencyComparison(
        ratio=statistics.median(ours) / statistics.median(theirs),
        threshold=threshold(floor, theirs),
        p_slower=mann_whitney_p(ours, theirs),
        p_faster=mann_whitney_p(theirs, ours),
        ci=bootstrap_ratio_ci(theirs, ours),
        baseline_cv=robust_cv(theirs),
        statistic=FASTEST_HALF,
    )


def _fastest_half(values: Sequence[float]) -> list[float]:
    return sorted(values)[:(len(values) + 1) // 2]


def step_min_effect(name: str, device: str) -> dict[str, float]:
    """The stored gate's step floors for a stage on a device (:data:`STEP_MIN_EFFECT`)."""
    kind = "graphs" if device == "cuda" and replays_graphs(name) else "eager"
    return STEP_MIN_EFFECT.get((device, kind), STEP_MIN_EFFECT[("cpu", "eager")])

#: Significance level of the rank test on GPU busy time, where wall time keeps :data:`ALPHA`. What
#: protects GPU time from false alarms is its floor, not the test: over nine unchanged H100 ladders
#: its rounds within a run spread at most 1.0 % and its medians between runs 1.2 %, well under the
#: 3 % that fails a stage, so the test only has to confirm that the rounds separate. At 0.05 three
#: profiled rounds a side do (p = 1/20: every round slower than every baseline round), where 0.01
#: needed five, and the two rounds saved per stage are about 70 s of a fresh H100 ladder. Replayed on
#: those ladders (``tools/gpu_rounds.py`` -> ``reports/h100/cost/gpu_rounds.txt``): no false alarm in
#: 720 comparisons, and every stage of the +5 % injection fails with three rounds as with five.
GPU_TIME_ALPHA = 0.05

#: How far the host's share of a stage's latency may drift between unchanged runs: per device,
#: per kind of stage, per wall-time statistic. A stage whose GPU is busy a fraction ``b`` of its
#: wall time gets a wall-time floor of ``drift x (1 - b)``: host-bound stages, whose wall time
#: follows the host, only fail on wall time for changes larger than the host's own drift; their
#: GPU work is gated on GPU time.
#:
#: Eager stages ("eager"): on the shared H100 host the host part (wall - GPU busy) of unchanged
#: stages was seen at up to 2.5x its baseline (channels_last 0.91 -> 2.27 s; compile 0.51 ->
#: 1.13 s) while GPU time moved under 1 %: ``reports/h100/*3*.log``. With 1.0 a rerun
#: false-alarmed on compile (``rerun3-hostdrift1.0.log``). 2.0 (the host part may triple) held
#: until the first H200 SDXL rerun, on a fresh machine: ``tf32``'s GPU time moved +0.1 % and its
#: host part 0.24 -> 0.87 s (3.7x), a false +27.1 % against a 20.4 % floor
#: (``reports/h200/ladder/sdxl-rerun-eager.log``). 3.0 lets it quadruple.
#:
#: Stages that replay CUDA graphs ("graphs", ``torch.compile(mode="reduce-overhead")``): one graph
#: launch per UNet call takes the per-kernel launches off the host; what is left (text encoder,
#: scheduler, VAE launches) drifts less. Over the ten unchanged H100 runs of Nov 23-26
#: (``reports/h100/wall_statistic.txt``) the host part of ``cudagraphs``' fastest round stayed
#: within 1.67x (0.083-0.139 s), of its median within 2.21x, where eager stages' reached
#: 2.0-2.8x (compile 4.3x). 0.8 and 1.5 leave room above both, and put ``cudagraphs``' floors at
#: about 17 % (fastest round) and 40 % (median).
#:
#: On the H200 (Dec 3, ``reports/h200/rerun-dec3/``) a fresh machine ran ``frontier``'s host part
#: (fastest round minus GPU time) at 2.5x that of its baseline, recorded on a faster host: its
#: fastest round +40.2 % against a 32 % threshold, GPU time +0.6 %. Graph stages now take 2.0 for the
#: fastest round (the host part may triple) and 2.5 for the median: their GPU time (3 %) and their
#: steps (10 %) judge them below that.
#:
#: ``--perf-host-drift`` replaces all of them (a dedicated runner: lower).
HOST_DRIFT = {
    ("cuda", "eager"): {"fastest round": 3.0, "median": 3.0},
    ("cuda", "graphs"): {"fastest round": 2.0, "median": 2.5},
}

#: Wall time is judged on two statistics, each against its own threshold, and either fails the
#: stage. The **fastest round** sees a regression that slows every round: interference from a
#: shared host only ever adds time, so it is the estimate the host moves least (``timeit``'s
#: advice). Over the ten unchanged H100 runs its run-to-run spread (SD of log) was below the
#: median's on 8 of 10 stages: cudagraphs 4.0 vs 7.7 %, fp16 12.0 vs 18.1 %, bf16 6.8 vs 8.4 %
#: (1.4 points above on sdpa, 0.2 on traced_unet); with the median alone cudagraphs' unchanged
#: runs moved up to +26 %, so no threshold could pass them and fail a +25 % regression. The
#: **median** sees a regression that slows only some rounds, which the fastest round cannot: Python
#: work near the point where the host stops keeping ahead of the GPU slowed 12 of 20 rounds of
#: cudagraphs by 50 % and left the fastest unchanged (``reports/h100/wall/inject-host-0.9.log``).
WALL_STATISTICS: dict[str, Callable[[Sequence[float]], float]] = {"fastest round": min, "median": statistics.median}


def fastest_half_median(values: Sequence[float]) -> float:
    """The median of the fastest half of ``values``: a pace that a disturbance covering fewer than
    half the rounds cannot move, and that a fault slowing every round moves by its whole size."""
    return statistics.median(_fastest_half(values))


#: What the stored gate compares a step component on (:func:`compare_steps`): the fastest half of
#: each run's rounds, as A/B does (:func:`fastest_halves`); the rank test and the interval still
#: read every round, so this only ever passes more than the median did. Why: on the H200 a
#: disturbance of the host slowed every step of whole rounds by 35-90 % for about a minute while
#: the rounds around it kept their pace (``reports/h200/host-drift/``). Replayed on the stored
#: H200 pairs, the worst unchanged step moved +57.6 % on the median and +19.7 % on this statistic
#: (sd15 sdpa, 0005 against the first eager rerun), +25.8 % at worst (bf16); compiled stages
#: +29.9 % and +6.5 % (``reports/h200/host-drift/replay.txt``).
STEP_STATISTIC = "fastest half of rounds"
STATISTICS: dict[str, Callable[[Sequence[float]], float]] = {**WALL_STATISTICS, STEP_STATISTIC: fastest_half_median}


@dataclasses.dataclass(frozen=True)
class LatencyComparison:
    ratio: float  # current median / baseline median
    threshold: float  # relative slowdown that counts
    p_slower: float
    p_faster: float
    ci: tuple[float, float]  # bootstrap 95 % interval of the ratio of medians
    baseline_cv: float | None
    statistic: str = "median"  # what ``ratio`` compares: a key of WALL_STATISTICS, or PAIRED (A/B)
    alpha: float = ALPHA  # significance level of the rank test: ALPHA, or GPU_TIME_ALPHA

    @property
    def regressed(self) -> bool:
        return self.ratio > 1 + self.threshold and self.p_slower <= self.alpha and self.ci[0] > 1

    @property
    def improved(self) -> bool:
        return self.ratio < 1 / (1 + self.threshold) and self.p_faster <= self.alpha and self.ci[1] < 1


def threshold(min_effect: float, baseline_rounds: list[float], history: list[float] | None = None) -> float:
    within = robust_cv(baseline_rounds) if baseline_rounds else None
    between = run_to_run_cv(history or [])
    return max(min_effect, NOISE_MULTIPLE * (within or 0.0), NOISE_MULTIPLE * (between or 0.0))


def comparable(n: int, m: int, alpha: float = ALPHA) -> bool:
    """Whether ``n`` rounds against ``m`` can ever give ``p <= alpha``."""
    return smallest_p(n, m) <= alpha


def fewest_rounds(against: int | None = None, alpha: float = ALPHA) -> int:
    """The fewest rounds that can reach ``p <= alpha`` against ``against`` rounds (None: as many a side)."""
    return next(n for n in range(1, 10_001) if comparable(n, n if against is None else against, alpha))


def compare_latency(baseline: list[float], current: list[float], min_effect: float,
                    history: list[float] | None = None, statistic: str = "median",
                    alpha: float = ALPHA) -> LatencyComparison:
    """Compare raw rounds on one of :data:`STATISTICS` (``history``: the same statistic of
    earlier runs); callers check :func:`comparable` first."""
    of = STATISTICS[statistic]
    return LatencyComparison(
        ratio=of(current) / of(baseline),
        threshold=threshold(min_effect, baseline, history),
        p_slower=mann_whitney_p(current, baseline),
        p_faster=mann_whitney_p(baseline, current),
        ci=bootstrap_ratio_ci(baseline, current),
        baseline_cv=robust_cv(baseline),
        statistic=statistic,
        alpha=alpha,
    )


def compare_gpu_time(baseline: list[float], current: list[float],
                     history: list[float] | None = None) -> LatencyComparison:
    """GPU busy time on its median, with its own floor and significance level."""
    return compare_latency(baseline, current, GPU_TIME_MIN_EFFECT, history, alpha=GPU_TIME_ALPHA)


#: How a component of GPU time (:mod:`perf.components`) is named in a verdict.
COMPONENT_NAMES = {"text_encoder": "text encoder", "text_encoder_2": "second text encoder",
                   "text_encoder_3": "third text encoder", "unet": "UNet", "transformer": "transformer",
                   "vae": "VAE decode", "other": "other"}


def component_name(name: str) -> str:
    return COMPONENT_NAMES.get(name, name)


def component_order(names: Iterable[str]) -> list[str]:
    """Components in the order tables and charts show them: :data:`COMPONENT_NAMES`' order, then
    any other by name."""
    order = list(COMPONENT_NAMES)
    return sorted(set(names), key=lambda name: (order.index(name) if name in order else len(order), name))


def gpu_components(extra: Mapping[str, Any] | None) -> dict[str, list[float]]:
    """``gpu_components`` of an ``extra_info`` (a stored entry's, or a result's extra), or {}."""
    found = extra.get("gpu_components") if isinstance(extra, dict) else None
    return found if isinstance(found, dict) else {}


#: Smallest change of one component's GPU time, as a share of the stage's whole GPU time, that
#: the gate treats as real (besides :data:`GPU_TIME_MIN_EFFECT` of the component itself). Why: the
#: "other" component (the scheduler's and guidance's small kernels, about 1 ms of sd15's 300)
#: moved +3.2 % between two unchanged H200 machines (``cudagraphs``, 0012 against
#: ``reports/h200/frontier-fp8/``: 42 us, 0.013 % of the stage) and +19 % on a Flux rerun. Over the
#: 283 unchanged stored H200 pairs, "other" and the text encoders never moved more than 0.0102 % of
#: their stage's GPU time; only the UNet, the transformer and the VAE did, and those are judged on
#: their own 3 %. At 0.05 % a VAE decode 20 % slower still fails (0.45 % of ``compile_vae``), and
#: so does a text encoder 20 % slower (0.08 %); a change in the small kernels below it is left to
#: the whole GPU time.
COMPONENT_MIN_SHARE = 0.0005


def compare_components(baseline: dict[str, list[float]], current: dict[str, list[float]],
                       history: Sequence[dict[str, list[float]]] = ()) -> dict[str, LatencyComparison]:
    """Each component's GPU busy time, judged as the whole GPU time is (its floor, its rank test),
    where both runs split it: a component that is a few percent of the total fails on its own,
    once its change is also :data:`COMPONENT_MIN_SHARE` of the whole."""
    found = {}
    whole = sum(statistics.median(rounds) for rounds in baseline.values() if rounds)
    for name, before in baseline.items():
        after = current.get(name)
        if not after or not before or not all(v > 0 for v in before + after):
            continue
        if not comparable(len(after), len(before), GPU_TIME_ALPHA):
            continue
        medians = [statistics.median(entry[name]) for entry in history if entry.get(name)]
        floor = max(GPU_TIME_MIN_EFFECT, COMPONENT_MIN_SHARE * whole / statistics.median(before))
        found[name] = compare_latency(before, after, floor, medians, alpha=GPU_TIME_ALPHA)
    return found


def memory_regressed(baseline_bytes: int | None, current_bytes: int | None) -> bool:
    if not baseline_bytes or current_bytes is None:
        return False
    return current_bytes > baseline_bytes * (1 + MEMORY_THRESHOLD) + MEMORY_SLACK_BYTES


def wall_min_effect(name: str, device: str, baseline_gpu_busy: float | None,
                    host_drift: float | None = None, statistic: str = "median") -> float:
    """The floor of a stage's wall-time threshold: declared, per device, and for host-bound stages.

    ``baseline_gpu_busy`` (GPU busy time over the baseline's ``statistic`` of wall time) is None
    unless GPU time is compared for this stage in this run.
    """
    floor = max(stages.BY_NAME[name].min_effect if name in stages.BY_NAME else 0.10,
                DEVICE_MIN_EFFECT.get(device, 0.0))
    if baseline_gpu_busy is not None:
        prior = HOST_DRIFT.get((device, "graphs" if replays_graphs(name) else "eager"), {}).get(statistic, 0.0)
        drift = prior if host_drift is None else host_drift
        floor = max(floor, drift * max(0.0, 1.0 - baseline_gpu_busy))
    return floor


def replays_graphs(name: str) -> bool:
    """Whether the stage's denoiser replays CUDA graphs: ``mode="reduce-overhead"``, or its option."""
    if name not in stages.BY_NAME:
        return False
    compiled = stages.recipe(name).compile or {}
    return compiled.get("mode") == "reduce-overhead" or bool(compiled.get("options", {}).get("triton.cudagraphs"))


# -- verdicts ---------------------------------------------------------------------------------------

#: Statuses that mean the stage was judged against a baseline.
COMPARED = (Status.OK, Status.FASTER, Status.REGRESSION)


@dataclasses.dataclass
class Verdict:
    stage: str
    status: Status  # a str: comparing with "ok", "REGRESSION", ... still reads the same
    detail: str = ""
    latency: LatencyComparison | None = None  # wall time: the fastest round's, or the median's if only it regressed
    latency_median: LatencyComparison | None = None
    memory_ratio: float | None = None
    baseline_median: float | None = None
    gpu: LatencyComparison | None = None  # GPU busy time, where both runs profiled it
    baseline: str | None = None  # the stored run's file name
    counter_changes: list = dataclasses.field(default_factory=list)  # perf.counters.Change, all of them
    steps: dict = dataclasses.field(default_factory=dict)  # STEP_COMPONENTS field -> LatencyComparison
    components: dict = dataclasses.field(default_factory=dict)  # GPU time per component -> LatencyComparison
    failing: bool = False
    headline: str = ""  # the shortest form of the problem, for the final line

    @property
    def compared(self) -> bool:
        return self.status in COMPARED


@dataclasses.dataclass(frozen=True)
class Policy:
    """How a run is judged, beyond the statistics: from the command line."""

    compare: bool = False
    allow_uncompared: bool = False
    host_drift: float | None = None
    gpu_rounds: int = GPU_ROUNDS  # 0: the user turned GPU time off
    compare_fail: tuple = ()  # pytest-benchmark RegressionCheck objects (--benchmark-compare-fail)


def not_compared(name: str, reason: str, policy: Policy, **fields: Any) -> Verdict:
    return Verdict(name, Status.NOT_COMPARED, reason, failing=not policy.allow_uncompared,
                   headline=f"{name} not compared", **fields)


def judge(name: str, result: StageResult | None, stage_plan: StagePlan | None, policy: Policy) -> Verdict:
    """The verdict of one stage: ``result`` is a :class:`perf.runner.StageResult` (or None if not run)."""
    bench = stage_plan.entry if stage_plan is not None else None
    base_median = bench["stats"]["median"] if bench else None
    source = stage_plan.baseline.path.name if stage_plan is not None and stage_plan.baseline and bench else None
    if result is None or result.outcome == "skipped":
        message = result.message if result else "not run"
        if policy.compare and bench is not None:
            return not_compared(name, f"{source} holds it, but it skipped now: {message}", policy,
                                baseline_median=base_median, baseline=source)
        return Verdict(name, Status.SKIPPED, message, baseline_median=base_median, baseline=source)
    if result.outcome == "failed":
        return Verdict(name, Status.FAILED, result.message, baseline_median=base_median, baseline=source, failing=True,
                       headline=f"{name} failed")
    if not result.rounds:
        return Verdict(name, Status.NOT_TIMED, "--benchmark-disable: generated once and checked, not timed")
    if not policy.compare:
        return Verdict(name, Status.MEASURED)
    if stage_plan is None or bench is None or source is None:
        return not_compared(name, stage_plan.reason if stage_plan else "no baseline", policy)

    fields: dict[str, Any] = dict(baseline_median=base_median, baseline=source)
    base_rounds = list(bench["stats"]["data"])
    if not comparable(len(result.rounds), len(base_rounds)):
        return not_compared(name, f"{len(result.rounds)} rounds against {len(base_rounds)} in {source}: "
                                  f"the rank test cannot reach p <= {ALPHA}", policy, **fields)
    device = str(result.extra.get("device", "")).split(":")[0]
    base_gpu, gpu_now = gpu_samples(bench), list(result.extra.get("gpu_seconds") or [])
    gpu = None
    notes = []
    if base_gpu and gpu_now:
        if not comparable(len(gpu_now), len(base_gpu), GPU_TIME_ALPHA):
            return not_compared(name, f"{len(gpu_now)} profiled rounds against {len(base_gpu)} in {source}: the "
                                      f"rank test on GPU time cannot reach p <= {GPU_TIME_ALPHA}", policy, **fields)
        gpu = compare_gpu_time(base_gpu, gpu_now, stage_plan.gpu_medians())
    elif base_gpu and device == "cuda":
        if policy.gpu_rounds > 0:
            return not_compared(name, f"the profiler saw no GPU activity, where {source} has GPU time: an empty "
                                      "profile (is CUPTI missing?)", policy, **fields)
        notes.append("GPU time off (--perf-gpu-rounds=0)")
    history = {"fastest round": stage_plan.fastest(), "median": stage_plan.medians()}
    wall = {}
    for label, statistic in WALL_STATISTICS.items():
        busy = statistics.median(base_gpu) / statistic(base_rounds) if gpu is not None else None
        wall[label] = compare_latency(base_rounds, result.rounds,
                                      wall_min_effect(name, device, busy, policy.host_drift, label),
                                      history[label], statistic=label)
    # The verdict's latency is the fastest round's, unless only the median caught a regression.
    latency, latency_median = wall["fastest round"], wall["median"]
    if latency_median.regressed and not latency.regressed:
        latency = latency_median
    base_mem, mem = (bench.get("extra_info") or {}).get("peak_memory_bytes"), result.extra.get("peak_memory_bytes")
    memory_ratio = mem / base_mem if base_mem and mem is not None else None

    steps = compare_steps(bench, result.extra, stage_plan, device)
    parts = compare_components(gpu_components(bench.get("extra_info")), gpu_components(result.extra),
                               [gpu_components(entry.get("extra_info")) for entry in stage_plan.history])
    problems = [_regression_detail("latency", latency)] if latency.regressed else []
    problems += [_step_detail(field, comparison) for field, comparison in steps.items() if comparison.regressed]
    problems += _gpu_and_memory_problems(gpu, base_mem, mem, parts)
    problems += _compare_fail(policy.compare_fail, result.rounds, bench["stats"])
    changes = counters.compare((bench.get("extra_info") or {}).get("counters") or {}, result.extra.get("counters") or {})
    failing_counters, reported = _counter_lines(changes, result.extra.get("steps"),
                                                (bench.get("extra_info") or {}).get("kernel_kinds"),
                                                result.extra.get("kernel_kinds"),
                                                graphs=replays_graphs(name), gpu=gpu)
    problems += failing_counters
    problems += _quality_problems(bench, result.extra, stage_plan, source)
    fields.update(latency=latency, latency_median=latency_median, gpu=gpu, memory_ratio=memory_ratio,
                  counter_changes=changes, steps=steps, components=parts)
    if problems:
        return _regression(name, problems, fields)
    suffix = _ok_suffix(gpu, notes + reported)
    if latency.improved and latency_median.ratio < 1 and (gpu is None or not gpu.ratio > 1 + gpu.threshold):
        return Verdict(name, Status.FASTER, f"latency {(latency.ratio - 1) * 100:+.1f}%" + suffix, **fields)
    detail = f"latency {(latency.ratio - 1) * 100:+.1f}% within {latency.threshold * 100:.1f}%"
    if latency.ratio > 1:
        detail += f" (p={latency.p_slower:.2g})"
    detail += (f", median {(latency_median.ratio - 1) * 100:+.1f}% within "
               f"{latency_median.threshold * 100:.1f}%")
    if "step_fastest" in steps:
        step = steps["step_fastest"]
        detail += f"; step {(step.ratio - 1) * 100:+.1f}% within {step.threshold * 100:.1f}%"
    return Verdict(name, Status.OK, detail + suffix, **fields)


def step_timing(extra: Mapping[str, Any] | None) -> dict:
    """``step_timing`` of an ``extra_info`` (a stored entry's, or a result's extra), or {}."""
    found = extra.get("step_timing") if isinstance(extra, Mapping) else None
    return found if isinstance(found, dict) else {}


def with_derived(timing: dict) -> dict:
    """``timing`` (``extra_info.step_timing``) with ``denoiser_over_loop``, where it has both parts.

    Why: a slowdown inside the denoiser's call (heavier module code, a slower hook) moves the step,
    and the step moves as much with the host's speed, which differs between processes and machines
    by 10-50 %. The loop outside the call is measured in the same rounds by the same host, so the
    denoiser's time over the loop's keeps the slowdown and cancels the host: on CPU, 44 unchanged
    stage-runs moved it -7.2 ... +9.3 % where their step moved -44 ... +52 % (``reports/cpu/denoiser/``);
    on the H200 one fresh machine moved it -2.2 ... -3.1 % where the step moved -11 ... -20 %
    (``reports/h200/loop/``). It cannot see what slows the loop as much: a slower dispatcher slows
    the scheduler's ops too."""
    steps, loops = timing.get("step_median"), timing.get("loop_median")
    if not steps or not loops or len(steps) != len(loops) or min(loops) <= 0:
        return timing
    return {**timing, "denoiser_over_loop": [(step - loop) / loop for step, loop in zip(steps, loops)]}


#: Steps are judged where the host paces them: where the baseline's GPU was busy less than this
#: share of its median generation. Above it the GPU paces the generation, and the host's step
#: timestamps only say how fast it queues work ahead of the GPU: an unchanged SDXL ``frontier``
#: rerun on the H200 (GPU busy 90 %) moved its fastest step +29.9 % (p = 0.03) while its latency
#: moved +0.7 % and its GPU time +0.6 % (``reports/h200/components/``). Wall time and GPU time
#: judge those stages.
STEPS_HOST_PACED_BELOW = 0.85
#: The loop outside the denoiser is judged only below this GPU busy share. Where the scheduler
#: syncs each step (DDIM on device timesteps), the loop holds the wait for the GPU to finish the
#: UNet's queued kernels, and a *faster* host waits longer: on a fresh H200 against 0013_h200
#: (``reports/h200/loop/``) the loop of tf32, fp16, channels_last and traced_unet (GPU busy 43-59 %)
#: grew +23 ... +144 % while their steps got 3-14 % faster. Where the GPU idles for most of the step
#: (sdpa, bf16, fused_qkv: 25-30 %) it is host time alone: -9 ... -16 % unchanged, +509/+512 % under
#: the 10 % host fault per step. Both runs must be under it: a faster host raises the busy share (sdpa
#: 30 -> 34 %, fused_qkv 25 -> 34 % on that machine), a host fault only lowers it.
LOOP_HOST_PACED_BELOW = 0.40


def host_paced(gpu_busy: float | None, below: float = STEPS_HOST_PACED_BELOW) -> bool:
    """Whether a run's steps are paced by its host (unknown GPU busy share, as on CPU: yes)."""
    return gpu_busy is None or gpu_busy < below


def compare_steps(bench: dict, extra: Mapping[str, Any], stage_plan: StagePlan,
                  device: str) -> dict[str, LatencyComparison]:
    """Each of :data:`STEP_COMPONENTS` that both runs timed, on :data:`STEP_STATISTIC`, against its
    floor and its own noise (within the baseline's rounds, and between the stored runs); none where
    the baseline's GPU paced its steps (:data:`STEPS_HOST_PACED_BELOW`), and no loop where either
    run's GPU was busy enough for the loop to hold a wait for it (:data:`LOOP_HOST_PACED_BELOW`)."""
    base_gpu = gpu_samples(bench)
    busy = statistics.median(base_gpu) / bench["stats"]["median"] if base_gpu else None
    if not host_paced(busy):
        return {}
    base, now = with_derived(step_timing(bench.get("extra_info"))), with_derived(step_timing(extra))
    floors = step_min_effect(stage_plan.stage, device)
    busy_now = extra.get("gpu_busy") if isinstance(extra, dict) else None
    if not (host_paced(busy, LOOP_HOST_PACED_BELOW) and host_paced(busy_now, LOOP_HOST_PACED_BELOW)):
        floors = {field: floor for field, floor in floors.items() if field not in LOOP_FIELDS}
    found = {}
    for field in STEP_COMPONENTS:
        before, after = base.get(field), now.get(field)
        if field not in floors or not before or not after or not comparable(len(after), len(before)):
            continue  # not timed by both runs, or not judged on this device (no floor measured there)
        statistic = STEP_FIELD_STATISTIC.get(field, STEP_STATISTIC)
        history = [STATISTICS[statistic](values) for values in (
            with_derived(step_timing(entry.get("extra_info"))).get(field) for entry in stage_plan.history) if values]
        found[field] = compare_latency(before, after, floors[field], history, statistic=statistic)
    return found


def _step_detail(field: str, comparison: LatencyComparison) -> str:
    name, what = STEP_COMPONENTS[field]
    return (f"{name} +{(comparison.ratio - 1) * 100:.1f}% > threshold {comparison.threshold * 100:.1f}% "
            f"({what}, {comparison.statistic}; rank test p={comparison.p_slower:.2g})")


def _regression_detail(what: str, comparison: LatencyComparison) -> str:
    if comparison.statistic == PAIRED:
        how = f"{PAIRED}; signed-rank p={comparison.p_slower:.2g}, 95% CI"
    else:
        of = f"{comparison.statistic}; " if what == "latency" else ""
        how = f"{of}rank test p={comparison.p_slower:.2g}, 95% CI of the median ratio"
    return (f"{what} +{(comparison.ratio - 1) * 100:.1f}% > threshold {comparison.threshold * 100:.1f}% "
            f"({how} x{comparison.ci[0]:.3f}-{comparison.ci[1]:.3f})")



def _gpu_and_memory_problems(gpu: LatencyComparison | None, base_mem: int | None, mem: int | None,
                             parts: dict[str, LatencyComparison] | None = None) -> list[str]:
    problems = []
    if gpu is not None and gpu.regressed:
        problems.append(_regression_detail("GPU time", gpu))
    problems += [_regression_detail(f"{component_name(name)} GPU time", comparison)
                 for name, comparison in (parts or {}).items() if comparison.regressed]
    if base_mem and mem is not None and memory_regressed(base_mem, mem):
        problems.append(f"peak memory {base_mem / 2**30:.2f} -> {mem / 2**30:.2f} GiB "
                        f"(+{(mem / base_mem - 1) * 100:.1f}% > {MEMORY_THRESHOLD * 100:.0f}%)")
    return problems


def quality_drop_allowed(history: list[float]) -> float:
    """How far a stage's PSNR may fall below its baseline's, from the stored runs' noise (dB)."""
    return max(QUALITY_MIN_DROP_DB, NOISE_MULTIPLE * (run_to_run_sd(history) or 0.0))


def _quality_problems(bench: dict, extra: Mapping[str, Any], stage_plan: StagePlan, source: str) -> list[str]:
    before, now = quality.stored(bench.get("extra_info")), quality.stored(extra)
    if before is None or now is None or before.reference != now.reference:
        return []
    history = [s.psnr_db for s in map(quality.stored, (b.get("extra_info") for b in stage_plan.history)) if s]
    allowed = quality_drop_allowed(history)
    if now.psnr_db >= before.psnr_db - allowed:
        return []
    return [f"quality PSNR {now.psnr_db:.1f} dB against {now.reference}, {before.psnr_db - now.psnr_db:.1f} dB under "
            f"{before.psnr_db:.1f} dB in {source} (more than {allowed:.1f} dB: the error against the reference "
            f"grew {10 ** ((before.psnr_db - now.psnr_db) / 10):.1f}x)"]


#: Counters whose failure line names the kernel kinds that were added, where both runs stored them.
KERNEL_COUNTERS = ("kernels", "launches")

#: Counters that cost no host time inside a CUDA graph: on a stage that replays graphs, more GPU
#: kernels are GPU work, which GPU time judges. Inductor settles some lowerings by timing them on
#: the device (whether to pad a misaligned matmul) and keeps the faster: one fresh H200 in four
#: compiled sd15's UNet with 14 kernels a step more (+2.25 %) and 0.4-0.5 % *less* GPU time, aten
#: ops, Python calls and graph launches unchanged (``reports/h200/loop/``). Such a rise is reported,
#: and fails only where GPU time did not fall; a lost fusion costs GPU time and still fails.
GRAPH_GPU_COUNTERS = ("kernels",)


def paid_by_the_gpu(change: counters.Change, graphs: bool, gpu: LatencyComparison | None) -> bool:
    """Whether a counter's rise is one Inductor chose because it ran faster (see :data:`GRAPH_GPU_COUNTERS`)."""
    return graphs and change.spec.name in GRAPH_GPU_COUNTERS and gpu is not None and gpu.ratio < 1


def _counter_lines(changes: Sequence[counters.Change], steps: int | None, kinds_before: dict[str, int] | None = None,
                   kinds_after: dict[str, int] | None = None, *, graphs: bool = False,
                   gpu: LatencyComparison | None = None) -> tuple[list[str], list[str]]:
    """The counter changes that fail the stage, and those only reported; ``kinds_before`` and
    ``kinds_after`` (:func:`perf.counters.kernel_kinds`) say which kernels a count added."""
    added = counters.most_added(kinds_before, kinds_after) if kinds_before and kinds_after else ""

    def with_kinds(change: counters.Change) -> str:
        line = change.describe(steps)
        return f"{line}; most added: {added}" if added and change.spec.name in KERNEL_COUNTERS else line

    failing, reported = [], []
    for change in changes:
        if not change.regressed:
            reported.append(change.describe(steps))
        elif gpu is not None and paid_by_the_gpu(change, graphs, gpu):
            reported.append(f"{with_kinds(change)}, inside CUDA graphs with GPU time {(gpu.ratio - 1) * 100:+.1f}%: "
                            "Inductor's faster choice, not failed")
        else:
            failing.append(with_kinds(change))
    return failing, reported


def _regression(name: str, problems: list[str], fields: dict) -> Verdict:
    return Verdict(name, Status.REGRESSION, "; ".join(problems), failing=True,
                   headline=f"{name} {problems[0].split(' (')[0].replace('threshold ', '')}", **fields)


def _ok_suffix(gpu: LatencyComparison | None, notes: list[str]) -> str:
    gpu_note = "" if gpu is None else f"; GPU time {(gpu.ratio - 1) * 100:+.1f}% within {gpu.threshold * 100:.1f}%"
    return gpu_note + "".join(f"; {note}" for note in notes)


def _compare_fail(checks: Sequence[Any] | None, rounds: list[float], baseline_stats: dict) -> list[str]:
    """``--benchmark-compare-fail`` expressions, with pytest-benchmark's own checks, as verdict lines."""
    if not checks:
        return []
    from pytest_benchmark.stats import Stats

    current = Stats()
    for value in rounds:
        current.update(value)
    now, saved = current.as_dict(), dict(baseline_stats)
    lines = []
    for check in checks:
        if check.field not in saved:
            continue
        value = check.compute(now, saved)
        if value > check.threshold:
            if type(check).__name__.startswith("Percentage"):
                lines.append(f"{check.field} {value:+.1f}% > --benchmark-compare-fail {check.field}:{check.threshold:g}%")
            else:
                lines.append(f"{check.field} {value:+.4f} s > --benchmark-compare-fail {check.field}:{check.threshold:g}")
    return lines


# -- A/B: the candidate against the reference, pair by pair ------------------------------------

#: Floor of the A/B threshold: a paired ratio moves less than this between identical environments
#: only where the pairs are many and quiet; 2 % is what a maintainer would still call "the same".
AB_MIN_EFFECT = 0.02

#: The statistic an A/B comparison reads (``LatencyComparison.statistic``).
PAIRED = "median of paired ratios"

#: The threshold is this many standard errors of the median paired ratio (1.2533 sigma / sqrt(n)
#: for a median): about the one-sided 1 % critical value plus a margin, so an unchanged pair of
#: environments passes and a change of this size fails about half the time; twice it, nearly always.
AB_STANDARD_ERRORS = 3.0


#: Floor per device where two identical worker processes differ for a whole stage, which pairing
#: cannot cancel (it cancels drift in time, not a difference between processes). On the 2-core CPU
#: machine, with address-space randomization, 20 A/A stage-runs of ``tiny`` gave median ratios
#: 0.77-1.06 (``reports/cpu/ab/``) and 6 more 0.86-1.27: where code and data land decides a
#: worker's speed for its life. CPU workers now start with a fixed layout
#: (:func:`perf.worker.fixed_layout`): 21 A/A runs gave 0.91-1.15 (``reports/cpu/ab-steps/``), hence
#: 25 %. Most of that difference was glibc's malloc: which buffers got fresh pages (page faults,
#: zeroing) changed from process to process. With its thresholds fixed for every CPU run
#: (:func:`perf.timing.keep_freed_memory`, Dec 3, ``reports/cpu/malloc/``), 12 A/A stage-runs of
#: ``tiny`` at its defaults gave 0.957-1.068, and a host fault of 15 % of a step
#: (``--perf-inject-step-delay=0.15``) 1.130-1.194 on fp32 and bf16: 12 %.
AB_DEVICE_MIN_EFFECT = {"cpu": 0.12}


def ab_threshold(ratios: list[float], device: str = "", floor: float | None = None) -> float:
    """The smallest slowdown of the median paired ratio the A/B gate fails, from the pairs' spread;
    ``floor`` replaces the device's whole-stage floor (a per-step statistic has its own)."""
    spread = robust_cv(ratios) or 0.0
    floor = AB_DEVICE_MIN_EFFECT.get(device, 0.0) if floor is None else floor
    return max(AB_MIN_EFFECT, floor, AB_STANDARD_ERRORS * 1.2533 * spread / max(len(ratios), 1) ** 0.5)


def paired(ratios: list[float], limit: float) -> LatencyComparison:
    """Candidate over reference, pair by pair: the median ratio, the signed-rank test, its CI."""
    logs = [math.log(r) for r in ratios]
    return LatencyComparison(ratio=statistics.median(ratios), threshold=limit, p_slower=signed_rank_p(logs),
                             p_faster=signed_rank_p([-x for x in logs]), ci=bootstrap_median_ci(ratios),
                             baseline_cv=robust_cv(ratios), statistic=PAIRED)


def judge_ab(name: str, result: ABResult | None, policy: Policy) -> Verdict:
    """The A/B verdict of one stage: ``result`` is a :class:`perf.ab.ABResult`."""
    if result is None or result.outcome == "skipped":
        return Verdict(name, Status.SKIPPED, result.message if result else "not run")
    if result.outcome == "failed":
        return Verdict(name, Status.FAILED, result.message, failing=True, headline=f"{name} failed")
    if result.outcome == "not compared":
        return not_compared(name, result.message, policy)
    candidate, reference = result.candidate, result.reference
    ratios = result.ratios  # none without both sides
    if not ratios or candidate is None or reference is None or 0.5 ** len(ratios) > ALPHA:
        return not_compared(name, f"{len(ratios)} pairs: the signed-rank test cannot reach p <= {ALPHA}", policy)
    latency = paired(ratios, ab_threshold(ratios, result.device_type))
    steps = {}
    floors = AB_STEP_MIN_EFFECT.get(result.device_type, AB_STEP_MIN_EFFECT["cpu"])
    busy = (statistics.median(reference.gpu_seconds) / reference.median
            if reference.gpu_seconds and reference.median else None)
    for field in STEP_COMPONENTS if host_paced(busy) else ():
        theirs, ours = reference.step_timing.get(field, []), candidate.step_timing.get(field, [])
        if field in floors and len(ours) == len(theirs) == len(ratios):
            comparison = fastest_halves(theirs, ours, floors[field])
            if comparison is not None:
                steps[field] = comparison
    gpu = None
    if (candidate.gpu_seconds and reference.gpu_seconds
            and comparable(len(candidate.gpu_seconds), len(reference.gpu_seconds), GPU_TIME_ALPHA)):
        gpu = compare_gpu_time(reference.gpu_seconds, candidate.gpu_seconds)
    parts = compare_components(reference.gpu_components, candidate.gpu_components)
    base_mem, mem = reference.peak_memory_bytes, candidate.peak_memory_bytes
    memory_ratio = mem / base_mem if base_mem and mem is not None else None
    changes = counters.compare(reference.counters or {}, candidate.counters or {})
    fields: dict[str, Any] = dict(latency=latency, gpu=gpu, memory_ratio=memory_ratio, counter_changes=changes,
                                  baseline_median=reference.median, baseline="reference", steps=steps,
                                  components=parts)
    problems = [_regression_detail("candidate/reference", latency)] if latency.regressed else []
    problems += [_step_detail(field, comparison) for field, comparison in steps.items() if comparison.regressed]
    problems += _gpu_and_memory_problems(gpu, base_mem, mem, parts)
    failing_counters, reported = _counter_lines(changes, result.steps, reference.kernel_kinds,
                                                candidate.kernel_kinds,
                                                graphs=replays_graphs(name), gpu=gpu)
    problems += failing_counters
    if problems:
        return _regression(name, problems, fields)
    suffix = _ok_suffix(gpu, reported)
    if latency.improved:
        return Verdict(name, Status.FASTER, f"candidate/reference {latency.ratio:.3f} (p={latency.p_faster:.2g}, "
                                              f"95% CI {latency.ci[0]:.3f}-{latency.ci[1]:.3f})" + suffix, **fields)
    return Verdict(name, Status.OK, f"candidate/reference {latency.ratio:.3f}, within +{latency.threshold * 100:.1f}% "
                                    f"(95% CI {latency.ci[0]:.3f}-{latency.ci[1]:.3f})" + suffix, **fields)
