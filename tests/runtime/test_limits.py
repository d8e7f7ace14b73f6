"""Bounds every request is held to (runtime.limits), and the per-field helpers."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from google.longrunning import operations_pb2
from google.protobuf import duration_pb2, timestamp_pb2

from atelier.nesting.v1 import nesting_pb2
from atelier.runtime import limits
from atelier.runtime.errors import InvalidArgumentError, Violations
from atelier.trends.v1 import trends_pb2


def fields_of(request: object) -> list[str]:
    with pytest.raises(InvalidArgumentError) as info:
        limits.check_request(request)  # type: ignore[arg-type]
    return [v.field for v in info.value.violations]


def test_nul_bytes_and_long_strings_are_refused_at_any_depth() -> None:
    request = trends_pb2.IngestObservationsRequest(
        observations=[trends_pb2.Observation(series="ok"), trends_pb2.Observation(series="a\x00b")],
        series=[trends_pb2.SeriesInfo(series="s", labels={"colour": "x" * 2_000_000})],
    )
    assert fields_of(request) == ["observations[1].series", "series[0].labels['colour']"]


def test_floats_must_be_finite_and_bounded_timestamps_are_left_to_the_servicers() -> None:
    request = trends_pb2.IngestObservationsRequest(
        observations=[
            trends_pb2.Observation(series="a", value=float("nan")),
            trends_pb2.Observation(series="a", value=1.8e308),
            trends_pb2.Observation(series="a", time=timestamp_pb2.Timestamp(seconds=2**62)),
            trends_pb2.Observation(series="a", time=timestamp_pb2.Timestamp(seconds=0, nanos=2_000_000_000)),
            trends_pb2.Observation(series="a", value=-1e11),
        ]
    )
    assert fields_of(request) == ["observations[0].value", "observations[1].value"]


def test_prompts_may_be_longer_than_identifiers() -> None:
    from atelier.generation.v1 import generation_pb2

    limits.check_request(
        generation_pb2.GenerateRequest(settings=generation_pb2.GenerationSettings(prompt="p" * 5000))
    )
    assert fields_of(generation_pb2.GenerateRequest(model="m" * 5000)) == ["model"]


def test_messages_without_strings_or_floats_are_not_walked() -> None:
    assert not limits._needs_walk(duration_pb2.Duration.DESCRIPTOR)  # only integers: skipped
    assert limits._needs_walk(nesting_pb2.CreateMarkerRequest.DESCRIPTOR)
    limits.check_request(operations_pb2.ListOperationsRequest(page_size=3))


@pytest.mark.parametrize("token", ["-1", "99999999999999999999", "\u00b2", "1.5", " 1", "abc", "2147483648"])
def test_page_tokens_that_we_never_issue_are_refused(token: str) -> None:
    v = Violations()
    assert limits.page_offset(v, token) == 0
    assert [i.field for i in v.items] == ["page_token"]


def test_page_tokens_we_issue_are_read() -> None:
    v = Violations()
    assert limits.page_offset(v, "") == 0 and limits.page_offset(v, "150") == 150 and not v


def test_time_and_text_helpers() -> None:
    v = Violations()
    early, late = datetime(1900, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC)
    ok = limits.check_time(v, "t", timestamp_pb2.Timestamp(seconds=1_420_416_000), early, late)
    assert ok == datetime(2015, 1, 5, tzinfo=UTC)
    assert limits.check_time(v, "y9999", timestamp_pb2.Timestamp(seconds=253402214400), early, late) is None
    assert limits.check_time(v, "neg", timestamp_pb2.Timestamp(seconds=-(10**12)), early, late) is None
    assert not limits.check_text(v, "id", "x" * 300)
    assert not limits.check_text(v, "nul", "a\x00")
    assert not limits.check_text(v, "req", "", required=True)
    assert not limits.check_number(v, "n", float("inf"))
    assert [i.field for i in v.items] == ["y9999", "neg", "id", "nul", "req", "n"]


def test_repeated_fields_are_bounded() -> None:
    request = trends_pb2.ClassifyTrendsRequest()
    request.filter.series.extend(["s"] * (limits.MAX_REPEATED + 1))
    assert fields_of(request) == ["filter.series"]
