"""The ``matching`` collection type: near-duplicate image matching.

Finds copies of an image that were resized, re-encoded (JPEG), cropped (up to about 20%),
marked with a small overlay (a text or logo patch), slightly rotated, or mirrored.

Each view of an image is one cosine vector that concatenates three weighted blocks
(:mod:`lookalike_matching.features`):

- the EfficientNet-Lite0 embedding, L2-normalised (what the image shows; robust to crops,
  overlays and rotation, less so to heavy re-encoding);
- the 64-bit DCT perceptual hash as +-1 bits (the coarse greyscale structure; robust to
  resizing and re-encoding, not to crops);
- a 6 x 6 colour layout (where the colours are; separates images that show similar things in
  different places, which a pooled embedding cannot).

Scaled by the square roots of their weights, the blocks make a unit vector whose cosine is
exactly ``we * cos(embeddings) + wh * (1 - 2 * hamming / 64) + wl * cos(layouts)``, with
``wh = hash_weight``, ``wl = layout_weight`` and ``we = 1 - wh - wl``: one index search ranks
by the weighted sum, and the distance is ``1 - `` that.

Views (:class:`~lookalike.sdk.SupportsMultiVector`, 4 per image): the image, its horizontal
mirror (a flipped copy matches), its centre crop (85% of each side) and that crop's mirror (a
cropped copy matches the crop's hash and layout). A record's distance is its closest view's;
queries use view 0. The views share one model run.

``duplicate_threshold`` (hits carry ``is_duplicate``, and ``near_duplicates()`` links records
within it) is calibrated by ``plugins/matching/calibrate.py`` for each pair of weights; the
``threshold`` option overrides it.

Why three blocks and four views (calibrate.py's data: 441 edited copies, 588 distinct queries):
the embedding and the hash alone (hash weight 0.3) with only the image and mirror views leave
the two kinds overlapping (at the best threshold 55 copies are missed and 5 distinct images fall
within it); the colour layout brings that to 31 and 0, the two centre-crop views to 20 and 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

import msgspec
import numpy as np
from PIL import Image

from lookalike.sdk import CollectionType, SupportsMultiVector, TypeContext, models
from lookalike_matching.features import VECTOR_DIM, VIEWS, Features, assemble, features, similarity
from lookalike_matching.phash import hamming, phash
from lookalike_matching.thresholds import threshold_for

__all__ = [
    "MatchingType",
    "MatchingConfig",
    "DEFAULT_HASH_WEIGHT",
    "DEFAULT_LAYOUT_WEIGHT",
    "DEFAULT_THRESHOLD",
    "phash",
    "hamming",
    "similarity",
]

#: Default weights: the lowest (smoothed) error count of the weight grid in calibrate.py's run.
DEFAULT_HASH_WEIGHT = 0.1
DEFAULT_LAYOUT_WEIGHT = 0.3
#: The duplicate threshold (cosine distance) for the default weights, from
#: ``plugins/matching/calibrate.py`` (``DEFAULT_THRESHOLD = 0.2360`` in its output; the table for
#: other weights is in thresholds.py). On its 49 originals (25 scikit-image photos, 24 fakes) and
#: 441 edited copies, 421 copies fall within it: all resizes to 50%, JPEG q30, 50% + JPEG q75,
#: flips and 10% centre crops; 98% of 20% centre crops and 3 degree rotations; 86% of overlays
#: (the misses: textures and near-uniform images that the patch dominates); 78% of 20% strips cut
#: off. No distinct image falls within it: the closest is at 0.244 (two synthetic fakes), the
#: median at 0.561.
#:
#: That calibration set had no hard distractors. bench/quality (its matching suite: LFW face
#: crops, upscaled Fashion-MNIST items, fakes sharing a background) found distinct images at
#: 0.134 and a precision of only 0.25 at 0.236; precision >= 0.99 there needs 0.134, where 76%
#: of edited copies still count as duplicates. A duplicate flag must not merge different images,
#: so every calibrated threshold is scaled by PRECISION_SCALE = 0.134 / 0.236.
PRECISION_SCALE = 0.568
DEFAULT_THRESHOLD = round(0.2360 * PRECISION_SCALE, 4)

Weight = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]


class MatchingConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    #: Share of the 64-bit perceptual hash in the similarity (0 to 1).
    hash_weight: Weight = DEFAULT_HASH_WEIGHT
    #: Share of the 6 x 6 colour layout in the similarity (0 to 1); the embedding gets the rest,
    #: ``1 - hash_weight - layout_weight``, which must not be negative.
    layout_weight: Weight = DEFAULT_LAYOUT_WEIGHT
    #: Cosine distance under which two images are duplicates; None: the threshold calibrated
    #: for the weights.
    threshold: Annotated[float, msgspec.Meta(gt=0.0, le=2.0)] | None = None

    def __post_init__(self) -> None:
        if self.hash_weight + self.layout_weight > 1.0 + 1e-9:
            raise ValueError(
                f"hash_weight + layout_weight must be at most 1, got {self.hash_weight} + {self.layout_weight}"
            )


class MatchingType(CollectionType, SupportsMultiVector):
    name = "matching"
    version = "1.0"
    description = (
        "Near-duplicate matching: copies that were resized, re-encoded, cropped, overlaid or mirrored "
        "(embedding + perceptual hash + colour layout)"
    )
    Config = MatchingConfig
    metric = "cos"
    vectors_per_image = len(VIEWS)
    #: For the default configuration; an instance holds the one for its configuration.
    duplicate_threshold = DEFAULT_THRESHOLD
    #: Exact scans up to 20,000 vectors (5,000 records of 4 views): a graph search can miss an
    #: isolated near-duplicate, and finding it is the point of this type.
    default_exact_threshold = 20_000

    config: MatchingConfig

    def __init__(self, config: MatchingConfig, context: TypeContext) -> None:
        super().__init__(config, context)
        if config.threshold is not None:
            threshold = config.threshold
        else:
            threshold = threshold_for(config.hash_weight, config.layout_weight) * PRECISION_SCALE
        self.duplicate_threshold = float(threshold)

    @property
    def dimension(self) -> int:
        return VECTOR_DIM

    @property
    def input_side(self) -> int | None:
        return 256  # the embedding sees 224 px, the hash and layout far fewer

    def preprocess(self, image: Image.Image) -> Any:
        return features(image)

    def _embeddings(self, batch: Sequence[Features]) -> np.ndarray:
        pixels = np.stack([item.pixels for item in batch]).astype(np.float32, copy=False)
        embedding, _logits = models.image_model(self.context.threads).run(pixels)
        return embedding

    def embed_views(self, batch: Sequence[Any]) -> np.ndarray:
        if not batch:
            return np.zeros((0, self.vectors_per_image, self.dimension), dtype=np.float32)
        return assemble(
            self._embeddings(batch),
            np.stack([item.bits for item in batch]),
            np.stack([item.layouts for item in batch]),
            self.config.hash_weight,
            self.config.layout_weight,
        )

    def embed_images(self, batch: Sequence[Any]) -> np.ndarray:
        if not batch:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return assemble(
            self._embeddings(batch),
            np.stack([item.bits[:1] for item in batch]),
            np.stack([item.layouts[:1] for item in batch]),
            self.config.hash_weight,
            self.config.layout_weight,
        )[:, 0]
