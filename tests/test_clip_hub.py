"""CLIP-style model folders and ``lookalike models pull``, on a tiny CLIP-shaped model built here
(ONNX graphs made with ``onnx.helper``, a WordLevel tokenizer) served from a local HTTP server
that honours ``Range`` and can fail on purpose."""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace

from lookalike.errors import InvalidInputError, ModelError
from lookalike.models import hub
from lookalike.models.clip import ClipModel

SIZE = 32
DIM = 8
WORDS = ["a", "photo", "of", "the", "cat", "dog", "red", "blue", "car", "on", "sofa", "big", "small"]
VOCAB = {"[PAD]": 0, "[UNK]": 1, **{word: i + 2 for i, word in enumerate(WORDS)}}


# -- a tiny CLIP-shaped model -------------------------------------------------------------------


def _save(graph: onnx.GraphProto, path: Path) -> None:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def image_graph(path: Path, *, side: int | str = SIZE) -> None:
    """pixel_values [N, 3, S, S] -> mean per channel -> [N, 3] @ W [3, 8] (+ a per-channel square
    term so colours are told apart in more than 3 directions)."""
    rng = np.random.default_rng(1)
    w1 = numpy_helper.from_array(rng.standard_normal((3, DIM)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((3, DIM)).astype(np.float32), "w2")
    nodes = [
        helper.make_node("GlobalAveragePool", ["pixel_values"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "w1"], ["linear"]),
        helper.make_node("Mul", ["flat", "flat"], ["squared"]),
        helper.make_node("MatMul", ["squared", "w2"], ["quadratic"]),
        helper.make_node("Add", ["linear", "quadratic"], ["image_embeds"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny-image",
        [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["batch", 3, side, side])],
        [helper.make_tensor_value_info("image_embeds", TensorProto.FLOAT, ["batch", DIM])],
        [w1, w2],
    )
    _save(graph, path)


def text_graph(path: Path, *, length: int | None = None, mask: bool = False) -> None:
    """input_ids [N, L] -> Gather from a [vocab, 8] table -> mean over tokens (over the real
    tokens when the graph takes an attention_mask)."""
    table = np.random.default_rng(2).standard_normal((len(VOCAB), DIM)).astype(np.float32)
    initializers = [numpy_helper.from_array(table, "table")]
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", length or "sequence"])]
    nodes = [helper.make_node("Gather", ["table", "input_ids"], ["tokens"], axis=0)]
    if mask:
        inputs.append(
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", length or "sequence"])
        )
        initializers.append(numpy_helper.from_array(np.array([2], dtype=np.int64), "axis2"))
        initializers.append(numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"))
        nodes += [
            helper.make_node("Cast", ["attention_mask"], ["maskf"], to=TensorProto.FLOAT),
            helper.make_node("Unsqueeze", ["maskf", "axis2"], ["mask3"]),
            helper.make_node("Mul", ["tokens", "mask3"], ["masked"]),
            helper.make_node("ReduceSum", ["masked", "axis1"], ["summed"], keepdims=0),
            helper.make_node("ReduceSum", ["mask3", "axis1"], ["count"], keepdims=0),
            helper.make_node("Div", ["summed", "count"], ["text_embeds"]),
        ]
    else:
        nodes.append(helper.make_node("ReduceMean", ["tokens"], ["text_embeds"], axes=[1], keepdims=0))
    graph = helper.make_graph(
        nodes,
        "tiny-text",
        inputs,
        [helper.make_tensor_value_info("text_embeds", TensorProto.FLOAT, ["batch", DIM])],
        initializers,
    )
    _save(graph, path)


def tokenizer_file(path: Path) -> None:
    tokenizer = Tokenizer(WordLevel(VOCAB, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = Whitespace()
    tokenizer.save(str(path))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_model_folder(
    folder: Path, *, text_length: int | None = None, mask: bool = True, with_files: bool = False
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    image_graph(folder / "image.onnx")
    text_graph(folder / "text.onnx", length=text_length, mask=mask)
    tokenizer_file(folder / "tokenizer.json")
    config: dict[str, Any] = {
        "name": "tiny-clip",
        "image_size": SIZE,
        "mean": [0.5, 0.5, 0.5],
        "std": [0.25, 0.25, 0.25],
        "dimension": DIM,
        "context_length": 16,
    }
    if with_files:
        config["files"] = {name: sha256(folder / name) for name in ("image.onnx", "text.onnx", "tokenizer.json")}
    (folder / "model.json").write_text(json.dumps(config))
    return folder


def write_manifest(folder: Path, *, form: str = "map", **overrides: str) -> dict[str, str]:
    files = {name: sha256(folder / name) for name in ("model.json", "image.onnx", "text.onnx", "tokenizer.json")}
    files.update(overrides)
    listed: Any = files
    if form == "list":
        listed = [
            {"path": name, "sha256": digest, "size": (folder / name).stat().st_size if (folder / name).exists() else 1}
            for name, digest in files.items()
        ]
    (folder / "manifest.json").write_text(json.dumps({"name": "tiny-clip", "files": listed}))
    return files


# -- a local HTTP server ------------------------------------------------------------------------


@dataclass
class ServerState:
    root: Path
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    #: path -> failure to inject on the next requests for it: "503" or "drop" (body cut halfway)
    failures: dict[str, list[str]] = field(default_factory=dict)
    ignore_range: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fail(self, path: str, *modes: str) -> None:
        self.failures.setdefault(path, []).extend(modes)

    def file_requests(self, name: str) -> list[str | None]:
        return [rng for path, rng in self.requests if path.endswith("/" + name)]


def make_handler(state: ServerState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            path = self.path.split("?", 1)[0]
            range_header = self.headers.get("Range")
            with state.lock:
                state.requests.append((path, range_header))
                pending = state.failures.get(path.rsplit("/", 1)[-1])
                mode = pending.pop(0) if pending else None
            target = (state.root / path.lstrip("/")).resolve()
            if not target.is_relative_to(state.root.resolve()) or not target.is_file():
                self.send_error(404)
                return
            if mode == "503":
                self.send_response(503)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            data = target.read_bytes()
            start = 0
            match = re.fullmatch(r"bytes=(\d+)-", range_header or "")
            if match and not state.ignore_range:
                start = int(match.group(1))
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            if mode == "drop":  # half the body, then the connection goes away
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(body)

    return Handler


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[ServerState, str, Path]]:
    """A model folder under ``<root>/models/tiny/`` served on 127.0.0.1; yields the server's
    state, the folder's URL and the folder."""
    root = tmp_path / "www"
    folder = make_model_folder(root / "models" / "tiny")
    write_manifest(folder)
    state = ServerState(root)
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        yield state, f"http://{host!s}:{port}/models/tiny/", folder
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(hub, "BACKOFF_S", 0.0)
    monkeypatch.setenv("LOOKALIKE_CACHE_DIR", str(tmp_path / "cache"))


def coloured(rgb: tuple[int, int, int], size: tuple[int, int] = (48, 40)) -> Image.Image:
    return Image.new("RGB", size, rgb)


# -- ClipModel ----------------------------------------------------------------------------------


def test_clip_model_embeds_images_and_text(tmp_path: Path) -> None:
    model = ClipModel.load(make_model_folder(tmp_path / "m", with_files=True))
    assert (model.name, model.dimension, model.image_size) == ("tiny-clip", DIM, SIZE)

    images = [coloured((255, 0, 0)), coloured((0, 0, 255), (20, 64)), Image.new("L", (33, 90), 128)]
    vectors = model.embed_images(images)
    assert vectors.shape == (3, DIM) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert float(vectors[0] @ vectors[1]) < 0.999  # red and blue differ
    np.testing.assert_allclose(model.embed_images(images[:1])[0], vectors[0], atol=1e-6)
    assert model.preprocess(images).shape == (3, 3, SIZE, SIZE)
    assert model.embed_images([]).shape == (0, DIM)

    texts = ["a photo of a cat", "dog", "a big red car on the sofa"]
    text_vectors = model.embed_text(texts)
    assert text_vectors.shape == (3, DIM) and text_vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(text_vectors, axis=1), 1.0, atol=1e-5)
    # Dynamic length: padded to the longest text only, and the mask keeps padding out.
    ids, mask = model.tokenize(texts)
    assert ids.shape == (3, 7) and mask.sum(axis=1).tolist() == [5, 1, 7]
    np.testing.assert_allclose(model.embed_text(["dog"])[0], text_vectors[1], atol=1e-6)

    with pytest.raises(InvalidInputError):
        model.embed_text(["  "])
    with pytest.raises(InvalidInputError):
        model.embed_text("a cat")


def test_clip_model_pads_to_the_graphs_fixed_length(tmp_path: Path) -> None:
    model = ClipModel.load(make_model_folder(tmp_path / "m", text_length=12, mask=False))
    assert model.text_length == 12
    ids, _mask = model.tokenize(["cat", "a photo of the small dog on a blue sofa big red car"])
    assert ids.shape == (2, 12)
    assert ids[0, 1:].tolist() == [0] * 11  # padded with 0
    vectors = model.embed_text(["cat", "a photo of a dog"])
    assert vectors.shape == (2, DIM)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda f: (f / "text.onnx").unlink(), "text_model file 'text.onnx' is missing"),
        (lambda f: (f / "model.json").write_text("{not json"), "invalid model config"),
        (lambda f: (f / "model.json").unlink(), "no readable model.json"),
        (lambda f: (f / "image.onnx").write_bytes(b"garbage"), "image.onnx"),
        (lambda f: (f / "tokenizer.json").write_text("{}"), "tokenizer.json"),
    ],
)
def test_clip_model_load_rejects_broken_folders(tmp_path: Path, damage: Any, message: str) -> None:
    folder = make_model_folder(tmp_path / "m")
    damage(folder)
    with pytest.raises(ModelError, match=re.escape(message)):
        ClipModel.load(folder)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"dimension": 7}, "first output must be [N, 7]"),
        ({"image_size": 30}, "differs from image_size 30"),
        ({"std": [1.0, 0.0, 1.0]}, "std must be 3 positive numbers"),
        ({"mean": [0.5, 0.5]}, "invalid model config"),
        ({"imagesize": 32}, "invalid model config"),
        ({"image_model": "../image.onnx"}, "unsafe file name"),
        ({"files": {"image.onnx": "0" * 64}}, "'image.onnx' has sha256"),
        ({"files": {"extra.bin": "0" * 64}}, "'extra.bin' (listed in files) is missing"),
    ],
)
def test_clip_model_load_validates_the_config(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    folder = make_model_folder(tmp_path / "m")
    config = json.loads((folder / "model.json").read_text())
    config.update(change)
    (folder / "model.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match=re.escape(message)):
        ClipModel.load(folder)


# -- pull ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["map", "list"])
def test_pull_end_to_end(served: tuple[ServerState, str, Path], tmp_path: Path, form: str) -> None:
    state, url, source = served
    write_manifest(source, form=form)
    seen: list[tuple[str, int, int | None]] = []
    folder = hub.pull("tiny", url, tmp_path / "pulled", progress=lambda *a: seen.append(a))

    assert folder == tmp_path / "pulled"
    for name in ("model.json", "image.onnx", "text.onnx", "tokenizer.json", "manifest.json"):
        assert (folder / name).read_bytes() == (source / name).read_bytes()
    assert not list(folder.glob("*.part"))
    assert {name for name, _, _ in seen} == {"model.json", "image.onnx", "text.onnx", "tokenizer.json"}
    size = (source / "image.onnx").stat().st_size
    assert ("image.onnx", size, size) in seen

    model = ClipModel.load(folder)
    images = model.embed_images([coloured((10, 200, 30)), coloured((200, 10, 30))])
    texts = model.embed_text(["a red car", "cat"])
    assert images.shape == texts.shape == (2, DIM)
    np.testing.assert_allclose(np.linalg.norm(np.vstack([images, texts]), axis=1), 1.0, atol=1e-5)


def test_pull_defaults_to_the_cache_dir(served: tuple[ServerState, str, Path], tmp_path: Path) -> None:
    _state, url, _source = served
    folder = hub.pull("tiny-default", url + "manifest.json")  # the manifest's own URL works too
    assert folder == tmp_path / "cache" / "models" / "tiny-default"
    assert (folder / "image.onnx").is_file()


def test_a_second_pull_downloads_nothing(served: tuple[ServerState, str, Path], tmp_path: Path) -> None:
    state, url, _source = served
    hub.pull("tiny", url, tmp_path / "pulled")
    state.requests.clear()
    hub.pull("tiny", url, tmp_path / "pulled")
    assert [path for path, _ in state.requests] == ["/models/tiny/manifest.json"]


def test_an_interrupted_download_resumes_with_range(served: tuple[ServerState, str, Path], tmp_path: Path) -> None:
    state, url, source = served
    state.fail("image.onnx", "drop")
    state.fail("model.json", "503")
    folder = hub.pull("tiny", url, tmp_path / "pulled")

    assert (folder / "image.onnx").read_bytes() == (source / "image.onnx").read_bytes()
    size = (source / "image.onnx").stat().st_size
    assert state.file_requests("image.onnx") == [None, f"bytes={size // 2}-"]
    assert state.file_requests("model.json") == [None, None]  # 503, then again


def test_a_part_file_left_by_an_earlier_pull_is_resumed(served: tuple[ServerState, str, Path], tmp_path: Path) -> None:
    state, url, source = served
    dest = tmp_path / "pulled"
    dest.mkdir()
    data = (source / "text.onnx").read_bytes()
    (dest / "text.onnx.part").write_bytes(data[:100])
    hub.pull("tiny", url, dest)
    assert state.file_requests("text.onnx") == ["bytes=100-"]
    assert (dest / "text.onnx").read_bytes() == data


def test_a_server_ignoring_range_restarts_from_zero(served: tuple[ServerState, str, Path], tmp_path: Path) -> None:
    state, url, source = served
    state.ignore_range = True
    dest = tmp_path / "pulled"
    dest.mkdir()
    (dest / "text.onnx.part").write_bytes(b"x" * 100)  # would corrupt the file if appended to
    hub.pull("tiny", url, dest)
    assert state.file_requests("text.onnx") == ["bytes=100-"]
    assert (dest / "text.onnx").read_bytes() == (source / "text.onnx").read_bytes()


def test_a_stale_part_file_is_downloaded_again(served: tuple[ServerState, str, Path], tmp_path: Path) -> None:
    state, url, source = served
    dest = tmp_path / "pulled"
    dest.mkdir()
    (dest / "text.onnx.part").write_bytes(b"x" * 100)  # resumable, but not this file's start
    hub.pull("tiny", url, dest)
    assert state.file_requests("text.onnx") == ["bytes=100-", None]
    assert (dest / "text.onnx").read_bytes() == (source / "text.onnx").read_bytes()


def test_a_checksum_mismatch_leaves_no_file(served: tuple[ServerState, str, Path], tmp_path: Path) -> None:
    _state, url, source = served
    write_manifest(source, **{"image.onnx": "ab" * 32})
    dest = tmp_path / "pulled"
    with pytest.raises(ModelError, match=r"image\.onnx: sha256 mismatch"):
        hub.pull("tiny", url, dest)
    assert not (dest / "image.onnx").exists()
    assert not (dest / "image.onnx.part").exists()


@pytest.mark.parametrize("bad", ["../evil.txt", "/etc/evil.txt", "sub/../../evil.txt", "a\\..\\evil.txt", ""])
def test_path_traversal_in_the_manifest_is_refused(
    served: tuple[ServerState, str, Path], tmp_path: Path, bad: str
) -> None:
    state, url, source = served
    write_manifest(source, **{bad: "cd" * 32})
    dest = tmp_path / "pulled" / "inner"
    with pytest.raises(ModelError, match="refusing file"):
        hub.pull("tiny", url, dest)
    assert [path for path, _ in state.requests] == ["/models/tiny/manifest.json"]  # nothing downloaded
    assert not (tmp_path / "pulled" / "evil.txt").exists()


def test_persistent_failures_give_up_with_the_file_named(served: tuple[ServerState, str, Path], tmp_path: Path) -> None:
    state, url, _source = served
    state.fail("text.onnx", *["503"] * (hub.RETRIES + 1))
    with pytest.raises(ModelError, match=rf"text\.onnx: download failed after {hub.RETRIES + 1} attempts.*HTTP 503"):
        hub.pull("tiny", url, tmp_path / "pulled")
    assert len(state.file_requests("text.onnx")) == hub.RETRIES + 1


def test_pull_reports_missing_files_and_bad_arguments(served: tuple[ServerState, str, Path], tmp_path: Path) -> None:
    _state, url, source = served
    with pytest.raises(ModelError, match="manifest.json: not found"):
        hub.pull("tiny", url.replace("/tiny/", "/nothing/"), tmp_path / "a")
    write_manifest(source, **{"extra.bin": "ef" * 32})
    with pytest.raises(ModelError, match="extra.bin: not found"):
        hub.pull("tiny", url, tmp_path / "b")
    with pytest.raises(ModelError, match="model name"):
        hub.pull("../up", url, tmp_path / "c")
    with pytest.raises(ModelError, match="http"):
        hub.pull("tiny", "ftp://example.invalid/x/", tmp_path / "d")


def test_pull_checks_the_folder_is_a_model(served: tuple[ServerState, str, Path], tmp_path: Path) -> None:
    _state, url, source = served
    (source / "model.json").write_text(json.dumps({"name": "x"}))
    write_manifest(source)
    with pytest.raises(ModelError, match="not a usable model folder"):
        hub.pull("tiny", url, tmp_path / "pulled")
