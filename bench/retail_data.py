"""Loaders for the real retail data in ../shared/benchmarks/ (each takes its folder as an argument).

Both become what the service stores: catalogue items and events (purchase or return, quantity,
amount paid, basket), so the benchmark scores exactly what a retailer's upload would give.
"""

from __future__ import annotations

import csv
import gzip
import re
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from atelier.recommendations.store import CatalogItem, EventArrays, EventType

COLOUR_WORDS = re.compile(
    r"\b(RED|WHITE|BLUE|PINK|GREEN|BLACK|IVORY|CREAM|PURPLE|ORANGE|YELLOW|GREY|GOLD|SILVER|BROWN|"
    r"NATURAL|TURQUOISE|LILAC|AQUA|CHOCOLATE|RETROSPOT|POLKADOT|SPOTTY|STRIPE[SD]?)\b"
)


def _arrays(rows: list[tuple]) -> EventArrays:  # type: ignore[type-arg]
    rows.sort(key=lambda r: r[3])
    users, items, types, times, baskets, qty, value = zip(*rows, strict=True) if rows else ((),) * 7
    return EventArrays(
        np.arange(1, len(rows) + 1, dtype=np.int64),
        np.array(users, dtype=object),
        np.array(items, dtype=object),
        np.array(types, dtype=np.int8),
        np.array(times, dtype=np.float64),
        np.array(baskets, dtype=object),
        np.array(qty, dtype=np.float32),
        np.array(value, dtype=np.float64),
    )


def online_retail(folder: Path) -> tuple[EventArrays, list[CatalogItem], dict[str, str]]:
    """UCI Online Retail sample: invoice lines -> purchases (cancellations -> returns).

    Style = the description without colour and pattern words (the same product in another
    colour); segment = the customer's country; guests (no CustomerID) and non-product codes
    (POST, DOT, M, BANK CHARGES, ...) are left out.
    """
    rows, items, countries = [], {}, {}
    with (folder / "online_retail_sample.csv").open(newline="", encoding="utf-8", errors="replace") as f:
        for r in csv.DictReader(f):
            code, customer = r["StockCode"].strip(), r["CustomerID"].strip()
            if not code[:1].isdigit() or customer in ("", "NA"):
                continue
            qty = float(r["Quantity"])
            price = float(r["UnitPrice"])
            when = datetime.fromisoformat(r["InvoiceDate"]).replace(tzinfo=UTC).timestamp()
            is_return = r["InvoiceNo"].startswith("C") or qty < 0
            desc = " ".join(r["Description"].split()).upper()
            if code not in items:
                style = " ".join(COLOUR_WORDS.sub(" ", desc).split())
                items[code] = CatalogItem(code, "homeware", style=style, price=price or None)
            countries[customer] = r["Country"]
            rows.append(
                (
                    customer,
                    code,
                    int(EventType.RETURN if is_return else EventType.PURCHASE),
                    when,
                    r["InvoiceNo"].lstrip("C"),
                    abs(qty) or 1.0,
                    abs(qty) * price,
                )
            )
    return _arrays(rows), sorted(items.values(), key=lambda it: it.item_id), countries


def complete_journey(folder: Path) -> tuple[EventArrays, list[CatalogItem], dict[str, str]]:
    """84.51 Complete Journey sample: basket lines -> purchases with quantity and sales value.

    Category = product_category, style = product_type (grocery's "same thing, another variant");
    segment = age band and household composition where demographics are known.
    """
    products = {}
    with gzip.open(folder / "products.csv.gz", "rt", newline="") as f:
        for r in csv.DictReader(f):
            products[r["product_id"]] = r
    segments = {}
    with gzip.open(folder / "demographics.csv.gz", "rt", newline="") as f:
        for r in csv.DictReader(f):
            segments[r["household_id"]] = f"{r['age']}|{r['household_comp']}"
    rows, bought = [], set()
    with gzip.open(folder / "transactions_sample.csv.gz", "rt", newline="") as f:
        for r in csv.DictReader(f):
            qty = float(r["quantity"] or 0)
            value = float(r["sales_value"] or 0)
            when = datetime.fromisoformat(r["transaction_timestamp"]).replace(tzinfo=UTC).timestamp()
            kind = EventType.RETURN if qty < 0 or value < 0 else EventType.PURCHASE
            rows.append(
                (
                    r["household_id"],
                    r["product_id"],
                    int(kind),
                    when,
                    r["basket_id"],
                    abs(qty) or 1.0,
                    abs(value),
                )
            )
            bought.add(r["product_id"])
    items = []
    for pid in sorted(bought):
        p = products.get(pid, {})
        items.append(
            CatalogItem(
                pid,
                (p.get("product_category") or p.get("department") or "unknown").lower(),
                style=p.get("product_type", "") or "",
                attributes={"department": p.get("department", ""), "brand": p.get("brand", "")},
            )
        )
    return _arrays(rows), items, segments
