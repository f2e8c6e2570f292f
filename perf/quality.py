"""How far a stage's images are from the reference stage's: the numbers, not the verdict.

The black-image guard (:mod:`perf.guards`) catches numeric collapse. A stage that is fast because
it is numerically *wrong* but still draws something (an attention scale bug, a lost upcast, a
quantization that wrecks the output) passes it. So every stage's images are compared with its
family's **reference stage** (:func:`perf.stages.root`: ``fp32``, or ``bf16`` for a DiT) from the
same seed and settings, made once per run, untimed, from a build without injected faults.

Two measures a reader knows, both from ``torchmetrics``:

* **PSNR** (dB) of the stage's images against the reference's, over pixels in [0, 1]. It reads
  the error's energy on a log scale: each 3 dB down is the error doubling. This is what the
  gate judges: against the stage's floor (:data:`perf.stages.MIN_PSNR`) and against the
  stage's own value in its baseline (:mod:`perf.gate`).
* **SSIM** (structural similarity, 1 = the same picture). It is recorded and reported, not
  gated: the faults that matter here move it in the fifth decimal, where PSNR moves dB.

Above :data:`IDENTICAL_DB` (an RMS error of 1e-5, far below one 8-bit step) two images count as
the same: a stage that changes nothing numerically (the reference itself, a fused projection in
float32) then neither fails a floor nor "drops" from exact equality to float32 round-off.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch and numpy are imported where images are compared: judging stored runs needs neither
    import torch

#: PSNR at or above which two images are the same picture (RMS error 1e-5 of the [0, 1] range).
IDENTICAL_DB = 100.0


@dataclasses.dataclass(frozen=True)
class Similarity:
    """A stage's images against the reference stage's."""

    reference: str  # the reference stage's name
    psnr_db: float  # capped at IDENTICAL_DB
    ssim: float

    @property
    def identical(self) -> bool:
        return self.psnr_db >= IDENTICAL_DB

    def to_json(self) -> dict:
        return {"reference": self.reference, "psnr_db": round(self.psnr_db, 3), "ssim": round(self.ssim, 6)}


def _as_batch(images: Any) -> torch.Tensor:
    """Pipeline output (``output_type="np"``: N x H x W x C in [0, 1]) as float64 N x C x H x W."""
    import numpy as np
    import torch

    if hasattr(images, "detach"):
        images = images.detach().cpu().numpy()
    array = np.asarray(images, dtype=np.float64)
    if array.ndim == 3:
        array = array[None]
    return torch.from_numpy(np.ascontiguousarray(array.transpose(0, 3, 1, 2)))


def similarity(images: Any, reference_images: Any, reference: str) -> Similarity:
    """PSNR and SSIM of ``images`` against ``reference_images`` (the same seed, settings and shape)."""
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    import torch

    preds, target = _as_batch(images), _as_batch(reference_images)
    if preds.shape != target.shape:
        raise ValueError(f"images of shape {tuple(preds.shape)} against reference images of {tuple(target.shape)}")
    if torch.equal(preds, target):
        return Similarity(reference, IDENTICAL_DB, 1.0)
    psnr = float(peak_signal_noise_ratio(preds, target, data_range=1.0))
    # SSIM's 11-pixel Gaussian window needs images at least that large; tiny pipelines make 32 px.
    kernel = min(11, (min(preds.shape[-2:]) // 2) * 2 - 1)
    ssim = float(structural_similarity_index_measure(preds, target, data_range=1.0, kernel_size=kernel))
    return Similarity(reference, min(psnr, IDENTICAL_DB), ssim)


def stored(extra_info: Mapping[str, Any] | None) -> Similarity | None:
    """A stored entry's similarity (``extra_info.quality``), or None for files from before it was kept."""
    data = (extra_info or {}).get("quality")
    if not isinstance(data, dict):
        return None
    try:
        return Similarity(str(data["reference"]), float(data["psnr_db"]), float(data["ssim"]))
    except (KeyError, TypeError, ValueError):
        return None
