"""What flightlog's object-store commits rely on, checked against each S3 server the
tests use: moto (always) and SeaweedFS (when its binary is installed; it enforces
credentials). Servers exist that accept conditional headers and ignore them
(../shared/notes/SCALE_OUT.md), so every backend must pass the races here before
the other tests' results mean anything."""

from __future__ import annotations

import io
import threading

import numpy as np
import pyarrow.parquet as pq
import pytest

import flightlog
from conftest_servers import WEED_ACCESS, Bucket
from flightlog import _core
from flightlog.runs.s3 import ObjectLocation, open_store, storage_options


class WeedBucket(Bucket):
    access = WEED_ACCESS


@pytest.fixture(params=["moto", "seaweedfs"])
def bucket(request: pytest.FixtureRequest):
    if request.param == "moto":
        yield request.getfixturevalue("s3_bucket")
        return
    b = WeedBucket.create(request.getfixturevalue("seaweed_server"))
    yield b
    for key in b.keys():
        b.client.delete_object(Bucket=b.name, Key=key)
    b.client.delete_bucket(Bucket=b.name)


def store_of(bucket):
    return open_store(ObjectLocation.parse(bucket.url()), bucket.storage_options)


def race(n: int, fn) -> list[object]:
    """Runs fn(i) on n threads released together; returns each result or exception."""
    barrier = threading.Barrier(n)
    out: list[object] = [None] * n

    def run(i: int) -> None:
        barrier.wait()
        try:
            out[i] = fn(i)
        except Exception as e:  # the point is to collect them
            out[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_create_only_put_has_exactly_one_winner(bucket):
    store = store_of(bucket)
    results = race(16, lambda i: store.put("claim/manifest.toml", f"writer {i}".encode(), "create"))
    winners = [i for i, r in enumerate(results) if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, FileExistsError)]
    assert len(winners) == 1 and len(refused) == 15, results
    assert store.get("claim/manifest.toml")[0] == f"writer {winners[0]}".encode()


def test_update_with_a_stale_etag_is_refused(bucket):
    store = store_of(bucket)
    tag = store.put("m.toml", b"v0", "create")
    results = race(8, lambda i: store.put("m.toml", f"v{i + 1}".encode(), "update", tag))
    ok = [r for r in results if not isinstance(r, Exception)]
    conflicts = [r for r in results if isinstance(r, flightlog.ConflictError)]
    assert len(ok) == 1 and len(conflicts) == 7, results
    data, now = store.get("m.toml")
    assert now == ok[0] and data != b"v0"


def test_large_files_go_up_as_multipart_uploads(bucket):
    url = bucket.url("big/run")
    opts = {**bucket.storage_options, "multipart_threshold": str(5 << 20), "multipart_part_size": str(5 << 20)}
    schema = flightlog.Schema([flightlog.Field(f"x{i}", "f64", nullable=False) for i in range(3)])
    n = 450_000  # 3 x 8 bytes x 450k = 10.8 MB uncompressed: three 5 MiB parts
    with flightlog.FlightRecorder(url, schema, storage_options=opts, compression="none", segment_rows=n) as rec:
        rng = np.random.default_rng(1)
        rec.extend(x0=rng.random(n), x1=rng.random(n), x2=rng.random(n))
    head = bucket.client.head_object(Bucket=bucket.name, Key="big/run/telemetry.parquet")
    assert head["ETag"].strip('"').endswith("-3"), head["ETag"]  # an S3 multipart ETag: md5-of-md5s-<parts>
    body = bucket.client.get_object(Bucket=bucket.name, Key="big/run/telemetry.parquet")["Body"].read()
    assert pq.read_table(io.BytesIO(body)).num_rows == n


def test_manager_runs_close_and_list_on_each_server(bucket):
    schema = flightlog.Schema([flightlog.Field("iter", "i64", nullable=False)])
    root = bucket.url("tree")
    ids = []
    for _ in range(3):
        with flightlog.TelemetryManager(
            root, "f", run_id="20260101_000000", schema=schema, storage_options=bucket.storage_options
        ) as tm:
            tm.extend(iter=np.arange(10))
        ids.append(tm.run_id)
    assert ids == ["20260101_000000", "20260101_000000_2", "20260101_000000_3"]
    finals = sorted(k for k in bucket.keys("tree/") if k.endswith("telemetry.parquet"))
    assert len(finals) == 3
    assert flightlog.recover(root, storage_options=bucket.storage_options).recovered == []


def test_wrong_credentials_are_refused(bucket):
    if isinstance(bucket, WeedBucket):
        wrong = storage_options({**bucket.storage_options, "aws_secret_access_key": "wrong"})
        bad = _core.ObjectStore(bucket.url(), list(wrong.items()))
        with pytest.raises(flightlog.WriteError, match=r"privileges|denied|Forbidden|SignatureDoesNotMatch"):
            bad.put("x", b"1", "create")
    else:
        pytest.skip("moto accepts any credentials; SeaweedFS checks them")
