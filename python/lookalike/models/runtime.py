"""A thin, thread-safe wrapper around an onnxruntime session."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from lookalike.models import default_threads

__all__ = ["OnnxModel"]


class OnnxModel:
    """One ONNX graph on the CPU. ``run`` may be called from many threads at once (onnxruntime
    sessions are thread-safe); ``threads`` bounds the intra-op threads of each call."""

    def __init__(self, path: str | Path, *, threads: int | None = None) -> None:
        self.path = Path(path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or default_threads()
        options.inter_op_num_threads = 1
        # Idle inference threads sleep instead of spinning, so image decoding running beside
        # the model (ingest overlaps them) gets the cores.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        names = list(outputs) if outputs is not None else self.output_names
        values = self.session.run(names, dict(inputs))
        return {name: np.asarray(value) for name, value in zip(names, values, strict=True)}
