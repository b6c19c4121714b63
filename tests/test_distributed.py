"""Sharded collections on a real multi-node Ray cluster (``ray.cluster_utils.Cluster``: a head
and three worker nodes, each its own raylet and processes, on this machine).

- Sharded answers equal a single collection's with the same records (exact search, filters,
  offsets, grouping across shards, ids, rank, batches, counts, pages, near-duplicates), and
  HNSW recall stays that of one collection.
- Killing a node loses no acknowledged write; searches go on from the other replicas; the
  replica catches up (from the log, or whole) when a node is back; a router that restarts
  knows which replicas are behind.
- Images are embedded by Ray tasks; ``bulk_insert`` resumes from its checkpoint; the HTTP
  APIs and the CLI work unchanged on a sharded collection.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lookalike import Engine, UnavailableError, UnsupportedError
from lookalike.distributed.routing import shard_of, split_by_shard
from tests.conftest import clustered

ray = pytest.importorskip("ray", reason="lookalike[distributed] is not installed")

from ray.cluster_utils import Cluster  # noqa: E402

from lookalike.distributed import RayCluster, ShardedCollection, bulk_insert  # noqa: E402

NDIM = 16


# -- without a cluster -------------------------------------------------------------------------


def test_routing_is_stable_and_spreads() -> None:
    # Fixed values: the same in every process and Python (hash() is salted; this is not).
    assert [shard_of(f"id-{i}", 4) for i in range(8)] == [shard_of(f"id-{i}", 4) for i in range(8)]
    assert shard_of("a", 1) == 0
    assert (
        shard_of("photo-1", 7)
        == int.from_bytes(__import__("hashlib").blake2b(b"photo-1", digest_size=8).digest(), "little") % 7
    )
    counts = [len(p) for p in split_by_shard([f"r{i}" for i in range(4000)], 4)]
    assert min(counts) > 900, counts


def test_shards_need_a_cluster(tmp_path: Path) -> None:
    with Engine(tmp_path / "data") as engine:
        with pytest.raises(UnsupportedError, match="Ray cluster"):
            engine.create_collection("s", ndim=4, shards=2)
        with pytest.raises(ValueError, match="shards must be"):
            engine.create_collection("s", ndim=4, shards=0)
        with pytest.raises(ValueError, match="replicas needs shards"):
            engine.create_collection("s", ndim=4, replicas=2)
        assert engine.list_collections() == []


# -- the cluster -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    made = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "include_dashboard": False},
    )
    for _ in range(3):
        made.add_node(num_cpus=1)
    made.wait_for_nodes()
    ray.init(address=made.address, namespace="lookalike-tests", log_to_driver=False)
    yield made
    ray.shutdown()
    made.shutdown()


@pytest.fixture
def backend(cluster: Cluster) -> RayCluster:
    # The healer runs only when a test calls heal(): each step of a test is then deterministic.
    return RayCluster(heal_interval=3600, timeout=30, heal_on_failure=False)


def _records(n: int, seed: int = 0, prefix: str = "r") -> list[dict[str, Any]]:
    vectors = clustered(n, NDIM, seed=seed)
    return [
        {"_id": f"{prefix}{i}", "_vector": vectors[i].tolist(), "cat": i % 3, "pid": f"p{i % 40}"} for i in range(n)
    ]


@pytest.fixture
def pair(tmp_path: Path, backend: RayCluster) -> Iterator[Any]:
    """``pair(shards, replicas, **options)``: a sharded collection and a single one, alike."""
    engines: list[Engine] = []

    def make(shards: int = 3, replicas: int = 1, **options: Any) -> tuple[Any, Any]:
        settings = {"ndim": NDIM, "fields_to_index": ["cat"], "product_id_field": "pid", **options}
        router = Engine(tmp_path / "router", cluster=backend)
        single = Engine(tmp_path / "single")
        engines.extend([router, single])
        return (
            router.create_collection("c", shards=shards, replicas=replicas, **settings),
            single.create_collection("c", **settings),
        )

    yield make
    for engine in engines:
        engine.close()


def _ids(hits: list[dict[str, Any]]) -> list[str]:
    return [hit["_id"] for hit in hits]


def test_sharded_answers_equal_a_single_collection(pair: Any) -> None:
    sharded, single = pair()
    assert isinstance(sharded, ShardedCollection)
    records = _records(600)
    sharded.add(records)
    single.add(records)
    # Records without a product id are groups of their own, across shards too.
    loose = [{"_id": f"loose{i}", "_vector": r["_vector"], "cat": 1} for i, r in enumerate(_records(20, seed=5))]
    sharded.add(loose)
    single.add(loose)
    assert len(sharded) == len(single) == 620
    assert sum(1 for _ in sharded) == 620
    queries = clustered(12, NDIM, seed=9)
    for q in queries:
        assert sharded.search(q, limit=10, exact=True) == single.search(q, limit=10, exact=True)
        flt = {"cat": {"$in": [1, 2]}}
        assert sharded.search(q, limit=7, offset=5, filter=flt, exact=True, fields=["cat"]) == single.search(
            q, limit=7, offset=5, filter=flt, exact=True, fields=["cat"]
        )
        grouped = {"group_by": "pid", "group_size": 3, "exact": True}
        assert sharded.search(q, limit=6, offset=2, **grouped) == single.search(q, limit=6, offset=2, **grouped)
        assert sharded.search(q, limit=5, filter={"cat": 1}, fields=[], **grouped) == single.search(
            q, limit=5, filter={"cat": 1}, fields=[], **grouped
        )
    assert sharded.search(id="r7", limit=5, exact=True) == single.search(id="r7", limit=5, exact=True)
    assert sharded.search(record={"_id": "r8"}, limit=3, exact=True) == single.search(
        record={"_id": "r8"}, limit=3, exact=True
    )
    wanted = ["r3", "nope", "r500", "r1", "loose3"]
    assert sharded.get(wanted, fields=["pid"]) == single.get(wanted, fields=["pid"])
    np.testing.assert_array_equal(sharded.get_vector("r9"), single.get_vector("r9"))
    assert sharded.rank(wanted, queries[0]) == single.rank(wanted, queries[0])
    assert sharded.count() == 620 and sharded.count({"cat": 2}) == single.count({"cat": 2})
    batch_s = sharded.search_vectors(queries, 8, offset=1, exact=True)
    batch_l = single.search_vectors(queries, 8, offset=1, exact=True)
    assert batch_s.ids == batch_l.ids
    np.testing.assert_allclose(batch_s.distances, batch_l.distances, rtol=1e-6)
    seen: list[str] = []
    page = sharded.records(limit=250)
    while True:
        seen.extend(_ids(page.records))
        if page.cursor is None:
            break
        page = sharded.records(limit=250, cursor=page.cursor)
    assert sorted(seen) == sorted(_ids(single.records(limit=1000).records))
    assert sharded.near_duplicates(threshold=0.02) == single.near_duplicates(threshold=0.02)
    # Writes: updates, removes by id and by filter, if_absent; then the same answers again.
    for target in (sharded, single):
        assert target.update([{"_id": "r1", "cat": 9}, {"_id": "r2", "_vector": records[3]["_vector"]}]) == 2
        assert target.remove(["r4", "r5", "missing"]) == 2
        assert target.remove(filter={"cat": 9}) == 1
        fresh = {"_id": "new", "_vector": clustered(1, NDIM, seed=77)[0].tolist()}
        result = target.insert([records[6], fresh], if_absent=True)
        assert result.ids == ["new"] and [e.code for e in result.errors] == ["duplicate_id"]
    with pytest.raises(Exception, match="no record with _id 'ghost'"):
        sharded.update([{"_id": "ghost", "cat": 1}])
    for q in queries[:4]:
        assert sharded.search(q, limit=10, exact=True) == single.search(q, limit=10, exact=True)
        assert sharded.search(q, limit=4, group_by="pid", group_size=2, exact=True) == single.search(
            q, limit=4, group_by="pid", group_size=2, exact=True
        )
    with pytest.raises(ValueError, match="group_by must be"):
        sharded.search(queries[0], group_by="cat")
    with pytest.raises(ValueError, match="dimensions"):
        sharded.search([1.0, 2.0])
    stats = sharded.stats()
    assert stats["shards"] == 3 and stats["records"] == len(single)


def test_hnsw_recall_stays_that_of_one_collection(pair: Any) -> None:
    sharded, single = pair(shards=2, expansion_search=16, connectivity=8)
    records = _records(3000, seed=3)
    for start in range(0, 3000, 1000):
        sharded.add(records[start : start + 1000])
        single.add(records[start : start + 1000])
    queries = clustered(40, NDIM, seed=11)
    recall = {"sharded": 0.0, "single": 0.0}
    for q in queries:
        truth = set(_ids(single.search(q, limit=10, exact=True)))
        recall["sharded"] += len(truth & set(_ids(sharded.search(q, limit=10)))) / 10 / len(queries)
        recall["single"] += len(truth & set(_ids(single.search(q, limit=10)))) / 10 / len(queries)
    # Each shard searches its part with the same beam: recall is at least one collection's.
    assert recall["sharded"] >= recall["single"] - 0.02, recall
    assert recall["single"] < 1.0, "the graph was not used (a small beam must miss some)"


def _replica_node(collection: ShardedCollection, shard: int, replica: int) -> str:
    found = collection._shards[shard].replicas[replica].node_id
    assert found is not None
    return found


def _records_on(collection: ShardedCollection, shard: int, replica: int, ids: list[str]) -> set[str]:
    """The ids a given replica holds (read from it directly)."""
    actor = collection._shards[shard].replicas[replica].actor
    return {hit["_id"] for hit in ray.get(actor.get.remote(ids, []))}


def test_a_dead_node_loses_no_acknowledged_write_and_catches_up(
    tmp_path: Path, cluster: Cluster, backend: RayCluster
) -> None:
    router = Engine(tmp_path / "router", cluster=backend)
    collection = router.create_collection("c", ndim=NDIM, fields_to_index=["cat"], shards=2, replicas=2)
    assert isinstance(collection, ShardedCollection)
    before = _records(300, prefix="a")
    collection.add(before)
    # The node of shard 0's first replica goes away (with whatever else it holds).
    victim_id = _replica_node(collection, 0, 0)
    victim = next(node for node in cluster.worker_nodes if node.node_id == victim_id)
    cluster.remove_node(victim)
    during = _records(200, seed=1, prefix="b")
    collection.add(during)  # acknowledged by the replicas that are up
    collection.update([{"_id": "a1", "cat": 7}])
    collection.remove(["a2"])
    states = collection.replica_states()
    assert "down" in states["s0"] and "up" in states["s0"], states
    everyone = [r["_id"] for r in before + during if r["_id"] != "a2"]
    assert len(collection) == len(everyone)
    assert {hit["_id"] for hit in collection.get(everyone, fields=[])} == set(everyone)
    q = np.asarray(during[0]["_vector"])
    assert collection.search(q, limit=1, exact=True)[0]["_id"] == "b0"
    # A node comes back (a new raylet on this machine, the replica's folder on its disk).
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    assert collection.heal() == {"s0": ["up", "up"], "s1": ["up", "up"]}
    for shard in (0, 1):
        owned = [i for i in everyone if shard_of(i, 2) == shard]
        assert _records_on(collection, shard, 0, owned) == _records_on(collection, shard, 1, owned) == set(owned)
    # The replica that caught up answers alone: the other one of its shard goes away too.
    survivor_id = _replica_node(collection, 0, 1)
    survivor = next(node for node in cluster.worker_nodes if node.node_id == survivor_id)
    cluster.remove_node(survivor)
    assert collection.get(["a1"], fields=["cat"]) == [{"_id": "a1", "cat": 7}]
    assert {hit["_id"] for hit in collection.get(everyone, fields=[])} == set(everyone)
    # A router that restarts (say, the server) opens the same replicas and knows who is behind.
    router.close()
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    reopened = Engine(tmp_path / "router", cluster=backend)
    again = reopened.collection("c")
    assert isinstance(again, ShardedCollection)
    assert again.replica_states() == {"s0": ["up", "up"], "s1": ["up", "up"]}
    assert len(again) == len(everyone)
    assert again.get(["a1"], fields=["cat"]) == [{"_id": "a1", "cat": 7}]
    reopened.drop_collection("c")
    assert reopened.list_collections() == []
    reopened.close()


def test_a_replica_behind_the_log_is_copied_whole(tmp_path: Path, cluster: Cluster) -> None:
    small_log = RayCluster(heal_interval=3600, timeout=30, log_bytes=1, heal_on_failure=False)
    with Engine(tmp_path / "router", cluster=small_log) as router:
        collection = router.create_collection("c", ndim=NDIM, shards=1, replicas=2)
        assert isinstance(collection, ShardedCollection)
        collection.add(_records(100, prefix="a"))
        lagging = collection._shards[0].replicas[1]
        collection._down(lagging)  # as if its process died
        collection.add(_records(100, seed=2, prefix="b"))
        collection.remove(["a0"])
        assert collection.replica_states() == {"s0": ["up", "down"]}
        assert collection.heal() == {"s0": ["up", "up"]}
        wanted = [f"a{i}" for i in range(100)] + [f"b{i}" for i in range(100)]
        assert _records_on(collection, 0, 1, wanted) == set(wanted) - {"a0"}
        assert ray.get(lagging.actor.ping.remote())["applied"] == collection._shards[0].acked


def test_shard_without_replicas_is_unavailable_not_wrong(tmp_path: Path, cluster: Cluster, backend: RayCluster) -> None:
    with Engine(tmp_path / "router", cluster=backend) as router:
        collection = router.create_collection("c", ndim=NDIM, shards=2)
        assert isinstance(collection, ShardedCollection)
        collection.add(_records(50))
        collection._down(collection._shards[1].replicas[0])
        with pytest.raises(UnavailableError, match="shard 1"):
            collection.search(np.ones(NDIM), limit=3)
        with pytest.raises(UnavailableError):
            collection.add([{"_id": i, "_vector": np.ones(NDIM).tolist()} for i in ("x1", "x2", "x3", "x4", "x5")])
        collection.heal()
        assert len(collection) == 50 + sum(1 for i in ("x1", "x2", "x3", "x4", "x5") if shard_of(i, 2) == 0)


def _png(rgb: tuple[int, int, int], seed: int, size: int = 24) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    noise = np.random.default_rng(seed).integers(0, 48, (size, size, 3))
    pixels = np.clip(np.asarray(rgb)[None, None, :] + noise, 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_images_are_embedded_by_tasks_on_the_cluster(pair: Any) -> None:
    sharded, single = pair(shards=2, type="colors", ndim=None, fields_to_index=[])
    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30), (90, 90, 90)]
    records = [{"_id": f"img{i}", "_base64": _png(colours[i % 5], i), "n": i} for i in range(70)]
    records.insert(10, {"_id": "broken", "_base64": "bm90IGFuIGltYWdl"})
    a, b = sharded.insert(records), single.insert(records)
    assert sharded._cluster._embed_task is not None  # the batch went to the embedding tasks
    assert a.ids == b.ids and len(a.ids) == 70
    assert (
        [(e.position, e.code) for e in a.errors] == [(e.position, e.code) for e in b.errors] == [(10, "invalid_image")]
    )
    with pytest.raises(ValueError, match="record 10"):
        sharded.add(records)  # atomic: the first bad record fails the batch, named by its position
    query = [{"color": "#c81e1e", "weight": 1.0}]
    assert _ids(sharded.search(colors=query, limit=5, exact=True)) == _ids(
        single.search(colors=query, limit=5, exact=True)
    )
    assert sharded.get(["img3"]) == single.get(["img3"])


def test_bulk_insert_resumes_from_its_checkpoint(tmp_path: Path, backend: RayCluster) -> None:
    with Engine(tmp_path / "router", cluster=backend) as router:
        collection = router.create_collection("c", ndim=NDIM, shards=2)
        assert isinstance(collection, ShardedCollection)
        records = _records(500)
        for bad in (7, 260, 499):
            records[bad] = {"_id": f"r{bad}", "_vector": [1.0, 2.0]}  # wrong dimension
        checkpoint, errors = tmp_path / "ingest.json", tmp_path / "errors.jsonl"

        class Stop(Exception):
            pass

        calls = []

        def stop_after_three(inserted: int, failed: int) -> None:
            calls.append(inserted)
            if len(calls) == 3:
                raise Stop

        with pytest.raises(Stop):
            bulk_insert(
                collection,
                iter(records),
                checkpoint=checkpoint,
                errors=errors,
                block_size=50,
                in_flight=2,
                progress=stop_after_three,
            )
        report = bulk_insert(collection, iter(records), checkpoint=checkpoint, errors=errors, block_size=50)
        assert report.blocks == 10 and report.resumed_blocks == 3
        assert (report.inserted, report.failed) == (497, 3)
        assert len(collection) == 497
        lines = [json.loads(line) for line in errors.read_text().splitlines()]
        assert sorted(entry["position"] for entry in lines) == [7, 260, 499]
        assert {entry["code"] for entry in lines} == {"dimension_mismatch"}
        with pytest.raises(ValueError, match="blocks of 50"):
            bulk_insert(collection, iter(records), checkpoint=checkpoint, block_size=64)


def test_http_apis_and_cli_on_a_sharded_collection(tmp_path: Path, cluster: Cluster) -> None:
    from litestar.testing import TestClient

    from lookalike.cli import main
    from lookalike_server.app import create_app
    from lookalike_server.settings import Settings

    settings = Settings(data=str(tmp_path / "data"), admin_token="admin", ray_address=cluster.address)
    admin = {"Authorization": "Token admin"}
    records = _records(120)
    with TestClient(create_app(settings)) as client:
        made = client.post(
            "/v1/collections", json={"name": "s", "ndim": NDIM, "shards": 2, "replicas": 2}, headers=admin
        )
        assert made.status_code == 201, made.text
        assert made.json()["index"]["shards"] == 2
        added = client.post("/v1/collections/s/records", json={"records": records}, headers=admin)
        assert added.status_code == 200, added.text
        found = client.post("/v1/collections/s/search", json={"query": {"_id": "r5"}, "limit": 3}, headers=admin)
        assert found.status_code == 200, found.text
        assert found.json()["hits"][0]["_id"] == "r5"
        # The Ximilar-compatible API: the same search through its own routes.
        ximilar = client.post(
            "/similarity/photos/v2/visualKNN",
            json={"query_record": {"_id": "r5"}, "k": 3, "fields_to_return": ["_id"]},
            headers={**admin, "collection-id": "s"},
        )
        assert ximilar.status_code == 200, ximilar.text
        assert ximilar.json()["answer_records"][0]["_id"] == "r5"
        assert client.get("/v1/collections/s", headers=admin).json()["count"] == 120
    # The CLI, on the same data folder and cluster (the server has let go of it).
    source = tmp_path / "more.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in _records(30, seed=4, prefix="m")))
    data = str(tmp_path / "data")
    assert main(["--ray", cluster.address, "insert", str(source), "-c", "s", "--data", data, "-q"]) == 0
    assert (
        main(
            [
                "--ray",
                cluster.address,
                "insert",
                str(source),
                "-c",
                "t",
                "--create",
                "--type",
                "vectors",
                "--shards",
                "2",
                "--data",
                data,
                "-q",
                "--no-checkpoint",
            ]
        )
        == 0
    )
    with Engine(data, cluster=RayCluster(heal_interval=3600)) as engine:
        assert len(engine.collection("s")) == 150
        assert len(engine.collection("t")) == 30
        assert isinstance(engine.collection("t"), ShardedCollection)
    assert main(["insert", str(source), "-c", "s", "--data", data, "-q", "--no-checkpoint"]) != 0  # needs --ray


def test_more_replicas_than_nodes_is_refused(tmp_path: Path, backend: RayCluster) -> None:
    with Engine(tmp_path / "router", cluster=backend) as router:
        with pytest.raises(UnsupportedError, match="replicas=9 needs"):
            router.create_collection("c", ndim=NDIM, shards=1, replicas=9)
        assert router.list_collections() == []
