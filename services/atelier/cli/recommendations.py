"""`atelier recs`: load a catalogue and events, train, ask for recommendations.

    atelier recs simulate demo/                 # catalog.csv + events.csv of a simulated retailer
    atelier recs load demo/catalog.csv demo/events.csv
    atelier recs train                          # progress bar until the new version is live
    atelier recs for u42 --n 12 --out u42.json
    atelier recs similar i7
    atelier recs look i7 i12

catalog.csv columns: item_id, category, colours (separated by |), style, silhouette, material,
price, currency, sizes (separated by |), image (a path, optional); any other column is a
free-form attribute. events.csv columns: event_id, user_id, item_id, type (view, cart,
purchase, return), time (ISO 8601; UTC when no offset), basket_id, segment (both optional).
"""

from __future__ import annotations

import csv
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import typer
from google.longrunning import operations_pb2, operations_pb2_grpc
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from atelier.cli import client
from atelier.common.v1 import money_pb2, progress_pb2
from atelier.recommendations.v1 import recommendations_pb2 as pb
from atelier.recommendations.v1 import recommendations_pb2_grpc as pb_grpc
from atelier.runtime.config import DEFAULT_PORTS

app = typer.Typer(
    help="Recommendations: catalogue, events, training, personalised picks.", no_args_is_help=True
)
console = Console()

DEFAULT_ADDRESS = f"127.0.0.1:{DEFAULT_PORTS['recommendations'][0]}"
EVENT_TYPES = {
    "view": pb.EVENT_TYPE_VIEW,
    "cart": pb.EVENT_TYPE_ADD_TO_CART,
    "add_to_cart": pb.EVENT_TYPE_ADD_TO_CART,
    "purchase": pb.EVENT_TYPE_PURCHASE,
    "return": pb.EVENT_TYPE_RETURN,
}
TYPE_NAMES: dict[int, str] = {int(v): k for k, v in EVENT_TYPES.items() if k != "add_to_cart"}
ITEM_COLUMNS = {
    "item_id",
    "category",
    "colours",
    "style",
    "silhouette",
    "material",
    "price",
    "currency",
    "sizes",
    "image",
}

AddressOpt = typer.Option(DEFAULT_ADDRESS, "--address", help="host:port of the recommendations service")
TenantOpt = typer.Option(
    "",
    "--tenant",
    help="retailer (x-atelier-tenant); default: the key's tenant, or ATELIER_DEFAULT_TENANT without keys",
)


def _stub(address: str) -> tuple[pb_grpc.RecommendationsServiceStub, grpc.Channel]:
    channel = client.channel(address)
    return pb_grpc.RecommendationsServiceStub(channel), channel


def _fail(exc: grpc.RpcError) -> None:
    console.print(f"[red]{exc.code().name}[/red]: {exc.details()}")
    raise typer.Exit(1)


def _money(text: str, currency: str) -> money_pb2.Money | None:
    if not text.strip():
        return None
    amount = float(text)
    units = int(amount)
    return money_pb2.Money(currency_code=currency, units=units, nanos=round((amount - units) * 1e9))


def _split(text: str) -> list[str]:
    return [p.strip() for p in (text or "").split("|") if p.strip()]


def read_catalog(path: Path) -> list[pb.Item]:
    items = []
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            msg = pb.Item(
                item_id=row["item_id"],
                category=row.get("category", ""),
                colours=_split(row.get("colours", "")),
                style=row.get("style", ""),
                silhouette=row.get("silhouette", ""),
                material=row.get("material", ""),
                sizes_in_stock=_split(row.get("sizes", "")),
                attributes={k: v for k, v in row.items() if k not in ITEM_COLUMNS and v},
            )
            price = _money(row.get("price", ""), row.get("currency", ""))
            if price is not None:
                msg.price.CopyFrom(price)
            if row.get("image"):
                image = Path(row["image"])
                msg.image.data = (image if image.is_absolute() else path.parent / image).read_bytes()
            items.append(msg)
    return items


def read_events(path: Path) -> list[pb.Event]:
    events = []
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            e = pb.Event(
                event_id=row["event_id"],
                user_id=row["user_id"],
                item_id=row["item_id"],
                type=EVENT_TYPES.get(row["type"].strip().lower(), pb.EVENT_TYPE_UNSPECIFIED),
                basket_id=row.get("basket_id", "") or "",
                segment=row.get("segment", "") or "",
            )
            when = datetime.fromisoformat(row["time"])
            e.time.FromDatetime(when if when.tzinfo else when.replace(tzinfo=UTC))
            events.append(e)
    return events


@app.command()
def simulate(
    out_dir: Path = typer.Argument(..., help="folder for catalog.csv and events.csv"),
    users: int = typer.Option(2000, help="shoppers"),
    items: int = typer.Option(500, help="catalogue items"),
    seed: int = typer.Option(0, help="random seed"),
) -> None:
    """Write the catalogue and events of a simulated retailer (taste clusters, seasons, popularity skew)."""
    from atelier.recommendations.simulate import simulate as run

    shop = run(users, items, n_clusters=max(2, min(20, items // 25)), seed=seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / "catalog.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "item_id",
                "category",
                "colours",
                "style",
                "silhouette",
                "material",
                "price",
                "currency",
                "sizes",
            ]
        )
        for it in shop.items:
            w.writerow(
                [
                    it.item_id,
                    it.category,
                    "|".join(it.colours),
                    it.style,
                    it.silhouette,
                    it.material,
                    f"{it.price:.2f}",
                    it.currency,
                    "|".join(it.sizes_in_stock),
                ]
            )
    segment = dict(zip(shop.user_ids, shop.user_segment, strict=True))
    with (out_dir / "events.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["event_id", "user_id", "item_id", "type", "time", "basket_id", "segment"])
        ev = shop.events
        for k in range(len(ev)):
            w.writerow(
                [
                    shop.event_ids[k],
                    ev.user_ids[k],
                    ev.item_ids[k],
                    TYPE_NAMES[int(ev.types[k])],
                    datetime.fromtimestamp(ev.times_s[k], UTC).isoformat(),
                    "",
                    segment[ev.user_ids[k]],
                ]
            )
    console.print(f"wrote {len(shop.items)} items and {len(shop.events)} events to {out_dir}/")


@app.command()
def load(
    catalog: Path = typer.Argument(..., exists=True, help="catalog.csv"),
    events: Path = typer.Argument(None, help="events.csv (optional)"),
    batch: int = typer.Option(5000, help="events per message"),
    address: str = AddressOpt,
    tenant: str = TenantOpt,
) -> None:
    """Upsert the catalogue, then stream the events (idempotent: loading twice changes nothing)."""
    stub, channel = _stub(address)
    md = (("x-atelier-tenant", tenant),)
    try:
        items = read_catalog(catalog)
        with _progress() as progress:
            task = progress.add_task("catalogue", total=len(items))
            extracted = 0
            for start in range(0, len(items), 1000):
                reply = stub.UpsertItems(
                    pb.UpsertItemsRequest(items=items[start : start + 1000]), metadata=md
                )
                extracted += reply.colours_extracted
                progress.advance(task, reply.upserted)
        console.print(f"{len(items)} items upserted ({extracted} photos gave colours)")
        if events is None:
            return
        evs = read_events(events)
        totals = pb.RecordEventsResponse()
        with _progress() as progress:
            task = progress.add_task("events", total=len(evs))
            for start in range(0, len(evs), batch):
                reply = stub.RecordEvents(
                    pb.RecordEventsRequest(events=evs[start : start + batch]), metadata=md
                )
                totals.accepted += reply.accepted
                totals.duplicates += reply.duplicates
                totals.unknown_items.extend(reply.unknown_items)
                progress.advance(task, len(evs[start : start + batch]))
        console.print(
            f"{totals.accepted} events accepted, {totals.duplicates} duplicates ignored, "
            f"{len(totals.unknown_items)} for items not in the catalogue"
        )
    except grpc.RpcError as exc:
        _fail(exc)
    finally:
        channel.close()


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=console,
    )


@app.command()
def train(
    algorithm: str = typer.Option("als", help="als or bpr"),
    factors: int = typer.Option(64, help="latent factors"),
    iterations: int = typer.Option(15, help="training iterations"),
    half_life_days: float = typer.Option(60.0, help="recency half-life of event weights, days"),
    address: str = AddressOpt,
    tenant: str = TenantOpt,
) -> None:
    """Train a model version (a job on the service) and follow it to the end with a progress bar."""
    stub, channel = _stub(address)
    md = (("x-atelier-tenant", tenant),)
    ops = operations_pb2_grpc.OperationsStub(channel)
    algo = {"als": pb.ALGORITHM_ALS, "bpr": pb.ALGORITHM_BPR}.get(algorithm.lower())
    if algo is None:
        raise typer.BadParameter("--algorithm must be als or bpr")
    try:
        op = stub.TrainModel(
            pb.TrainModelRequest(
                algorithm=algo, factors=factors, iterations=iterations, recency_half_life_days=half_life_days
            ),
            metadata=md,
        )
        with _progress() as progress:
            task = progress.add_task("training", total=1.0)
            while not op.done:
                time.sleep(0.5)
                op = ops.GetOperation(operations_pb2.GetOperationRequest(name=op.name), metadata=md)
                meta = progress_pb2.OperationMetadata()
                op.metadata.Unpack(meta)
                progress.update(
                    task, completed=meta.progress.fraction, description=f"training: {meta.progress.message}"
                )
    except grpc.RpcError as exc:
        _fail(exc)
    finally:
        channel.close()
    if op.HasField("error"):
        console.print(f"[red]training failed[/red]: {op.error.message}")
        raise typer.Exit(1)
    version = pb.ModelVersion()
    op.response.Unpack(version)
    console.print(
        f"model version {version.version} ({pb.Algorithm.Name(version.algorithm)}) on {version.users} users x "
        f"{version.items} items, {version.interactions} interactions, {version.train_seconds:.1f} s; "
        f"{'active' if version.active else 'not activated'}"
    )


def _show(title: str, recs: Any, out: Path | None, extra: dict[str, Any] | None = None) -> None:
    table = Table(title=title)
    for column in ("#", "item", "category", "score", "why"):
        table.add_column(column)
    for k, r in enumerate(recs, start=1):
        table.add_row(str(k), r.item_id, r.category, f"{r.score:.3f}", r.reason)
    console.print(table)
    if out is not None:
        payload = {
            **(extra or {}),
            "items": [
                {"item_id": r.item_id, "category": r.category, "score": r.score, "reason": r.reason}
                for r in recs
            ],
        }
        out.write_text(json.dumps(payload, indent=2))
        console.print(f"wrote {out}")


def _filter(
    category: list[str] | None,
    size: str,
    colour: list[str] | None,
    min_price: float | None,
    max_price: float | None,
    exclude_purchased: bool,
) -> pb.Filter:
    flt = pb.Filter(
        categories=category or [], size=size, colours=colour or [], exclude_purchased=exclude_purchased
    )
    for bound, value in ((flt.min_price, min_price), (flt.max_price, max_price)):
        money = _money(str(value), "") if value is not None else None
        if money is not None:
            bound.CopyFrom(money)
    return flt


@app.command("for")
def for_user(
    user: str = typer.Argument(..., help="user id (unknown users get a cold start)"),
    n: int = typer.Option(12, help="how many"),
    segment: str = typer.Option("", help="segment for cold start"),
    category: list[str] = typer.Option(None, help="only these categories"),
    size: str = typer.Option("", help="only items in stock in this size"),
    colour: list[str] = typer.Option(None, help="only these colours"),
    min_price: float = typer.Option(None, help="lowest price"),
    max_price: float = typer.Option(None, help="highest price"),
    exclude_purchased: bool = typer.Option(True, help="leave out what the user bought or returned"),
    diversify: bool = typer.Option(True, help="spread across categories"),
    out: Path = typer.Option(None, help="also write the answer as JSON"),
    address: str = AddressOpt,
    tenant: str = TenantOpt,
) -> None:
    """Recommendations for a shopper, with the reason for each."""
    stub, channel = _stub(address)
    try:
        reply = stub.Recommend(
            pb.RecommendRequest(
                user_id=user,
                n=n,
                segment=segment,
                diversify=diversify,
                filter=_filter(category, size, colour, min_price, max_price, exclude_purchased),
            ),
            metadata=(("x-atelier-tenant", tenant),),
        )
    except grpc.RpcError as exc:
        _fail(exc)
    finally:
        channel.close()
    kind = "cold start" if reply.cold_start else f"model v{reply.model_version}"
    _show(
        f"for {user} ({kind})",
        reply.recommendations,
        out,
        {"user_id": user, "model_version": reply.model_version, "cold_start": reply.cold_start},
    )


@app.command()
def similar(
    item: str = typer.Argument(..., help="item id"),
    n: int = typer.Option(12, help="how many"),
    out: Path = typer.Option(None, help="also write the answer as JSON"),
    address: str = AddressOpt,
    tenant: str = TenantOpt,
) -> None:
    """Items similar to one (shoppers' behaviour blended with attributes)."""
    stub, channel = _stub(address)
    try:
        reply = stub.SimilarItems(
            pb.SimilarItemsRequest(item_id=item, n=n), metadata=(("x-atelier-tenant", tenant),)
        )
    except grpc.RpcError as exc:
        _fail(exc)
    finally:
        channel.close()
    _show(f"like {item}", reply.items, out, {"item_id": item})


@app.command()
def look(
    items: list[str] = typer.Argument(..., help="item ids in the cart or on the page"),
    n: int = typer.Option(6, help="how many"),
    out: Path = typer.Option(None, help="also write the answer as JSON"),
    address: str = AddressOpt,
    tenant: str = TenantOpt,
) -> None:
    """Complete the look: complementary items from compatible categories."""
    stub, channel = _stub(address)
    try:
        reply = stub.CompleteTheLook(
            pb.CompleteTheLookRequest(item_ids=items, n=n), metadata=(("x-atelier-tenant", tenant),)
        )
    except grpc.RpcError as exc:
        _fail(exc)
    finally:
        channel.close()
    _show(f"goes with {', '.join(items)}", reply.items, out, {"item_ids": items})
