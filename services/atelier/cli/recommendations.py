"""`atelier recs`: load a catalogue and events, train, ask for recommendations.

    atelier recs simulate demo/                 # catalog.csv + events.csv of a simulated retailer
    atelier recs load demo/catalog.csv demo/events.csv
    atelier recs train                          # progress bar until the new version is live
    atelier recs for u42 --n 12 --out u42.json
    atelier recs similar i7
    atelier recs look i7 i12
    atelier recs evaluate --out eval.json       # the model against baselines on your own events
    atelier recs settings --purchased include   # the tenant's default for bought items

The CSV formats are in services/atelier/recommendations/README.md ("Loading CSV files"): a bad
row is reported by line and column and skipped (``--strict`` refuses the file instead).
"""

from __future__ import annotations

import csv
import json
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any, NamedTuple

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
from atelier.runtime.limits import MAX_MAGNITUDE

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
    # In decimal, rounded to whole nanos first: float arithmetic made 1.9999999999 one unit and
    # 1,000,000,000 nanos (not a valid Money; the fuzz found it).
    amount = Decimal(text.strip()).quantize(Decimal("1e-9"), rounding=ROUND_HALF_EVEN)
    units = int(amount)
    return money_pb2.Money(currency_code=currency, units=units, nanos=int((amount - units) * 1_000_000_000))


def _split(text: str) -> list[str]:
    return [p.strip() for p in (text or "").split("|") if p.strip()]


class CsvProblem(NamedTuple):
    """One bad row: the line number in the file (header = line 1), the column and what to fix."""

    line: int
    column: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line}, column {self.column!r}: {self.message}"


class CsvError(Exception):
    """A file that cannot be read at all (missing column, not CSV); names what to fix."""


def _rows(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    try:
        f = path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise CsvError(f"{path}: {exc.strerror}") from exc
    with f:
        reader = csv.DictReader(f)
        try:
            header = reader.fieldnames or []
        except (csv.Error, UnicodeDecodeError) as exc:
            raise CsvError(f"{path}: line 1 is not a CSV header ({exc})") from exc
        missing = [c for c in required if c not in header]
        if missing:
            raise CsvError(
                f"{path}: line 1 (the header) lacks the column(s) {', '.join(missing)}; "
                f"found {', '.join(header) or 'nothing'}"
            )
        try:
            for row in reader:
                if None in row:  # more fields than the header has
                    row.pop(None)
                    row["__extra__"] = "1"
                yield reader.line_num, {k: (v or "").strip() for k, v in row.items()}
        except (csv.Error, UnicodeDecodeError) as exc:
            raise CsvError(f"{path}: line {reader.line_num}: {exc}") from exc


def _number(row: dict[str, str], column: str, line: int, problems: list[CsvProblem]) -> float | None:
    text = row.get(column, "")
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        problems.append(CsvProblem(line, column, f"{text!r} is not a number"))
        return None
    if value != value or value in (float("inf"), float("-inf")):
        problems.append(CsvProblem(line, column, f"{text!r} is not a finite number"))
        return None
    if abs(value) > MAX_MAGNITUDE:  # the services' bound; 1e19 did not fit a Money's units (the fuzz)
        problems.append(
            CsvProblem(line, column, f"{text!r} is beyond the limit of {MAX_MAGNITUDE:g} in magnitude")
        )
        return None
    return value


def _ids(
    row: dict[str, str], columns: tuple[str, ...], line: int, problems: list[CsvProblem], required: bool
) -> bool:
    ok = True
    for column in columns:
        value = row.get(column, "")
        if required and not value:
            problems.append(CsvProblem(line, column, "required, empty here"))
            ok = False
        elif len(value) > 128:
            problems.append(CsvProblem(line, column, f"at most 128 characters, {len(value)} here"))
            ok = False
    return ok


def read_catalog(path: Path) -> tuple[list[pb.Item], list[int], list[CsvProblem]]:
    """The catalogue's good rows as messages (with their line numbers) and the bad rows' problems."""
    items: list[pb.Item] = []
    lines: list[int] = []
    problems: list[CsvProblem] = []
    for line, row in _rows(path, ("item_id", "category")):
        before = len(problems)
        _ids(row, ("item_id", "category"), line, problems, required=True)
        price = _number(row, "price", line, problems)
        if price is not None and price < 0:
            problems.append(CsvProblem(line, "price", "must not be negative"))
        image_bytes = b""
        if row.get("image"):
            image = Path(row["image"])
            image = image if image.is_absolute() else path.parent / image
            try:
                image_bytes = image.read_bytes()
            except OSError as exc:
                problems.append(CsvProblem(line, "image", f"cannot read {image}: {exc.strerror}"))
            except ValueError:  # a NUL in the path (the fuzz found it)
                problems.append(CsvProblem(line, "image", f"{row['image']!r} is not a file path"))
        if len(problems) > before:
            continue
        msg = pb.Item(
            item_id=row["item_id"],
            category=row["category"],
            colours=_split(row.get("colours", "")),
            style=row.get("style", ""),
            silhouette=row.get("silhouette", ""),
            material=row.get("material", ""),
            sizes_in_stock=_split(row.get("sizes", "")),
            attributes={k: v for k, v in row.items() if k not in ITEM_COLUMNS and k != "__extra__" and v},
        )
        money = _money(row.get("price", ""), row.get("currency", ""))
        if money is not None:
            msg.price.CopyFrom(money)
        if image_bytes:
            msg.image.data = image_bytes
        items.append(msg)
        lines.append(line)
    return items, lines, problems


def read_events(path: Path) -> tuple[list[pb.Event], list[int], list[CsvProblem]]:
    """The events' good rows as messages (with their line numbers) and the bad rows' problems.

    A purchase line with a negative quantity (an invoice cancellation) is a return of that many
    units; value follows the same sign.
    """
    events: list[pb.Event] = []
    lines: list[int] = []
    problems: list[CsvProblem] = []
    for line, row in _rows(path, ("event_id", "user_id", "item_id", "type", "time")):
        before = len(problems)
        _ids(row, ("event_id", "user_id", "item_id"), line, problems, required=True)
        _ids(row, ("basket_id", "segment"), line, problems, required=False)
        kind = EVENT_TYPES.get(row["type"].lower())
        if kind is None:
            problems.append(
                CsvProblem(line, "type", f"{row['type']!r} is not one of view, cart, purchase, return")
            )
        when = None
        try:
            when = datetime.fromisoformat(row["time"])
            # In UTC within years 1-9999 (0001-01-01T00:00+05:00 overflowed in FromDatetime; found writing the fuzz).
            when = (when if when.tzinfo else when.replace(tzinfo=UTC)).astimezone(UTC)
        except ValueError:
            when = None
            problems.append(
                CsvProblem(line, "time", f"{row['time']!r} is not an ISO 8601 time (2024-03-01T12:00:00Z)")
            )
        except OverflowError:
            when = None
            problems.append(CsvProblem(line, "time", f"{row['time']!r} is outside years 1-9999 in UTC"))
        quantity = _number(row, "quantity", line, problems)
        value = _number(row, "value", line, problems)
        if quantity is not None and quantity < 0:
            if kind in (pb.EVENT_TYPE_PURCHASE, pb.EVENT_TYPE_RETURN):
                kind, quantity = pb.EVENT_TYPE_RETURN, -quantity
                value = abs(value) if value is not None else None
            else:
                problems.append(CsvProblem(line, "quantity", "negative only on purchase or return lines"))
        if value is not None and value < 0:
            problems.append(
                CsvProblem(line, "value", "must not be negative (a return is a negative quantity)")
            )
        if len(problems) > before or kind is None or when is None:
            continue
        e = pb.Event(
            event_id=row["event_id"],
            user_id=row["user_id"],
            item_id=row["item_id"],
            type=kind,  # type: ignore[arg-type]
            basket_id=row.get("basket_id", ""),
            segment=row.get("segment", ""),
            quantity=quantity or 0.0,
        )
        if value is not None:
            e.value.CopyFrom(_money(str(value), "") or money_pb2.Money())
        e.time.FromDatetime(when)
        events.append(e)
        lines.append(line)
    return events, lines, problems


def _report(path: Path, problems: list[CsvProblem], strict: bool) -> None:
    if not problems:
        return
    console.print(
        f"[yellow]{path}: {len(problems)} problem(s) in {len({p.line for p in problems})} row(s)[/yellow]"
    )
    for p in problems[:20]:
        console.print(f"  {p}")
    if len(problems) > 20:
        console.print(f"  ... and {len(problems) - 20} more")
    if strict:
        console.print("[red]--strict: nothing was sent; fix the rows above and load again[/red]")
        raise typer.Exit(1)
    console.print("those rows are skipped; the others are loaded (--strict to refuse the file instead)")


def _send_batch(
    send: Any, messages: list[Any], lines: list[int], field: str, problems: list[CsvProblem]
) -> Any:
    """Send one batch; when the server rejects rows, report them by line and resend the rest."""
    from atelier.runtime.status import field_violations

    try:
        return send(messages)
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.INVALID_ARGUMENT:
            raise
        bad: set[int] = set()
        for path, description in field_violations(exc):
            m = re.match(rf"{field}\[(\d+)\]\.?(.*)", path)
            if m is None:
                raise
            k = int(m.group(1))
            bad.add(k)
            problems.append(
                CsvProblem(lines[k], m.group(2) or field, f"refused by the service: {description}")
            )
        keep = [k for k in range(len(messages)) if k not in bad]
        if not keep:
            return None
        return send([messages[k] for k in keep])


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
    strict: bool = typer.Option(False, help="refuse the whole file when any row is bad"),
    address: str = AddressOpt,
    tenant: str = TenantOpt,
) -> None:
    """Upsert the catalogue, then send the events (idempotent: loading twice changes nothing).

    A bad row is reported with its line and column and skipped; the good rows are loaded.
    """
    stub, channel = _stub(address)
    md = (("x-atelier-tenant", tenant),)
    problems: list[CsvProblem] = []
    try:
        items, item_lines, problems = read_catalog(catalog)
        _report(catalog, problems, strict)
        sent_problems: list[CsvProblem] = []
        with _progress() as progress:
            task = progress.add_task("catalogue", total=len(items))
            upserted = extracted = 0
            for start in range(0, len(items), 1000):
                reply = _send_batch(
                    lambda msgs: stub.UpsertItems(pb.UpsertItemsRequest(items=msgs), metadata=md),
                    items[start : start + 1000],
                    item_lines[start : start + 1000],
                    "items",
                    sent_problems,
                )
                if reply is not None:
                    extracted += reply.colours_extracted
                    upserted += reply.upserted
                progress.advance(task, len(items[start : start + 1000]))
        console.print(f"{upserted} items upserted ({extracted} photos gave colours)")
        _report(catalog, sent_problems, strict=False)
        if events is None:
            return
        evs, ev_lines, problems = read_events(events)
        _report(events, problems, strict)
        sent_problems = []
        totals = pb.RecordEventsResponse()
        with _progress() as progress:
            task = progress.add_task("events", total=len(evs))
            for start in range(0, len(evs), batch):
                reply = _send_batch(
                    lambda msgs: stub.RecordEvents(pb.RecordEventsRequest(events=msgs), metadata=md),
                    evs[start : start + batch],
                    ev_lines[start : start + batch],
                    "events",
                    sent_problems,
                )
                if reply is not None:
                    totals.accepted += reply.accepted
                    totals.duplicates += reply.duplicates
                    totals.unknown_items.extend(reply.unknown_items)
                progress.advance(task, len(evs[start : start + batch]))
        console.print(
            f"{totals.accepted} events accepted, {totals.duplicates} duplicates ignored, "
            f"{len(totals.unknown_items)} for items not in the catalogue"
        )
        _report(events, sent_problems, strict=False)
    except CsvError as exc:
        console.print(f"[red]cannot read[/red] {exc}")
        raise typer.Exit(1) from None
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
        f"{version.items} items, {version.interactions} interactions, ranked lists for "
        f"{version.ranked_users} shoppers, {version.train_seconds:.1f} s; "
        f"{'active' if version.active else 'not activated'}"
    )


def _show(title: str, recs: Any, out: Path | None, extra: dict[str, Any] | None = None) -> None:
    table = Table(title=title)
    for column in ("#", "item", "category", "score", "source", "why"):
        table.add_column(column)
    for k, r in enumerate(recs, start=1):
        table.add_row(str(k), r.item_id, r.category, f"{r.score:.3f}", r.source, r.reason)
    console.print(table)
    if out is not None:
        payload = {
            **(extra or {}),
            "items": [
                {
                    "item_id": r.item_id,
                    "category": r.category,
                    "score": r.score,
                    "source": r.source,
                    "reason": r.reason,
                }
                for r in recs
            ],
        }
        out.write_text(json.dumps(payload, indent=2))
        console.print(f"wrote {out}")


PURCHASED = {
    "": pb.PURCHASED_POLICY_UNSPECIFIED,
    "include": pb.PURCHASED_POLICY_INCLUDE,
    "exclude": pb.PURCHASED_POLICY_EXCLUDE,
    "exclude-unless-rebought": pb.PURCHASED_POLICY_EXCLUDE_UNLESS_REBOUGHT,
}
PURCHASED_NAMES = {v: k for k, v in PURCHASED.items() if k}


def _purchased(value: str) -> int:
    policy = PURCHASED.get(value.strip().lower())
    if policy is None:
        raise typer.BadParameter("--purchased must be include, exclude or exclude-unless-rebought")
    return int(policy)


def _filter(
    category: list[str] | None,
    size: str,
    colour: list[str] | None,
    min_price: float | None,
    max_price: float | None,
    purchased: str,
) -> pb.Filter:
    flt = pb.Filter(
        categories=category or [],
        size=size,
        colours=colour or [],
        purchased=_purchased(purchased),  # type: ignore[arg-type]
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
    purchased: str = typer.Option(
        "",
        help="bought items: include, exclude or exclude-unless-rebought; default: the tenant's "
        "setting (see `atelier recs settings`), the same default the API uses",
    ),
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
                filter=_filter(category, size, colour, min_price, max_price, purchased),
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


def _wait(
    stub_channel: grpc.Channel, op: operations_pb2.Operation, md: Any, title: str
) -> operations_pb2.Operation:
    ops = operations_pb2_grpc.OperationsStub(stub_channel)
    with _progress() as progress:
        task = progress.add_task(title, total=1.0)
        while not op.done:
            time.sleep(0.5)
            op = ops.GetOperation(operations_pb2.GetOperationRequest(name=op.name), metadata=md)
            meta = progress_pb2.OperationMetadata()
            op.metadata.Unpack(meta)
            progress.update(
                task, completed=meta.progress.fraction, description=f"{title}: {meta.progress.message}"
            )
    return op


@app.command()
def evaluate(
    test_days: float = typer.Option(14.0, help="held-out days at the end of the events"),
    k: int = typer.Option(12, help="metrics cut-off (MAP@k, recall@k, NDCG@k)"),
    max_users: int = typer.Option(5000, help="evaluated shoppers are sampled down to this many"),
    out: Path = typer.Option(None, help="also write the report as JSON"),
    address: str = AddressOpt,
    tenant: str = TenantOpt,
) -> None:
    """Offline evaluation on the tenant's own events: the model against four baselines."""
    stub, channel = _stub(address)
    md = (("x-atelier-tenant", tenant),)
    try:
        op = stub.EvaluateModel(
            pb.EvaluateModelRequest(test_days=test_days, k=k, max_users=max_users), metadata=md
        )
        op = _wait(channel, op, md, "evaluating")
    except grpc.RpcError as exc:
        _fail(exc)
    finally:
        channel.close()
    if op.HasField("error"):
        console.print(f"[red]evaluation failed[/red]: {op.error.message}")
        raise typer.Exit(1)
    report = pb.EvaluationReport()
    op.response.Unpack(report)
    table = Table(
        title=f"last {report.test_days:g} days held out: {report.users_evaluated} shoppers, "
        f"{report.train_events} training events, {report.items} items"
    )
    for column in (
        "method",
        f"MAP@{report.k}",
        f"recall@{report.k}",
        f"NDCG@{report.k}",
        "coverage",
        "novelty bits",
    ):
        table.add_column(column)
    for m in report.methods:
        table.add_row(
            m.name,
            f"{m.map_at_k:.4f}",
            f"{m.recall_at_k:.4f}",
            f"{m.ndcg_at_k:.4f}",
            f"{m.coverage:.3f}",
            f"{m.novelty_bits:.2f}",
        )
    console.print(table)
    console.print(
        f"lift over the best baseline ({report.best_baseline}): {report.lift:+.1%} "
        f"(bootstrap 95 % interval {report.lift_ci_low:+.1%} .. {report.lift_ci_high:+.1%})"
    )
    if out is not None:
        out.write_text(json.dumps(json.loads(report.details_json), indent=2))
        console.print(f"wrote {out}")


@app.command()
def settings(
    purchased: str = typer.Option(
        "", help="default for bought items: include, exclude or exclude-unless-rebought (empty: show)"
    ),
    address: str = AddressOpt,
    tenant: str = TenantOpt,
) -> None:
    """Show or change the tenant's settings (what Recommend does with bought items by default)."""
    stub, channel = _stub(address)
    md = (("x-atelier-tenant", tenant),)
    try:
        if purchased:
            reply = stub.UpdateSettings(
                pb.UpdateSettingsRequest(settings=pb.TenantSettings(purchased=_purchased(purchased))),  # type: ignore[arg-type]
                metadata=md,
            )
        else:
            reply = stub.GetSettings(pb.GetSettingsRequest(), metadata=md)
    except grpc.RpcError as exc:
        _fail(exc)
    finally:
        channel.close()
    console.print(f"purchased: {PURCHASED_NAMES.get(reply.purchased, 'unspecified')}")
