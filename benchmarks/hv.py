"""Hypervolume algorithms by number of objectives T and front size n: the figures behind the rule in
bench/core/hypervolume.py (exact where ≤ ~2 s, else an estimate with its error).

    python benchmarks/hv.py                                  # T = 2..8 × n = 50..2000, ~15 min on 2 cores
    python benchmarks/hv.py --T 8 --n 100 300 --timeout 10   # one corner

Fronts (`kind`), reference point 1 (accuracy 0):
- merge: what merging methods give: n points near the simplex-shaped front Σ z_k^c = 1, z ≥ 0, for
  c = 0.5, 1 and 2 (three curvatures), as errors F = 0.05 + 0.5 (1 − z) + N(0, 0.005²) noise, with a
  quarter of the points pushed back (dominated). A row shows the slowest of the three curvatures
  and the largest approximation error among them.
- random: n mutually non-dominated points uniform on the simplex (moocore.generate_ndset), a harder
  case for exact algorithms than merge fronts of the same size.

Columns: `nd` the points that count (non-dominated, inside the box); CPU seconds (all single-threaded:
the wall time on an idle core, whatever else shares the machine) of each exact algorithm
(`moocore`: what pymoo's HV calls; `wfg`: pygmo's hvwfg); at T ≥ 5 seconds and relative error of
moocore's deterministic Rphi-FWE+ approximation (the harness's fallback before; it states no error)
and of the harness's estimate (`approx`, bench.core.hypervolume.hv_estimate), with the estimate's
stated error bound (relative) and whether it covered the true error (`ok`: fronts covered / fronts).
An exact algorithm that runs past --timeout is stopped (">t") and not run at larger n for that T and
kind. Last, per T and exact algorithm: the largest front it computes in ≤ --budget CPU-s on merge
fronts (log-log interpolation between measured sizes), which EXACT_MAX_POINTS rounds down.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import moocore  # noqa: E402
import numpy as np  # noqa: E402

from bench.core.hypervolume import MOOCORE, WFG, exact_hv, hv_estimate, hv_front  # noqa: E402

EXACT = {"moocore": MOOCORE, "wfg": WFG}
CURVATURES = (0.5, 1.0, 2.0)


def merge_front(n: int, T: int, curvature: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z = rng.dirichlet(np.ones(T), size=n) ** (1.0 / curvature)     # Σ z^c = 1
    F = 0.05 + 0.5 * (1.0 - z) + rng.normal(0.0, 0.005, size=(n, T))
    back = rng.random(n) < 0.25
    F[back] += np.abs(rng.normal(0.0, 0.05, size=(int(back.sum()), T)))
    return F


def fronts(kind: str, n: int, T: int, seed: int) -> list[np.ndarray]:
    if kind == "merge":
        return [merge_front(n, T, c, seed) for c in CURVATURES]
    return [moocore.generate_ndset(n, T, "simplex", seed=seed)]


def _child(conn, F, ref, how):
    t = time.process_time()
    value = exact_hv(F, ref, how)
    conn.send((value, time.process_time() - t))


def timed_exact(F: np.ndarray, ref: np.ndarray, how: str, timeout: float) -> tuple[float | None, float | None]:
    """(HV, CPU seconds) in a forked process, or (None, None) past `timeout` wall seconds (the
    process is stopped)."""
    parent, child = mp.get_context("fork").Pipe(duplex=False)
    p = mp.get_context("fork").Process(target=_child, args=(child, F, ref, how))
    p.start()
    ready = parent.poll(timeout)
    out = parent.recv() if ready else (None, None)
    if not ready:
        p.kill()
    p.join()
    return out


def timed(fn):
    t = time.process_time()
    out = fn()
    return out, time.process_time() - t


def row(T: int, n: int, kind: str, args, skip: set) -> dict:
    ref = np.ones(T)
    Fs = [hv_front(F, ref) for F in fronts(kind, n, T, args.seed)]
    out = {"T": T, "n": n, "kind": kind, "nd": max(len(F) for F in Fs)}
    truth = [None] * len(Fs)
    for name, how in EXACT.items():
        if (name, T, kind) in skip:
            out[name] = "skip"
            continue
        times = []
        for i, F in enumerate(Fs):
            value, sec = timed_exact(F, ref, how, args.timeout)
            if value is None:
                skip.add((name, T, kind))
                times = None
                break
            truth[i] = value
            times.append(sec)
        out[name] = max(times) if times else f">{args.timeout:g}"
    if T >= 5:
        rphi = [timed(lambda F=F: moocore.hv_approx(F, ref=ref, method="Rphi-FWE+")) for F in Fs]
        est = [timed(lambda F=F: hv_estimate(F, ref)) for F in Fs]
        out["rphi"] = max(s for _, s in rphi)
        out["approx"] = max(s for _, s in est)
        out["bound"] = max(e / v for (v, e), _ in est)
        if all(t is not None for t in truth):
            out["rphi_err"] = max(abs(v - t) / t for (v, _), t in zip(rphi, truth))
            out["approx_err"] = max(abs(v - t) / t for ((v, _), _), t in zip(est, truth))
            out["ok"] = f"{sum(abs(v - t) <= e for ((v, e), _), t in zip(est, truth))}/{len(Fs)}"
    return out


COLUMNS = ("T", "n", "kind", "nd", "moocore", "wfg", "rphi", "rphi_err", "approx", "approx_err", "bound", "ok")


def fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.2e}" if v < 0.01 else f"{v:.3g}"
    return "" if v is None else str(v)


def exact_limits(rows: list[dict], budget: float) -> dict[tuple[int, str], str]:
    """Per T and exact algorithm: the largest front it computes in ≤ budget on merge fronts."""
    out = {}
    for T in sorted({r["T"] for r in rows}):
        merge = sorted((r for r in rows if r["T"] == T and r["kind"] == "merge"), key=lambda r: r["n"])
        for name in EXACT:
            pts = [(r["nd"], r[name] if isinstance(r.get(name), float) else np.inf) for r in merge]
            ok = [i for i, (_, t) in enumerate(pts) if t <= budget]
            if not ok:
                out[T, name] = f"< {pts[0][0]}"
            elif ok[-1] == len(pts) - 1:
                out[T, name] = f"≥ {pts[-1][0]} (largest measured)"
            elif not np.isfinite(pts[ok[-1] + 1][1]):
                out[T, name] = f"≥ {pts[ok[-1]][0]} (the next size ran past the timeout)"
            else:
                (n0, t0), (n1, t1) = pts[ok[-1]], pts[ok[-1] + 1]
                out[T, name] = f"~{int(n0 * (n1 / n0) ** (np.log(budget / t0) / np.log(t1 / t0)))}"
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--T", type=int, nargs="+", default=list(range(2, 9)))
    ap.add_argument("--n", type=int, nargs="+", default=[50, 100, 200, 500, 1000, 2000])
    ap.add_argument("--kinds", nargs="+", default=["merge", "random"], choices=["merge", "random"])
    ap.add_argument("--timeout", type=float, default=20.0, help="seconds per exact computation")
    ap.add_argument("--budget", type=float, default=2.0, help="seconds an exact HV may take")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    exact_hv(np.full((2, 5), 0.5), np.ones(5), WFG)          # imports, outside the timings
    hv_estimate(np.random.default_rng(0).random((4, 5)), np.full(5, 2.0))
    print(f"# {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; CPU seconds (every algorithm here is "
          f"single-threaded); errors relative to the exact HV")
    print("| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS), flush=True)
    rows, skip = [], set()
    for T in args.T:
        for kind in args.kinds:
            for n in args.n:
                r = row(T, n, kind, args, skip)
                rows.append(r)
                print("| " + " | ".join(fmt(r.get(c)) for c in COLUMNS) + " |", flush=True)
    print(f"\nlargest merge front (nd) each exact algorithm computes in ≤ {args.budget:g} CPU-s:")
    for (T, name), n in exact_limits(rows, args.budget).items():
        print(f"  T={T} {name}: {n}")


if __name__ == "__main__":
    main()
