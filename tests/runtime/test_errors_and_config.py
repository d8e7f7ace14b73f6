from __future__ import annotations

import pytest
from google.rpc import code_pb2, error_details_pb2

from atelier.runtime.config import ServiceConfig
from atelier.runtime.context import Cancellation
from atelier.runtime.errors import (
    CancelledError,
    DeadlineExceededError,
    InvalidArgumentError,
    NotFoundError,
    ResourceExhaustedError,
    Violations,
)
from atelier.runtime.status import to_status


def test_violations_collect_every_field_then_raise() -> None:
    v = Violations()
    v.check(True, "a", "fine")
    v.check(False, "fabric.width_mm", "must be > 0")
    v.add("pieces[2].outline", "self-intersecting")
    with pytest.raises(InvalidArgumentError) as err:
        v.raise_if_any("the marker request is invalid")
    assert [(x.field, x.description) for x in err.value.violations] == [
        ("fabric.width_mm", "must be > 0"),
        ("pieces[2].outline", "self-intersecting"),
    ]
    assert err.value.message.startswith("the marker request is invalid: fabric.width_mm: must be > 0")
    Violations().raise_if_any()  # nothing to report: no exception


def test_status_details() -> None:
    status = to_status(InvalidArgumentError.for_field("horizon", "must be 1..104"))
    assert status.code == code_pb2.INVALID_ARGUMENT
    bad_request = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad_request)
    assert bad_request.field_violations[0].field == "horizon"

    status = to_status(ResourceExhaustedError("queue full", retry_after_s=2.5))
    retry = error_details_pb2.RetryInfo()
    assert status.code == code_pb2.RESOURCE_EXHAUSTED and status.details[0].Unpack(retry)
    assert retry.retry_delay.ToNanoseconds() == 2_500_000_000

    status = to_status(NotFoundError("no such article", "FabricProfile", "denim-12"))
    info = error_details_pb2.ResourceInfo()
    assert status.code == code_pb2.NOT_FOUND and status.details[0].Unpack(info)
    assert info.resource_name == "denim-12"


def test_cancellation() -> None:
    token = Cancellation()
    token.check()
    token.cancel("stop")
    with pytest.raises(CancelledError, match="stop"):
        token.check()
    expired = Cancellation(deadline_monotonic=0.0)
    with pytest.raises(DeadlineExceededError):
        expired.check()
    gone = Cancellation(is_active=lambda: False)
    assert gone.cancelled


def test_config_from_env_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.setenv("ATELIER_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("ATELIER_LOG_LEVEL", "debug")
    monkeypatch.setenv("ATELIER_NESTING_LOG_LEVEL", "warning")
    monkeypatch.setenv("ATELIER_API_KEYS_FILE", "/run/keys.json")
    nesting = ServiceConfig.from_env("nesting")
    trends = ServiceConfig.from_env("trends")
    assert (nesting.port, nesting.metrics_port) == (50053, 9103)
    assert nesting.log_level == "WARNING" and trends.log_level == "DEBUG"
    assert nesting.api_keys_file == "/run/keys.json"
    assert nesting.database_url == f"sqlite:///{tmp_path}/nesting.db"
    monkeypatch.setenv("ATELIER_NESTING_PORT", "70000")
    with pytest.raises(ValueError, match="port 70000"):
        ServiceConfig.from_env("nesting")
    monkeypatch.setenv("ATELIER_NESTING_PORT", "1")
    monkeypatch.setenv("ATELIER_LOG_FORMAT", "xml")
    with pytest.raises(ValueError, match="json or text"):
        ServiceConfig.from_env("nesting")
