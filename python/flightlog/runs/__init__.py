"""Run roots: where runs live and how they are found, claimed, described and repaired.

Modules (import them directly; this package re-exports nothing, so that importing
one of them stays cheap):

- :mod:`.layout` - the names of the on-disk layout (from the core's ``OutputLayout``);
- :mod:`.ids` - the root, run ids and their claim, file locks, flow paths;
- :mod:`.manifest` - ``manifest.toml``: TOML conversion, provenance, atomic writes;
- :mod:`.status` - a run's status by evidence (a dead ``running`` run is ``crashed``);
- :mod:`.discover` - every run under a root (:class:`~.discover.RunRef`, ``scan_runs``, ``find_run``);
- :mod:`.recover` - finalising crashed runs; :mod:`.compact` - merging a flow's parts;
- :mod:`.tree` - the :class:`~.tree.RootTree` protocol and the local root; :mod:`.s3tree` -
  an ``s3://`` root; :mod:`.roots` - ``open_tree``; :mod:`.s3` - object-store locations and settings;
- :mod:`.views` - the catalog's local and DuckDB-httpfs views of a root;
- :mod:`.manager` - :class:`~flightlog.TelemetryManager` (its close path in :mod:`.finish`).
"""
