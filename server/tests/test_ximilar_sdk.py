"""The unchanged ``ximilar-client`` SDK (1.39.0) against a real server process, for every
collection type: insert (``_base64``, ``_url``, ``_file``), search by ``_id`` and by image with
filters, ``k``, ``from`` and ``fields_to_return``, search_and_rank, random, get, update, remove,
allRecords paging and iteration, get_all_ids, ping, text search, Fashion's visualTagsKNN."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from PIL import ImageOps
from ximilar_fixtures import (  # noqa: F401 - fixtures
    ADMIN_TOKEN,
    ImageServer,
    Server,
    b64,
    picture,
    png,
    post,
    ximilar_images,
    ximilar_server,
)

pytest.importorskip("ximilar.client")

from ximilar.client import (  # noqa: E402
    ImageMatchingSearchClient,
    SimilarityColorsClient,
    SimilarityFashionClient,
    SimilarityPhotosClient,
    SimilarityProductsClient,
)
from ximilar.client.search import SimilarityPhotosOldClient, SimilarityProductsOldClient  # noqa: E402

ADMIN = ADMIN_TOKEN
_ids = itertools.count()


def fresh_id(prefix: str) -> str:
    return f"{prefix}-new-{next(_ids)}"


@dataclass
class Kind:
    """One collection type under test and how its records look."""

    name: str
    collection: str
    client: type[Any]
    images: bool = True

    def record(self, id_: str, seed: int, /, **meta: Any) -> dict[str, Any]:
        if self.images:
            return {"_id": id_, "_base64": b64(picture(seed)), "noresize": True, **meta}
        return {"_id": id_, "_vector": vector(seed), **meta}

    def query(self, seed: int) -> dict[str, Any]:
        """An external query of the picture (or vector) of `seed`."""
        if self.images:
            return {"_base64": b64(picture(seed)), "noresize": True}
        return {"_id": "not-stored", "_vector": vector(seed)}


def vector(seed: int) -> list[float]:
    return [float(((seed * 7 + i * 3) % 11) - 5 + (1 if i == seed % 8 else 0)) + 0.5 for i in range(8)]


KINDS = [
    Kind("generic", "photos", SimilarityPhotosClient),
    Kind("products", "products", SimilarityProductsClient),
    Kind("colors", "colors", SimilarityColorsClient),
    Kind("matching", "matching", ImageMatchingSearchClient),
    Kind("vectors", "vectors", SimilarityPhotosClient, images=False),
]

SEEDS = list(range(8))
KIND = {kind.name: kind for kind in KINDS}


def only(name: str) -> pytest.MarkDecorator:
    """Runs a test on the loaded collection of one type only."""
    return pytest.mark.parametrize("loaded", [KIND[name]], indirect=True, ids=[name])


@dataclass
class Loaded:
    kind: Kind
    server: Server
    client: Any
    ids: list[str]
    url_ids: list[str]
    file_ids: list[str]
    urls: dict[str, str]
    files: dict[str, str]


_loaded: dict[str, Loaded] = {}


@pytest.fixture(scope="module", params=KINDS, ids=[kind.name for kind in KINDS])
def loaded(
    request: pytest.FixtureRequest,
    ximilar_server: Server,  # noqa: F811
    ximilar_images: ImageServer,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Loaded]:
    """A collection of each type with 8 records inserted through the SDK (base64, plus `_url`
    and `_file` records for image types)."""
    kind: Kind = request.param
    if kind.name in _loaded:  # a test that picks one type (indirect parametrization) reuses the data
        yield _loaded[kind.name]
        return
    client = photos(ximilar_server, kind.collection, kind.client)
    ids = [f"{kind.name}-{seed}" for seed in SEEDS]
    records = [
        kind.record(id_, seed, category="even" if seed % 2 == 0 else "odd", seed=seed, product_id=f"p{seed}")
        for id_, seed in zip(ids, SEEDS, strict=True)
    ]
    result = client.insert(records[:4])
    assert result["status"]["code"] == 210, result
    result = client.insert(records[4:])
    assert result["status"]["code"] == 210, result
    assert [r["_id"] for r in result["records"]] == ids[4:]
    assert result["skipped_records"] == []
    url_ids: list[str] = []
    file_ids: list[str] = []
    urls: dict[str, str] = {}
    files: dict[str, str] = {}
    if kind.images:
        folder = tmp_path_factory.mktemp(f"files-{kind.name}")
        url_records = []
        file_records = []
        for seed in (20, 21):
            id_ = f"{kind.name}-url-{seed}"
            urls[id_] = ximilar_images.add(f"{kind.name}-{seed}.png", png(picture(seed)))
            url_records.append({"_id": id_, "_url": urls[id_], "category": "url"})
            url_ids.append(id_)
        for seed in (30, 31):
            id_ = f"{kind.name}-file-{seed}"
            path = folder / f"{seed}.png"
            path.write_bytes(png(picture(seed)))
            files[id_] = str(path)
            file_records.append({"_id": id_, "_file": str(path), "category": "file"})
            file_ids.append(id_)
        result = client.insert(url_records)
        assert result["status"]["code"] == 210, result
        result = client.insert(file_records)
        assert result["status"]["code"] == 210, result
    _loaded[kind.name] = Loaded(kind, ximilar_server, client, ids, url_ids, file_ids, urls, files)
    yield _loaded[kind.name]


def default_prefix(klass: type[Any]) -> str:
    return str(klass.__init__.__defaults__[1]).split("api.ximilar.com/", 1)[1]


def check_answer(result: dict[str, Any]) -> None:
    """The invariants of every kNN answer (checklist §0.8)."""
    assert result["status"]["code"] == 200, result
    assert result["answer_count"] == len(result["answer_records"]) == len(result["answer_distances"])
    distances = result["answer_distances"]
    assert all(d >= 0 for d in distances)
    assert distances == sorted(distances)
    assert isinstance(result["statistics"]["OperationTime"], int)


# -- every type ----------------------------------------------------------------------------------


def test_ping(loaded: Loaded) -> None:
    result = loaded.client.ping()
    assert result["status"] == {"code": 200, "text": "OK"}
    assert "info" in result


def test_search_by_id(loaded: Loaded) -> None:
    result = loaded.client.search({"_id": loaded.ids[3]}, k=3, fields_to_return=["_id", "category", "seed"])
    check_answer(result)
    assert result["answer_count"] == 3
    first = result["answer_records"][0]
    assert first == {"_id": loaded.ids[3], "category": "odd", "seed": 3}
    assert result["answer_distances"][0] == pytest.approx(0.0, abs=1e-4)
    assert all(set(r) <= {"_id", "category", "seed"} for r in result["answer_records"])


def test_search_by_image(loaded: Loaded) -> None:
    result = loaded.client.search(loaded.kind.query(5), k=4)
    check_answer(result)
    assert result["answer_records"][0] == {"_id": loaded.ids[5]}
    assert result["answer_distances"][0] < 0.01
    assert all(set(r) == {"_id"} for r in result["answer_records"])


def test_search_with_filter_k_and_all_fields(loaded: Loaded) -> None:
    result = loaded.client.search({"_id": loaded.ids[2]}, k=10, filter={"category": "odd"}, fields_to_return=["*"])
    check_answer(result)
    assert result["answer_count"] == 4  # the odd seeds
    assert {r["_id"] for r in result["answer_records"]} == {loaded.ids[s] for s in SEEDS if s % 2}
    assert all(r["category"] == "odd" and "seed" in r and "_base64" not in r for r in result["answer_records"])
    in_filter = loaded.client.search(
        {"_id": loaded.ids[2]}, k=10, filter={"seed": {"$in": [1, 2, 6]}, "category": {"$ne": "odd"}}
    )
    check_answer(in_filter)
    assert {r["_id"] for r in in_filter["answer_records"]} == {loaded.ids[2], loaded.ids[6]}


def test_search_from(loaded: Loaded) -> None:
    client = loaded.client
    everything = client.search({"_id": loaded.ids[0]}, k=6)
    check_answer(everything)
    data = client.construct_data({"_id": loaded.ids[0]}, k=3, **{"from": 2})
    page = client.post(client.PREDICT_ENDPOINT, data=data)
    check_answer(page)
    assert page["answer_records"] == everything["answer_records"][2:5]


def test_search_unknown_id(loaded: Loaded) -> None:
    result = loaded.client.search({"_id": "no-such-record"})
    assert result["status"]["code"] == 404
    assert result["answer_records"] == []


def test_search_and_rank(loaded: Loaded) -> None:
    ranked_ids = [loaded.ids[6], loaded.ids[1], loaded.ids[4]]
    records: list[dict[str, Any]] = [{"_id": id_} for id_ in ranked_ids]
    if loaded.kind.images:
        records.append({"_id": "external", "_base64": b64(picture(4)), "noresize": True})
    result = loaded.client.search_and_rank({"_id": loaded.ids[4]}, records, fields_to_return=["_id", "seed"])
    check_answer(result)
    shown = [r["_id"] for r in result["answer_records"]]
    assert sorted(shown) == sorted(r["_id"] for r in records)
    assert shown[0] == loaded.ids[4] or (shown[0] == "external" and shown[1] == loaded.ids[4])
    assert result["answer_distances"][0] < 0.01
    knn = loaded.client.search({"_id": loaded.ids[4]}, k=8)
    distances = dict(zip([r["_id"] for r in knn["answer_records"]], knn["answer_distances"], strict=True))
    for record, distance in zip(result["answer_records"], result["answer_distances"], strict=True):
        if record["_id"] in distances:
            assert distance == pytest.approx(distances[record["_id"]], abs=1e-3)


def test_random(loaded: Loaded) -> None:
    result = loaded.client.random(count=3, fields_to_return=["_id", "category"])
    assert result["status"]["code"] == 200
    assert result["answer_count"] == len(result["answer_records"]) == 3
    assert len({r["_id"] for r in result["answer_records"]}) == 3
    filtered = loaded.client.random(filter={"category": "even"}, count=10)
    assert {r["_id"] for r in filtered["answer_records"]} == {loaded.ids[s] for s in SEEDS if s % 2 == 0}


def test_get_records(loaded: Loaded) -> None:
    result = loaded.client.get_records([{"_id": loaded.ids[1]}, {"_id": loaded.ids[0]}], fields_to_return=["seed"])
    assert result["status"]["code"] == 200
    assert result["answer_records"] == [{"_id": loaded.ids[1], "seed": 1}, {"_id": loaded.ids[0], "seed": 0}]
    partial = loaded.client.get_records([{"_id": loaded.ids[1]}, {"_id": "missing"}])
    assert partial["status"]["code"] == 206
    assert partial["answer_records"] == [{"_id": loaded.ids[1]}]
    assert partial["skipped_records"][0]["_id"] == "missing"
    none = loaded.client.get_records([{"_id": "missing"}])
    assert none["status"]["code"] == 404


@pytest.mark.parametrize(
    "loaded", [k for k in KINDS if k.images], indirect=True, ids=[k.name for k in KINDS if k.images]
)
def test_url_and_file_records(loaded: Loaded) -> None:
    client = loaded.client
    result = client.get_records([{"_id": i} for i in loaded.url_ids + loaded.file_ids], fields_to_return=["*"])
    assert result["answer_count"] == 4
    by_id = {r["_id"]: r for r in result["answer_records"]}
    for id_ in loaded.url_ids:
        assert by_id[id_]["_url"] == loaded.urls[id_]
    for id_ in loaded.file_ids:
        assert by_id[id_]["_file"] == loaded.files[id_]
        assert "ximilar_file" not in by_id[id_] and "_base64" not in by_id[id_]
    # The stored images are the right ones: a query by the picture finds its record first.
    url_hit = client.search({"_url": loaded.urls[loaded.url_ids[1]]}, k=1, fields_to_return=["_url"])
    assert url_hit["answer_records"] == [{"_id": loaded.url_ids[1], "_url": loaded.urls[loaded.url_ids[1]]}]
    file_hit = client.search({"_file": loaded.files[loaded.file_ids[0]]}, k=1, fields_to_return=["_id", "_file"])
    assert file_hit["answer_records"] == [{"_id": loaded.file_ids[0], "_file": loaded.files[loaded.file_ids[0]]}]
    # `_file` filters like any metadata field.
    filtered = client.search(
        {"_id": loaded.ids[0]}, k=10, filter={"_file": loaded.files[loaded.file_ids[1]]}, fields_to_return=["_file"]
    )
    assert [r["_id"] for r in filtered["answer_records"]] == [loaded.file_ids[1]]


def test_insert_duplicate_and_bad_records(loaded: Loaded) -> None:
    client = loaded.client
    duplicate = client.insert([loaded.kind.record(loaded.ids[0], 9, category="changed")])
    assert duplicate["status"]["code"] == 411
    assert duplicate["records"] == []
    assert duplicate["skipped_records"][0]["_reason"]["status"] == {"code": 411, "text": "record duplicate"}
    assert client.get_records([{"_id": loaded.ids[0]}], fields_to_return=["category"])["answer_records"] == [
        {"_id": loaded.ids[0], "category": "even"}
    ]
    fresh = fresh_id(loaded.kind.name)
    bad: dict[str, Any]
    if loaded.kind.images:
        bad = {"_id": fresh_id("bad"), "_base64": "bm90IGFuIGltYWdl", "noresize": True}
    else:
        bad = {"_id": fresh_id("bad"), "_vector": [1, 2, 3]}
    mixed = client.insert([loaded.kind.record(fresh, 11), bad, loaded.kind.record(loaded.ids[1], 1)])
    assert mixed["status"]["code"] == 211, mixed
    assert mixed["records"] == [{"_id": fresh}]
    reasons = {r["_id"]: r["_reason"]["status"]["code"] for r in mixed["skipped_records"]}
    assert reasons == {bad["_id"]: 400, loaded.ids[1]: 411}
    assert client.remove([{"_id": fresh}])["status"]["code"] == 220


def test_update_merges(loaded: Loaded) -> None:
    client = loaded.client
    id_ = fresh_id(loaded.kind.name)
    assert client.insert([loaded.kind.record(id_, 12, category="x", keep="me")])["status"]["code"] == 210
    result = client.update([{"_id": id_, "category": "y", "added": [1, 2]}])
    assert result["status"]["code"] == 200
    (updated,) = result["records"]
    assert (
        updated["_id"] == id_ and updated["category"] == "y" and updated["keep"] == "me" and updated["added"] == [1, 2]
    )
    partial = client.update([{"_id": id_, "n": 1}, {"_id": "missing", "n": 2}], fields_to_return=["n"])
    assert partial["status"]["code"] == 206
    assert partial["records"] == [{"_id": id_, "n": 1}]
    # The vector did not change: the record still finds itself at distance 0.
    again = client.search({"_id": id_}, k=1)
    assert again["answer_records"] == [{"_id": id_}]
    client.remove([{"_id": id_}])


def test_remove(loaded: Loaded) -> None:
    client = loaded.client
    a, b = fresh_id(loaded.kind.name), fresh_id(loaded.kind.name)
    assert client.insert([loaded.kind.record(a, 13), loaded.kind.record(b, 14)])["status"]["code"] == 210
    result = client.remove([{"_id": a}])
    assert result["status"] == {"code": 220, "text": "records deleted"}
    partial = client.remove([{"_id": b}, {"_id": a}])
    assert partial["status"]["code"] == 206
    none = client.remove([{"_id": a}])
    assert none["status"]["code"] == 404
    assert client.get_records([{"_id": a}, {"_id": b}])["status"]["code"] == 404


def test_all_records_paging(loaded: Loaded) -> None:
    client = loaded.client
    stored = set(loaded.ids + loaded.url_ids + loaded.file_ids)
    seen: list[str] = []
    page = 1
    while True:
        result = client.allRecords(size=3, page=page, fields_to_return=["_id", "category"])
        assert result["status"]["code"] == 200
        assert result["answer_count"] == len(result["answer_records"]) <= 3
        seen.extend(r["_id"] for r in result["answer_records"])
        if "next" not in result:
            break
        assert result["next"] == f"allRecords?size=3&page={page + 1}"
        page += 1
    assert len(seen) == len(set(seen))
    assert stored <= set(seen)
    iterated = [r["_id"] for r in client.all_records_iter(["category"], batch_size=4)]
    assert iterated == seen
    batches = list(client.all_records_iter(batch_size=5, return_batch=True))
    assert [r["_id"] for batch in batches for r in batch] == seen
    all_ids = client.get_all_ids()
    assert [r["_id"] for r in all_ids["answer_records"]] == seen
    assert "next" not in all_ids
    odd = client.get_all_ids(fields=["seed"], filterf={"category": "odd"})
    assert sorted(r["_id"] for r in odd["answer_records"]) == sorted(loaded.ids[s] for s in SEEDS if s % 2)
    assert all(r["seed"] % 2 == 1 for r in odd["answer_records"])
    beyond = client.allRecords(size=3, page=1000)
    assert beyond["answer_records"] == [] and "next" not in beyond


def test_old_prefixes(loaded: Loaded) -> None:
    for klass in (SimilarityPhotosOldClient, SimilarityProductsOldClient):
        old = klass(
            ADMIN, loaded.kind.collection, endpoint=loaded.server.endpoint(default_prefix(klass)), resource_name=None
        )
        result = old.search({"_id": loaded.ids[1]}, k=2)
        check_answer(result)
        assert result["answer_records"][0]["_id"] == loaded.ids[1]


# -- type-specific -------------------------------------------------------------------------------


def photos(server: Server, collection: str = "photos", klass: type[Any] = SimilarityPhotosClient) -> Any:
    return klass(ADMIN, collection, endpoint=server.endpoint(default_prefix(klass)), resource_name=None)


@only("generic")
def test_text_search(loaded: Loaded) -> None:
    text = SimilarityPhotosClient(
        ADMIN, loaded.kind.collection, endpoint=loaded.server.endpoint("similarity/text/photo/v2/"), resource_name=None
    )
    text.PREDICT_ENDPOINT = "text"
    result = text.search({"_text_data": "a colourful abstract picture"}, k=5, filter={"category": "even"})
    check_answer(result)
    assert result["answer_count"] == 4
    assert all(r["_id"] in loaded.ids and int(r["_id"].rsplit("-", 1)[1]) % 2 == 0 for r in result["answer_records"])
    default_k = text.post("text", data={"query_record": {"_text_data": "tabby cat"}})
    check_answer(default_k)
    total = len(loaded.client.get_all_ids()["answer_records"])
    assert default_k["answer_count"] == min(30, total)  # k defaults to 30
    other_type = photos(loaded.server, "colors", SimilarityColorsClient)
    other_type.PREDICT_ENDPOINT = "text"
    refused = other_type.search({"_text_data": "red"})
    assert refused["status"]["code"] == 400
    assert "text" in refused["status"]["text"]


def test_product_grouping(ximilar_server: Server) -> None:  # noqa: F811
    client = photos(ximilar_server, "grouped", SimilarityProductsClient)
    records = [
        {"_id": "a1", "_vector": [1, 0, 0, 0], "product_id": "A"},
        {"_id": "a2", "_vector": [0.99, 0.1, 0, 0], "product_id": "A"},
        {"_id": "b1", "_vector": [0.9, 0.3, 0, 0], "product_id": "B"},
        {"_id": "b2", "_vector": [0.95, 0.2, 0, 0], "product_id": "B"},
        {"_id": "c1", "_vector": [0, 1, 0, 0], "product_id": "C"},
    ]
    assert client.insert(records)["status"]["code"] == 210
    result = client.search({"_id": "a1"}, k=2, fields_to_return=["product_id"])
    check_answer(result)
    assert result["answer_records"] == [{"_id": "a1", "product_id": "A"}, {"_id": "b2", "product_id": "B"}]
    everything = client.search({"_id": "a1"}, k=10)
    assert [r["_id"] for r in everything["answer_records"]] == ["a1", "b2", "c1"]


def test_products_grouping_with_images(ximilar_server: Server) -> None:  # noqa: F811
    client = photos(ximilar_server, "products", SimilarityProductsClient)
    base = picture(40)
    records = [
        {"_id": "shoe-1", "_base64": b64(base), "noresize": True, "product_id": "shoe"},
        {"_id": "shoe-2", "_base64": b64(ImageOps.mirror(base)), "noresize": True, "product_id": "shoe"},
        {"_id": "bag-1", "_base64": b64(picture(41)), "noresize": True, "product_id": "bag"},
    ]
    assert client.insert(records)["status"]["code"] == 210
    try:
        result = client.search({"_base64": b64(base), "noresize": True}, k=2, fields_to_return=["product_id"])
        check_answer(result)
        assert [r["product_id"] for r in result["answer_records"]][0] == "shoe"
        assert len({r["product_id"] for r in result["answer_records"]}) == 2
    finally:
        client.remove([{"_id": r["_id"]} for r in records])


@only("colors")
def test_colors_records_carry_their_palette(loaded: Loaded) -> None:
    result = loaded.client.get_records([{"_id": loaded.ids[0]}], fields_to_return=["*"])
    assert isinstance(result["answer_records"][0]["_colors"], list)


@only("matching")
def test_matching_duplicates(loaded: Loaded) -> None:
    client = loaded.client
    copy = picture(6).resize((80, 80))
    result = client.search({"_base64": b64(copy), "noresize": True}, k=2, fields_to_return=["_id", "is_duplicate"])
    check_answer(result)
    assert result["answer_records"][0] == {"_id": loaded.ids[6], "is_duplicate": True}
    assert result["answer_records"][1]["is_duplicate"] is False
    near = client.post("nearDuplicates", data={"query_record": {"_base64": b64(copy)}})
    check_answer(near)
    assert [r["_id"] for r in near["answer_records"]] == [loaded.ids[6]]
    own = client.post("nearDuplicates", data={"query_record": {"_id": loaded.ids[6]}})
    check_answer(own)
    assert own["answer_records"] == []  # the record itself is left out
    dup = fresh_id("dup")
    assert client.insert([{"_id": dup, "_base64": b64(copy), "noresize": True}])["status"]["code"] == 210
    try:
        own = client.post("nearDuplicates", data={"query_record": {"_id": loaded.ids[6]}})
        assert [r["_id"] for r in own["answer_records"]] == [dup]
        groups = client.post("nearDuplicates", data={})
        assert groups["status"]["code"] == 200
        assert sorted([loaded.ids[6], dup]) in [sorted(r["_id"] for r in group) for group in groups["groups"]]
    finally:
        client.remove([{"_id": dup}])


def test_fashion_visual_tags_knn(ximilar_server: Server) -> None:  # noqa: F811
    client = photos(ximilar_server, "fashion", SimilarityFashionClient)
    assert client.PREDICT_ENDPOINT == "visualTagsKNN"
    tags = {0: ["dress", "red"], 1: ["dress", "red"], 2: ["shoe"], 3: ["dress"], 4: [], 5: ["red", "dress", "long"]}
    records = [
        {"_id": f"f{seed}", "_base64": b64(picture(seed + 50)), "noresize": True, "product_id": f"f{seed}", "tags": t}
        for seed, t in tags.items()
    ]
    result = client.insert(records, extract_colors=None, extract_tags=None)
    assert result["status"]["code"] == 210, result
    plain = photos(ximilar_server, "fashion").search({"_id": "f0"}, k=6)
    distances = dict(zip([r["_id"] for r in plain["answer_records"]], plain["answer_distances"], strict=True))
    tagged = client.search({"_id": "f0"}, k=6, fields_to_return=["tags"])
    check_answer(tagged)
    expected: dict[str, float] = {}
    for seed, t in tags.items():
        union = set(t) | {"dress", "red"}
        jaccard = len(set(t) & {"dress", "red"}) / len(union) if t else 0.0
        expected[f"f{seed}"] = distances[f"f{seed}"] * (1 - 0.3 * jaccard)
    got = dict(zip([r["_id"] for r in tagged["answer_records"]], tagged["answer_distances"], strict=True))
    assert got == pytest.approx(expected, abs=1e-5)
    assert [r["_id"] for r in tagged["answer_records"]] == sorted(expected, key=lambda i: expected[i])
    # An external query brings its own tags.
    external = client.search({"_base64": b64(picture(52)), "noresize": True, "tags": ["shoe"]}, k=2)
    check_answer(external)
    assert external["answer_records"][0]["_id"] == "f2"


@only("vectors")
def test_vectors_query_by_vector(loaded: Loaded) -> None:
    result = loaded.client.search({"_id": "not-stored", "_vector": vector(3)}, k=1)
    check_answer(result)
    assert result["answer_records"] == [{"_id": loaded.ids[3]}]


def test_file_without_base64_is_refused(ximilar_server: Server) -> None:  # noqa: F811
    # A `_file` record without `_base64` (not what the SDK sends, but what a hand-written client
    # might) is skipped with a clear reason; nothing on the server's disk is read.
    result = post(
        ximilar_server,
        "similarity/photos/v2/insert",
        body=b'{"records": [{"_id": "f", "_file": "/etc/passwd"}]}',
        headers={"collection-id": "mutations"},
    ).json()
    assert result["status"]["code"] == 400
    assert "_file" in result["skipped_records"][0]["_reason"]["status"]["text"]
