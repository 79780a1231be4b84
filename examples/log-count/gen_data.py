"""Write a realistic application log for the log-count example, the same every time.

    python gen_data.py log-count-data.txt [--lines 40000] [--seed 7]

Lines look like `2024-05-01 08:00:00.123 INFO  [http-nio-8080-exec-3] c.e.orders.OrderService -
order 81723 accepted (3 items, 54.20 EUR)`. Levels have the frequencies of a busy service
(mostly INFO and DEBUG, some WARN, few ERROR); some ERRORs carry a Java-style stack trace whose
lines have no level, as real logs do. 40 000 entries make about 5 MB.
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

LEVEL_WEIGHTS = {"INFO": 58, "DEBUG": 27, "WARN": 11, "ERROR": 4}
THREADS = ["main", "scheduler-1", "scheduler-2", "kafka-consumer-0", "kafka-consumer-1",
           *(f"http-nio-8080-exec-{n}" for n in range(1, 9))]
MESSAGES: dict[str, list[tuple[str, str]]] = {
    "INFO": [
        ("c.e.orders.OrderService", "order {id} accepted ({n} items, {amount} EUR)"),
        ("c.e.orders.OrderService", "order {id} shipped via {carrier}"),
        ("c.e.auth.LoginController", "user u{user} logged in from 10.{a}.{b}.{c}"),
        ("c.e.http.AccessLog", "GET /api/v1/products/{id} 200 {ms}ms"),
        ("c.e.http.AccessLog", "POST /api/v1/orders 201 {ms}ms"),
        ("c.e.billing.InvoiceJob", "invoice batch {id} written ({n} invoices)"),
    ],
    "DEBUG": [
        ("c.e.db.ConnectionPool", "borrowed connection {n}/32 after {ms}ms"),
        ("c.e.cache.ProductCache", "cache miss for product {id}, loading"),
        ("c.e.orders.PriceCalculator", "price for {id}: base {amount}, discount {n}%"),
        ("o.a.kafka.clients.Fetcher", "fetched {n} records from orders-{c} at offset {id}"),
    ],
    "WARN": [
        ("c.e.http.AccessLog", "GET /api/v1/products/{id} 404 {ms}ms"),
        ("c.e.db.ConnectionPool", "pool nearly exhausted: {n}/32 in use"),
        ("c.e.payments.PspClient", "payment provider slow: {ms}ms for order {id}, retrying"),
        ("c.e.auth.LoginController", "failed login for user u{user} from 10.{a}.{b}.{c}"),
    ],
    "ERROR": [
        ("c.e.payments.PspClient", "payment for order {id} declined: upstream timeout"),
        ("c.e.orders.OrderService", "could not reserve stock for order {id}"),
        ("c.e.billing.InvoiceJob", "invoice batch {id} failed; will retry in {n} minutes"),
    ],
}
CARRIERS = ["DHL", "UPS", "GLS", "DPD"]
STACK = ["java.util.concurrent.TimeoutException: no response within 3000 ms",
         "\tat com.example.payments.PspClient.charge(PspClient.java:{n})",
         "\tat com.example.orders.OrderService.checkout(OrderService.java:{n})",
         "\tat java.base/java.lang.Thread.run(Thread.java:833)"]
START = datetime(2024, 5, 1, 8, 0, 0)


def entries(rng: random.Random, count: int) -> Iterator[str]:
    """`count` log entries (an entry may span several lines when it has a stack trace)."""
    moment = START
    levels, weights = list(LEVEL_WEIGHTS), list(LEVEL_WEIGHTS.values())
    for _ in range(count):
        moment += timedelta(milliseconds=rng.randint(1, 400))
        level = rng.choices(levels, weights)[0]
        yield _line(rng, moment, level)
        if level == "ERROR" and rng.random() < 0.5:
            yield from (frame.format(**_values(rng)) for frame in STACK)


def _line(rng: random.Random, moment: datetime, level: str) -> str:
    logger, template = rng.choice(MESSAGES[level])
    stamp = moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d}"
    thread = rng.choice(THREADS)
    return f"{stamp} {level:<5} [{thread}] {logger} - {template.format(**_values(rng))}"


def _values(rng: random.Random) -> dict[str, object]:
    return {"id": rng.randint(10_000, 999_999), "n": rng.randint(1, 60),
            "amount": f"{rng.uniform(3, 400):.2f}", "carrier": rng.choice(CARRIERS),
            "user": rng.randint(1, 5000), "ms": rng.randint(2, 2500),
            "a": rng.randint(0, 255), "b": rng.randint(0, 255), "c": rng.randint(0, 255)}


def write_log(path: Path, count: int, seed: int) -> None:
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as out:
        for line in entries(rng, count):
            out.write(line + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("output", type=Path, help="file to write")
    parser.add_argument("--lines", type=int, default=40_000, help="log entries (default 40000)")
    parser.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    arguments = parser.parse_args()
    write_log(arguments.output, arguments.lines, arguments.seed)
    print(f"wrote {arguments.output} ({arguments.output.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
