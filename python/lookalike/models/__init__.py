"""Models that run offline, without torch: ONNX graphs executed by onnxruntime.

- :mod:`lookalike.models.efficientnet`: EfficientNet-Lite0 converted from its ``.pth`` weights
  (read without torch) into an ONNX graph, cached once per machine.
- :mod:`lookalike.models.text`: the all-MiniLM-L6-v2 int8 sentence encoder.
- :mod:`lookalike.models.concepts`: the concept bridge from text to the image model's space.
- :mod:`lookalike.models.clip`: a CLIP-style model folder (ONNX image and text encoders).
- :mod:`lookalike.models.hub`: ``lookalike models pull``, resumable and sha256-verified.

Plugins reach these through :mod:`lookalike.sdk`.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir", "default_threads"]


def cache_dir() -> Path:
    """Where converted models and pulled model folders live: ``$LOOKALIKE_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/lookalike``, else ``~/.cache/lookalike``. Created on first use."""
    configured = os.environ.get("LOOKALIKE_CACHE_DIR")
    if configured:
        path = Path(configured)
    else:
        base = os.environ.get("XDG_CACHE_HOME")
        path = (Path(base) if base else Path.home() / ".cache") / "lookalike"
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_threads() -> int:
    """Inference threads: ``$LOOKALIKE_MODEL_THREADS``, else the number of usable cores."""
    configured = os.environ.get("LOOKALIKE_MODEL_THREADS")
    if configured:
        try:
            return max(1, int(configured))
        except ValueError:
            pass
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)
