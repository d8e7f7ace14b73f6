"""Loaders for the real retail data in ../shared/benchmarks/ (each takes its folder as an argument).

Both become what the service stores: catalogue items and events (purchase or return, quantity,
amount paid, basket), so the benchmark scores exactly what a retailer's upload would give.
"""

from __future__ import annotations

import csv
import gzip
import re
import sys
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


# A full export first: a folder holding it and the sample means the full data.
ONLINE_RETAIL_FILES = (
    "Online Retail.csv",
    "OnlineRetail.csv",
    "online_retail.csv",
    "online_retail_sample.csv",
)


def _invoice_time(text: str) -> float:
    """ISO ("2011-03-10 16:16:00", the sample) or the spreadsheet export's "12/1/2010 8:26" (M/D/Y)."""
    text = text.strip()
    if "/" not in text:
        return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()
    for fmt in ("%m/%d/%Y %H:%M", "%m/%d/%y %H:%M", "%m/%d/%Y %H:%M:%S", "%m/%d/%y %H:%M:%S"):
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=UTC).timestamp()
        except ValueError:
            continue
    raise ValueError(f"unrecognised InvoiceDate {text!r}")


def online_retail_file(path: Path) -> Path:
    """The invoice-line CSV in a folder (the shared sample, or a full UCI export), or path itself."""
    if path.is_file():
        return path
    for name in ONLINE_RETAIL_FILES:
        if (path / name).is_file():
            return path / name
    raise FileNotFoundError(f"{path}: none of {', '.join(ONLINE_RETAIL_FILES)}")


def online_retail(folder: Path) -> tuple[EventArrays, list[CatalogItem], dict[str, str]]:
    """UCI Online Retail invoice lines -> purchases (cancellations -> returns).

    folder: the shared sample's folder, another folder holding a full UCI "Online Retail" CSV
    export (541,909 lines, columns as in the sample), or the CSV file itself.
    Style = the description without colour and pattern words (the same product in another
    colour); segment = the customer's country; guests (no CustomerID) and non-product codes
    (POST, DOT, M, BANK CHARGES, ...) are left out.
    """
    rows, items, countries = [], {}, {}
    skipped = 0
    path = online_retail_file(folder)
    with path.open(newline="", encoding="utf-8", errors="replace") as f:
        for r in csv.DictReader(f):
            code, customer = (r["StockCode"] or "").strip(), (r["CustomerID"] or "").strip()
            if not code[:1].isdigit() or customer in ("", "NA"):
                continue
            try:
                qty = float(r["Quantity"])
                price = float(r["UnitPrice"])
                when = _invoice_time(r["InvoiceDate"] or "")
            except ValueError:  # a line whose fields shifted (an unquoted comma in an export)
                skipped += 1
                continue
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
    if skipped:
        print(f"{path}: {skipped} invoice lines left out (fields do not parse)", file=sys.stderr)
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
