"""aim: ``run.track(dict, step)`` per step into a local repository (phase not logged)."""

from __future__ import annotations

from pathlib import Path

from common import FLOATS, Peer, ReadBack, Sink, check_metrics

METRICS = "{" + ", ".join(f"'{f}': {f}" for f in FLOATS) + "}"


def setup(out: Path, n: int) -> Sink:
    import aim

    run = aim.Run(
        repo=str(out / "repo"),
        experiment="bench",
        system_tracking_interval=None,
        log_system_params=False,
        capture_terminal_logs=False,
    )
    return Sink({"track": run.track}, run.close)


def read(out: Path, n: int, killed: bool) -> ReadBack:
    import aim
    from aim.storage.context import Context

    if not (out / "repo" / ".aim").exists():
        return ReadBack(0, killed, "no repository")
    repo = aim.Repo(str(out / "repo"))
    # A run's sequences are only visible to readers after the repository index is
    # rebuilt (normally done by the aim UI/server's background indexer).
    repo._recreate_index()
    steps: dict[int, dict[str, float]] = {}
    for run in repo.iter_runs():
        for name in FLOATS:
            m = run.get_metric(name, Context({}))
            if m is None:
                continue
            idx, (vals, *_rest) = m.data.items_list()
            for s, v in zip(idx, vals, strict=True):
                steps.setdefault(int(s), {})[name] = float(v)
    return check_metrics(steps, n, killed=killed)


PEERS = [
    Peer(
        "aim-track",
        family="aim",
        requires=("aim",),
        dist="aim",
        style="metric",
        n=2_000,
        smoke_n=50,
        log=f"track({METRICS}, step=i)",
        setup=setup,
        read=read,
        notes="run.track(dict9, step) per step, local repository (RocksDB); phase not logged; "
        "read back after rebuilding the repo index",
    ),
]
