"""Shared helpers of the recommendations tests: a tiny catalogue, events, a client."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
from google.longrunning import operations_pb2, operations_pb2_grpc

from atelier.common.v1 import money_pb2
from atelier.recommendations.v1 import recommendations_pb2 as pb
from atelier.recommendations.v1 import recommendations_pb2_grpc as pb_grpc

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def money(amount: float, currency: str = "EUR") -> money_pb2.Money:
    units = int(amount)
    return money_pb2.Money(currency_code=currency, units=units, nanos=round((amount - units) * 1e9))


def item(
    item_id: str,
    category: str,
    style: str = "",
    colours: tuple[str, ...] = (),
    price: float | None = None,
    sizes: tuple[str, ...] = ("M",),
    **attributes: str,
) -> pb.Item:
    msg = pb.Item(
        item_id=item_id,
        category=category,
        style=style,
        colours=list(colours),
        sizes_in_stock=list(sizes),
        attributes=attributes,
    )
    if price is not None:
        msg.price.CopyFrom(money(price))
    return msg


def event(
    event_id: str,
    user: str,
    item_id: str,
    kind: int = pb.EVENT_TYPE_VIEW,
    minutes: float = 0,
    basket: str = "",
    segment: str = "",
) -> pb.Event:
    e = pb.Event(
        event_id=event_id, user_id=user, item_id=item_id, type=kind, basket_id=basket, segment=segment
    )
    e.time.FromDatetime(T0 + timedelta(minutes=minutes))
    return e


class Client:
    def __init__(self, port: int, tenant: str = "acme") -> None:
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.stub = pb_grpc.RecommendationsServiceStub(self.channel)
        self.ops = operations_pb2_grpc.OperationsStub(self.channel)
        self.metadata = (("x-atelier-tenant", tenant),)

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        method = getattr(self.stub, name)
        return lambda request, **kw: method(
            request, metadata=self.metadata, timeout=kw.pop("timeout", 30), **kw
        )

    def train(self, timeout_s: float = 60, **fields: object) -> pb.ModelVersion:
        op = self.stub.TrainModel(pb.TrainModelRequest(**fields), metadata=self.metadata)
        op = self.ops.WaitOperation(
            operations_pb2.WaitOperationRequest(name=op.name, timeout={"seconds": int(timeout_s)}),
            metadata=self.metadata,
            timeout=timeout_s + 5,
        )
        assert op.done, op
        assert not op.HasField("error"), op.error
        version = pb.ModelVersion()
        op.response.Unpack(version)
        return version
