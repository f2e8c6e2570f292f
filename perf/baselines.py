"""Baselines: which stored run a stage is compared with, and which runs describe today's noise.

Stored runs live in ``baselines/<hardware key>/NNNN_name.json`` (:mod:`perf.storage` reads and
writes them). The key holds only what makes timings comparable (GPU model and count, or CPU
model and core count), never the torch or diffusers version: a regression after an upgrade is
exactly what users want caught. Software versions are kept in the file and the report shows
what changed.

**The rule for "compared"** (:func:`plan`), the same in the suite and in ``perf.compare``:

* A stage's **baseline** is the newest stored run of this hardware key whose hardware fields
  all match this machine and which holds the stage measured the same way: the same pipeline,
  steps, size and batch, the same timer, and the same recipe (dtype, TF32, attention,
  channels_last, fused QKV, tracing, compile options). It is chosen when the run starts, so it
  is never the current run itself, even when the run also saves. ``--benchmark-compare=NUM``
  (or ``KEY/NUM``, or a path) names the run instead.
* Its **history**, whose spread is the stage's run-to-run noise, is the same stage in the stored
  runs up to and including the baseline, back to the last change of software (torch,
  diffusers, transformers, CUDA, driver, Python; torchao for the quantized stages only): a new
  torch is a step change, not noise.
  Within that, :func:`perf.stats.run_to_run_cv` reads the noise from consecutive differences,
  so one undocumented step among many runs does not widen every later threshold either.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import re
import statistics
from pathlib import Path

from . import storage
from .storage import StoredRun

#: Run settings that must match for two runs' timings to be compared (besides the hardware).
#: ``threads`` is saved since --perf-threads; older files, without it, match any.
COMPARED_SETTINGS = ("pipeline", "steps", "size", "batch", "threads")

#: Recipe fields (:class:`perf.stages.Recipe`) that make a stage what it is; saved in ``extra_info.recipe``.
#: Files written before the recipe was saved hold ``dtype``, ``tf32`` and ``attention`` only; those are compared.
RECIPE_FIELDS = ("dtype", "tf32", "attention", "channels_last", "fuse_qkv", "trace_unet", "compile", "compile_vae",
                 "compile_text_encoder", "quantize", "quantize_filter", "host_timesteps", "cudnn_benchmark")

#: Software whose change starts a new history segment (a step change, not noise).
SOFTWARE_FIELDS = ("python", "torch", "cuda", "cudnn", "diffusers", "transformers", "gpu_driver")
#: Software that only the quantized stages run: a new torchao is a step change for ``int8`` and ``fp8``,
#: and nothing to the stages that never import it (installing it must not cut their history).
QUANTIZATION_FIELDS = ("torchao",)


def software_fields(recipe_or_identity: dict) -> tuple[str, ...]:
    """The software whose change is a step change for a stage with this recipe (or identity)."""
    return SOFTWARE_FIELDS + (QUANTIZATION_FIELDS if recipe_or_identity.get("quantize") else ())

#: Fields of machine_info that decide whether timings are comparable. ``cpu_capability`` is the
#: instruction set torch dispatches to (``torch.backends.cpu.get_cpu_capability()``): two CPU
#: machines both named "AMD EPYC" with two cores ran ``tiny``'s bfloat16 stage in 0.30 s (AVX-512,
#: Nov) and 2.9 s (AVX2, Dec 1) a round. Files saved before it was recorded match any.
HARDWARE_FIELDS = ("accelerator", "gpu", "gpu_count", "gpu_memory_gib", "cpu", "cpu_count", "machine",
                   "cpu_capability")
#: Hardware fields older stored runs lack; a run without one matches any value of it.
LATER_HARDWARE_FIELDS = ("cpu_capability",)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown-cpu"


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def hardware_info() -> dict:
    import torch

    info = {"cpu": _cpu_model(), "cpu_count": _cpu_count(), "machine": platform.machine(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(accelerator="cuda", gpu=props.name, gpu_count=torch.cuda.device_count(),
                    gpu_memory_gib=round(props.total_memory / 2**30))
    else:
        info.update(accelerator="cpu", gpu=None, gpu_count=0, gpu_memory_gib=None)
    return {field: info[field] for field in HARDWARE_FIELDS}


def hardware_key(info: dict | None = None) -> str:
    """Folder name for this hardware, e.g. ``NVIDIA_H100_80GB_HBM3-x1`` or ``cpu-AMD_EPYC_7B13-2cores``."""
    info = info or hardware_info()
    if info["accelerator"] == "cuda":
        key = f"{info['gpu']}-x{info['gpu_count']}"
    else:
        key = f"cpu-{info['cpu']}-{info['cpu_count']}cores"
    return re.sub(r"_+", "_", re.sub(r"[^A-Za-z0-9.-]+", "_", key)).strip("_")


def single_gpu(hardware: dict) -> dict:
    """The same GPU alone: the folder a run on several GPUs (``pytest perf -n N``) is compared with
    while its own is empty, and where compiled kernels are kept (they depend on the GPU's model,
    not on how many there are)."""
    return dict(hardware, gpu_count=1) if hardware.get("accelerator") == "cuda" else dict(hardware)


def hardware_differences(saved: dict, current: dict) -> list[str]:
    return [f"{field}: {saved.get(field)!r} -> {current.get(field)!r}"
            for field in HARDWARE_FIELDS if saved.get(field) != current.get(field)
            and not (field in LATER_HARDWARE_FIELDS and (saved.get(field) is None or current.get(field) is None))]


def software_info() -> dict:
    import diffusers
    import torch
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "gpu_driver": _driver_version(),
        "torchao": _installed("torchao"),
    }


def _installed(distribution: str) -> str | None:
    """The installed version, read from its metadata: importing torchao to ask would cost seconds."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def _driver_version() -> str | None:
    import torch

    if not torch.cuda.is_available():
        return None
    try:
        text = Path("/proc/driver/nvidia/version").read_text()
        match = re.search(r"Kernel Module\s+([\d.]+)", text)
        return match.group(1) if match else None
    except OSError:
        return None



# -- the rule for "compared" ------------------------------------------------------------------------


def timer_name(timer: object) -> str:
    """``time.perf_counter``, ``perf_counter`` and the function itself all name the same timer."""
    target = getattr(timer, "target", timer)
    name = getattr(target, "__name__", None) or str(target)
    return name.rsplit(".", 1)[-1]


def identity(settings: dict, recipe: dict, timer: object) -> dict:
    """What must match for a stored entry to be this stage's baseline (see the module's rule)."""
    ident = {key: settings.get(key) for key in COMPARED_SETTINGS}
    ident["timer"] = timer_name(timer)
    ident.update({key: recipe[key] for key in RECIPE_FIELDS})
    return ident


def stored_identity(bench: dict) -> dict:
    extra = bench.get("extra_info") or {}
    ident = {key: extra[key] for key in COMPARED_SETTINGS if key in extra}
    timer = (bench.get("options") or {}).get("timer")
    if timer is not None:
        ident["timer"] = timer_name(timer)
    recipe = extra.get("recipe")
    if not isinstance(recipe, dict):
        recipe = {key: extra[key] for key in ("dtype", "tf32", "attention") if key in extra}
    ident.update({key: recipe[key] for key in RECIPE_FIELDS if key in recipe})
    return ident


def identity_differences(saved: dict, current: dict) -> list[str]:
    return [f"{key} {saved[key]!r} -> {current[key]!r}" for key in current if key in saved and saved[key] != current[key]]


def software_changed(saved: dict, current: dict, fields: tuple[str, ...] = SOFTWARE_FIELDS) -> list[str]:
    """What changed between two runs' software; a field either run did not record is not a change."""
    return [f"{key} {saved[key]} -> {current[key]}" for key in fields
            if key in saved and key in current and saved[key] != current[key]]


@dataclasses.dataclass
class StagePlan:
    """What one stage is compared with: its baseline entry and the history of its medians, or why not."""

    stage: str
    baseline: StoredRun | None = None
    entry: dict | None = None
    history: list[dict] = dataclasses.field(default_factory=list)  # entries, oldest first, ending with ``entry``
    reason: str = ""

    def medians(self) -> list[float]:
        return [bench["stats"]["median"] for bench in self.history]

    def fastest(self) -> list[float]:
        return [stats["min"] if "min" in stats else min(stats["data"])
                for stats in (bench["stats"] for bench in self.history) if "min" in stats or stats.get("data")]

    def gpu_medians(self) -> list[float]:
        return [statistics.median(gpu) for gpu in map(gpu_samples, self.history) if gpu]


@dataclasses.dataclass
class Plan:
    folder: Path
    runs: list[StoredRun]
    stages: dict[str, StagePlan]

    def baselines(self) -> list[StoredRun]:
        """The stored runs some stage is compared with, oldest first."""
        used = {id(p.baseline): p.baseline for p in self.stages.values() if p.baseline is not None}
        return sorted(used.values(), key=lambda run: run.number)

    def not_selected(self, selected: list[str]) -> list[str]:
        """Stages held by the baselines in use that this run does not select."""
        names: list[str] = []
        for run in self.baselines():
            names += [name for name in run.entries() if name not in selected and name not in names]
        return names


def plan(runs: list[StoredRun], folder: Path, hardware: dict, identities: dict[str, dict],
         chosen: StoredRun | None = None) -> Plan:
    """Apply the rule to every stage in ``identities`` (stage name -> :func:`identity`).

    ``runs`` are the usable stored runs of the hardware folder, oldest first, read before this
    run measures anything; ``chosen`` is the run ``--benchmark-compare=...`` named, if any.
    """
    if chosen is not None:
        position = next((i for i, run in enumerate(runs) if run.path.resolve() == chosen.path.resolve()), None)
        pool = runs[:position + 1] if position is not None else [chosen]
        candidates = [pool[-1]]
    else:
        pool = candidates = runs
    stage_plans = {}
    for stage, ident in identities.items():
        stage_plan = StagePlan(stage)
        for run in reversed(candidates):
            differences = hardware_differences(run.hardware, hardware)
            entry = run.entries().get(stage)
            mismatch = identity_differences(stored_identity(entry), ident) if entry is not None else []
            if differences:
                stage_plan.reason = stage_plan.reason or (
                    f"{run.path.name} is from other hardware ({'; '.join(differences)})")
            elif entry is None:
                if chosen is not None:
                    stage_plan.reason = f"{run.path.name} does not hold it"
            elif mismatch:
                stage_plan.reason = stage_plan.reason or (
                    f"{run.path.name} measured it another way ({', '.join(mismatch)})")
            else:
                stage_plan.baseline, stage_plan.entry = run, entry
                stage_plan.history = _history(pool, run, stage, ident, hardware)
                stage_plan.reason = ""
                break
        if stage_plan.baseline is None and not stage_plan.reason:
            where = storage.shown(folder)
            stage_plan.reason = (f"no stored run for this hardware in {where} holds it" if runs
                                 else f"no baseline for this hardware in {where}")
        stage_plans[stage] = stage_plan
    return Plan(folder=folder, runs=runs, stages=stage_plans)


def _history(pool: list[StoredRun], baseline: StoredRun, stage: str, ident: dict, hardware: dict) -> list[dict]:
    entries = []
    fields = software_fields(ident)
    for run in reversed(pool[:pool.index(baseline) + 1]):
        if software_changed(run.software, baseline.software, fields):
            break
        entry = run.entries().get(stage)
        if entry is not None and not hardware_differences(run.hardware, hardware) \
                and not identity_differences(stored_identity(entry), ident):
            entries.append(entry)
    return entries[::-1]


def trend(runs: list[StoredRun], stage: str, ident: dict, hardware: dict) -> list[tuple[StoredRun, dict]]:
    """Every stored run of this hardware that measured ``stage`` the way ``ident`` says, oldest
    first, across software changes (a trend is where a new torch shows as a step)."""
    found = []
    for run in runs:
        entry = run.entries().get(stage)
        if entry is not None and not hardware_differences(run.hardware, hardware) \
                and not identity_differences(stored_identity(entry), ident):
            found.append((run, entry))
    return found


def gpu_samples(bench: dict) -> list[float]:
    """A stored entry's GPU busy seconds per profiled round (empty on CPU and in older files)."""
    samples = (bench.get("extra_info") or {}).get("gpu_seconds")
    return [float(x) for x in samples] if isinstance(samples, list) else []


def select(folder: Path, selector: str, storage_root: Path) -> tuple[StoredRun | None, str | None]:
    """The stored run ``--benchmark-compare=SELECTOR`` names, or one line saying why there is none.

    SELECTOR is a path to a file, a number or file-name prefix (``0002``, ``0002_nightly``), a
    saved name (``nightly``: its newest run), or pytest-benchmark's ``KEY/NUM`` form.
    """
    path = Path(selector)
    if path.is_file():
        try:
            return storage.read(path), None
        except storage.StoredRunError as exc:
            return None, str(exc)
    if len(path.parts) == 2:
        folder, selector = storage_root / path.parts[0], path.parts[1]
    elif len(path.parts) > 2:
        return None, f"{selector!r} is no file, and not of the form NUM or KEY/NUM"
    files = storage.run_files(folder)
    matching = [p for p in files if p.name.startswith(selector) or (storage.run_name_parts(p.name) or (0, ""))[1] == selector]
    if not matching:
        stored = ", ".join(p.name for p in files[-5:]) or "none"
        return None, f"no stored run in {storage.shown(folder)} matches {selector!r} (newest stored: {stored})"
    try:
        return storage.read(matching[-1]), None
    except storage.StoredRunError as exc:
        return None, str(exc)
