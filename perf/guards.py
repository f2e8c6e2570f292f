"""The black-image guard: a fast stage that produces garbage is a failure, not a win.

The guide warns that ``torch.autocast`` gives black images; fp16 overflow in a VAE gives NaN.
Either would look like a speed-up to a timer, so every image of every stage is checked after
timing. Thresholds are loose on purpose: they catch numeric collapse, not ugly pictures.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .quality import Similarity

BLACK_MAX = 0.02  # every pixel at most this bright (images are in [0, 1])
FLAT_STD = 1e-3  # one colour everywhere


class GuardError(AssertionError):
    pass


@dataclasses.dataclass(frozen=True)
class ImageStats:
    nan: int
    inf: int
    size: int
    max: float
    std: float

    @classmethod
    def of(cls, image: np.ndarray) -> "ImageStats":
        image = np.asarray(image, dtype=np.float64)
        finite = image[np.isfinite(image)]
        return cls(
            nan=int(np.isnan(image).sum()),
            inf=int(np.isinf(image).sum()),
            size=int(image.size),
            max=float(finite.max()) if finite.size else float("nan"),
            std=float(finite.std()) if finite.size else float("nan"),
        )

    def problem(self) -> str | None:
        if self.nan:
            return f"holds NaN ({self.nan} of {self.size} values)"
        if self.inf:
            return f"holds inf ({self.inf} of {self.size} values)"
        if self.max <= BLACK_MAX:
            return f"is black (max pixel {self.max:.4f} <= {BLACK_MAX})"
        if self.std < FLAT_STD:
            return f"is one flat colour (std {self.std:.2e} < {FLAT_STD})"
        return None


def check_quality(stage: str, similarity: Similarity | None, floor: float | None) -> None:
    """Raise :class:`GuardError` when the stage's PSNR against the reference stage is under its floor
    (``similarity``: a :class:`perf.quality.Similarity`, or None where there is no reference)."""
    if similarity is None or floor is None or similarity.psnr_db >= floor:
        return
    raise GuardError(
        f"stage {stage!r}: quality PSNR {similarity.psnr_db:.1f} dB against {similarity.reference} is under its "
        f"floor of {floor:.1f} dB (perf/stages.py, MIN_PSNR): the images are numerically wrong, not just faster"
    )


def check_images(images: Any, stage: str) -> list[ImageStats]:
    """Raise :class:`GuardError` naming the stage and the statistic that tripped."""
    if hasattr(images, "detach"):
        images = images.detach().float().cpu().numpy()
    images = np.asarray(images)
    stats = [ImageStats.of(image) for image in images]
    for index, stat in enumerate(stats):
        problem = stat.problem()
        if problem:
            raise GuardError(
                f"stage {stage!r}: image {index} {problem}; a broken numeric path "
                "(fp16 overflow, torch.autocast) produces this, not a faster pipeline"
            )
    return stats
