"""IGD reference fronts of the leaderboard's tables: one per suite key, stated under each table.

    >>> import numpy as np
    >>> from types import SimpleNamespace
    >>> rec = lambda F: SimpleNamespace(analytic=False, F_included=np.array(F, dtype=float))
    >>> ref = reference_front([rec([[0.2, 0.8], [0.5, 0.5]]), rec([[0.5, 0.5], [0.9, 0.9]])])
    >>> ref.kind, ref.n_points, ref.pf.tolist()
    ('pooled', 2, [[0.2, 0.8], [0.5, 0.5]])

For a suite with a closed-form front (`record.analytic`) the front is rebuilt from the suite
registry with the records' `suite_config`, and its hash is checked against the one the records
stored (`igd_ref`). Otherwise it is the non-dominated union of the included points of every record
of the suite key (`bench.core.indicators.pooled_front`), so every row of a table is measured against the
same front. An analytic suite that can no longer be rebuilt (a harness error: renamed, plugin not
loaded, options changed) falls back to the IGD values its records stored. This module belongs to
the reports: it reads records and rebuilds suites through the config; the core (indicators, runs)
never imports it.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field

import numpy as np

from bench.core.indicators import front_hash, pooled_front
from bench.core.registry import BenchError


@dataclass(frozen=True)
class RefFront:
    kind: str                       # analytic | pooled | record (the records' own IGD values, kept)
    pf: np.ndarray | None
    hash: str | None
    n_points: int
    how: str                        # one sentence for the note under a table
    extra: dict = field(default_factory=dict)


def analytic_front(suite_name: str, suite_config: dict) -> np.ndarray | None:
    """The closed-form front of a suite rebuilt from the registry (None where it has none); a
    suite that cannot be built raises BenchError."""
    from bench.runtime.config import build_from_config
    from bench.core.registry import SUITES

    suite = build_from_config(SUITES, {"name": suite_name, **suite_config}, "tasks")
    pf = suite.true_front()
    return None if pf is None else np.asarray(pf, dtype=float)


def reference_front(records: list) -> RefFront:
    """The IGD reference front of the records of one suite key (module docstring)."""
    first = records[0]
    if not first.analytic:
        pf = pooled_front([r.F_included for r in records])
        return RefFront("pooled", pf, front_hash(pf), 0 if pf is None else len(pf),
                        f"non-dominated union of the {len(records)} records of this suite key")
    try:
        pf = analytic_front(first.suite, first.suite_config)
        if pf is None:
            raise BenchError(f"{first.suite} has no closed-form front")
    except BenchError as e:
        return RefFront("record", None, first.igd_ref.get("hash"), int(first.igd_ref.get("n_points", 0)),
                        f"analytic front (IGD+ values reused from the records: the suite could not be "
                        f"rebuilt: {e})")
    ref = RefFront("analytic", pf, front_hash(pf), len(pf),
                   f"analytic Pareto front of {first.suite} (closed form, rebuilt from the suite registry)")
    stale = sorted({r.igd_ref.get("hash") for r in records if r.igd_ref} - {ref.hash})
    if stale:
        print(f"warning: {first.suite_key}: analytic front hash {ref.hash} differs from the records' {stale}",
              file=sys.stderr)
    return ref
