"""The trends store on SQLite and PostgreSQL: idempotent ingest, corrections, tenants, the
regular grid with gaps, and concurrent uploads of the same points."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from atelier.runtime.context import tenant_var
from atelier.runtime.errors import NotFoundError
from atelier.runtime.storage import Store
from atelier.trends.store import Filter, Frequency, ObservationIn, SeriesMeta, TrendsStore, ValueKind

WEEK_S = 7 * 86_400
T0 = 1_420_416_000


def points(series: str, values: list[float], skip: tuple[int, ...] = ()) -> list[ObservationIn]:
    return [ObservationIn(series, T0 + k * WEEK_S, v, None) for k, v in enumerate(values) if k not in skip]


def test_ingest_idempotent_corrections_and_grid(store: Store) -> None:
    trends = TrendsStore(store)
    meta = SeriesMeta("a", {"category": "bags"}, Frequency.WEEKLY, ValueKind.COUNT)
    first = trends.ingest(points("a", [1, 2, 3, 4, 5], skip=(2,)), [meta])
    assert (first.inserted, first.unchanged, first.updated) == (4, 0, 0)
    again = trends.ingest(points("a", [1, 2, 3, 4, 5], skip=(2,)), [])
    assert (again.inserted, again.unchanged, again.updated) == (0, 4, 0)
    fixed = trends.ingest(points("a", [1, 2, 3, 9, 5]), [])  # week 2 new, week 3 corrected
    assert (fixed.inserted, fixed.unchanged, fixed.updated) == (1, 3, 1)
    (data,) = trends.load(trends.resolve(Filter(labels=(("category", "bags"),))))
    assert data.values.tolist() == [1, 2, 3, 9, 5] and data.filled_periods == 0
    token = tenant_var.set("other")
    try:
        with pytest.raises(NotFoundError):
            trends.resolve(Filter())
        assert trends.ingest(points("a", [1.0]), []).inserted == 1
    finally:
        tenant_var.reset(token)


def test_gaps_are_interpolated(store: Store) -> None:
    trends = TrendsStore(store)
    trends.ingest(points("g", [1, 0, 0, 4, 5], skip=(1, 2)), [])
    (data,) = trends.load(trends.resolve(Filter(series=("g",))))
    assert np.allclose(data.values, [1, 2, 3, 4, 5]) and data.filled_periods == 2


def test_concurrent_uploads_of_the_same_points(store: Store) -> None:
    trends = TrendsStore(store)
    batch = points("c", [float(v) for v in range(300)])
    results, errors = [], []

    def upload() -> None:
        try:
            results.append(trends.ingest(batch, []))
        except Exception as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=upload) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    # Exactly one upload inserted the points; the others found them (no double count).
    assert sum(r.inserted for r in results) == 300
    assert sum(r.unchanged for r in results) == 900
    (data,) = trends.load(trends.resolve(Filter(series=("c",))))
    assert len(data.values) == 300
