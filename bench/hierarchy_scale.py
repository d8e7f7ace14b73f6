"""Memory and time of reconciling a large hierarchy (the summing matrix and the reconcilers).

    nice -n 10 python bench/hierarchy_scale.py --series 10000 --horizon 52 --method wls_struct

Simulated bottom series (Poisson, 156 periods) under department (10) -> category (100) labels;
base forecasts are each node's last values plus noise, intervals +-2. Prints the summing
matrix's bytes (sparse, and what the dense one would take), the reconciliation's wall time, its
incoherence and the process's peak resident memory. No data is read.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from atelier.trends import hierarchy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=10_000)
    parser.add_argument("--horizon", type=int, default=52)
    parser.add_argument("--method", default="wls_struct", choices=hierarchy.METHODS)
    args = parser.parse_args()
    n = args.series
    labels = [{"department": f"d{i % 10}", "category": f"c{i % 100}"} for i in range(n)]
    started = time.perf_counter()
    tree = hierarchy.build([f"s{i}" for i in range(n)], labels, ["department", "category"])
    built_s = time.perf_counter() - started
    s = tree.summing
    sparse_bytes = s.data.nbytes + s.indices.nbytes + s.indptr.nbytes
    dense_bytes = s.shape[0] * s.shape[1] * 8
    rng = np.random.default_rng(0)
    history = tree.aggregate(rng.poisson(3, (n, 156)).astype(float))
    base = history[:, -args.horizon :] + rng.normal(0, 1, (len(tree.nodes), args.horizon))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    mean, _ = hierarchy.reconcile(
        tree, base, history, 52, args.method, {80: (base - 2, base + 2)}, non_negative=True
    )
    wall = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{n} series, {len(tree.nodes)} nodes, horizon {args.horizon}, {args.method}: summing matrix "
        f"{sparse_bytes / 1e6:.2f} MB sparse (dense: {dense_bytes / 1e9:.2f} GB), built in {built_s:.2f} s; "
        f"reconciled in {wall:.1f} s, incoherence {hierarchy.incoherence(tree, mean):.2e}; "
        f"peak RSS {before:.0f} MB before reconciling, {peak:.0f} MB after"
    )


if __name__ == "__main__":
    main()
