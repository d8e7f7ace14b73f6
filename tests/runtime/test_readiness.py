"""Which errors are outages (UNAVAILABLE) and how readiness follows its checks."""

from __future__ import annotations

import sqlite3
import threading

import sqlalchemy as sa

from atelier.runtime.errors import UnavailableError
from atelier.runtime.readiness import Readiness, outage_error


def _wrapped(orig: Exception, cls: type[sa.exc.DBAPIError] = sa.exc.OperationalError) -> sa.exc.DBAPIError:
    return cls("SELECT 1", {}, orig)


def test_outages_are_unavailable_and_programming_errors_are_not() -> None:
    import psycopg

    refused = _wrapped(psycopg.OperationalError("connection refused"))
    error = outage_error(refused)
    assert isinstance(error, UnavailableError) and error.retry_after_s
    assert "database is unreachable" in error.message
    assert outage_error(_wrapped(sqlite3.OperationalError("database is locked")))
    # A missing table is a bug, not an outage: it stays INTERNAL.
    assert outage_error(_wrapped(sqlite3.OperationalError("no such table: x"))) is None
    assert outage_error(_wrapped(psycopg.IntegrityError("duplicate key"), sa.exc.IntegrityError)) is None
    assert outage_error(ValueError("bad")) is None
    # Wrapped by the code that met it: the cause is found.
    try:
        try:
            raise refused
        except sa.exc.OperationalError as exc:
            raise RuntimeError("could not save") from exc
    except RuntimeError as outer:
        assert outage_error(outer) is not None


def test_readiness_needs_load_and_checks_and_recovers() -> None:
    published: list[bool] = []
    up = threading.Event()
    up.set()

    def database() -> None:
        if not up.is_set():
            raise ConnectionError("down")

    # Not start()ed: no monitor thread, so the checks run only when the test says.
    readiness = Readiness("x", published.append, {"database": database})
    readiness._publish_now()
    assert published == [False]  # not loaded yet
    readiness.loaded()
    assert readiness.check_now() and published[-1] is True
    up.clear()
    assert not readiness.check_now() and published[-1] is False
    up.set()
    assert readiness.check_now() and published[-1] is True
    readiness.stop()
    assert published[-1] is False and not readiness.ready
