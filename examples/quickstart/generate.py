"""Generates the quickstart's data set (already in data/; run again to rebuild it the same way).

Three tables with the usual dirt of real exports:
- customers.csv   2,000 customers; a few without a name
- products.jsonl  120 products
- orders.csv      25,000 orders; some negative amounts, some with an unknown customer,
                  some order ids exported twice, a status column with four values
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pv

HERE = Path(__file__).parent / "data"
COUNTRIES = ["DE", "FR", "NL", "ES", "IT", "PL", "SE", "US", "GB", "CA"]
CATEGORIES = ["books", "garden", "kitchen", "toys", "outdoor", "office"]


def main(seed: int = 7) -> None:
    rng = np.random.default_rng(seed)
    HERE.mkdir(exist_ok=True)
    n_cust, n_prod, n_ord = 2_000, 120, 25_000

    first = np.array(["Ada", "Ben", "Chloe", "Dara", "Emil", "Fatima", "Goran", "Hana", "Ivo", "Jules", "Kai", "Lena"])
    last = np.array(["Berg", "Costa", "Dubois", "Eriksen", "Fischer", "Garcia", "Horvat", "Ito", "Jansen", "Kowalski"])
    names = pc.binary_join_element_wise(pa.array(rng.choice(first, n_cust)), pa.array(rng.choice(last, n_cust)), " ")
    names = pc.if_else(pa.array(rng.random(n_cust) < 0.005), pa.nulls(n_cust, pa.string()), names)
    signup = pa.array(np.datetime64("2021-01-01") + rng.integers(0, 1_200, n_cust).astype("timedelta64[D]"))
    customers = pa.table({
        "customer_id": pa.array(np.arange(1, n_cust + 1)),
        "name": names,
        "country": pa.array(rng.choice(COUNTRIES, n_cust, p=[.2, .15, .1, .1, .1, .05, .05, .1, .1, .05])),
        "segment": pa.array(rng.choice(["consumer", "business"], n_cust, p=[.8, .2])),
        "signup_date": signup,
    })
    pv.write_csv(customers, HERE / "customers.csv")

    products = pa.table({
        "product_id": pa.array(np.arange(100, 100 + n_prod)),
        "product": pa.array([f"item-{i:03d}" for i in range(n_prod)]),
        "category": pa.array(rng.choice(CATEGORIES, n_prod)),
        "unit_price": pa.array(np.round(rng.gamma(2.0, 15.0, n_prod) + 1, 2)),
    })
    with open(HERE / "products.jsonl", "w") as f:
        # pyarrow has no JSON writer; 120 rows, so a plain loop is fine here
        for row in products.to_pylist():
            f.write(json.dumps(row) + "\n")

    order_ids = np.arange(500_000, 500_000 + n_ord)
    n = n_ord
    cust = rng.integers(1, n_cust + 1, n)
    cust[rng.random(n) < 0.004] = 9_999_999  # customers that do not exist
    prod = rng.integers(100, 100 + n_prod, n)
    qty = rng.integers(1, 6, n)
    price = products.column("unit_price").to_numpy()[prod - 100]
    amount = np.round(qty * price, 2)
    amount[rng.random(n) < 0.003] *= -1  # refunds exported as negative sales
    day = np.datetime64("2024-01-01") + rng.integers(0, 365, n).astype("timedelta64[D]")
    orders = pa.table({
        "order_id": pa.array(order_ids),
        "customer_id": pa.array(cust),
        "product_id": pa.array(prod),
        "order_date": pa.array(day),
        "quantity": pa.array(qty),
        "amount": pa.array(amount),
        "status": pa.array(rng.choice(["paid", "pending", "refunded", "cancelled"], n, p=[.78, .1, .07, .05])),
    })
    dup = pa.array(rng.choice(n, 60, replace=False))  # rows exported twice
    orders = pa.concat_tables([orders, orders.take(dup)])
    orders = orders.take(pa.array(rng.permutation(orders.num_rows)))
    pv.write_csv(orders, HERE / "orders.csv")
    print(f"wrote {n_cust} customers, {n_prod} products, {orders.num_rows} orders to {HERE}")


if __name__ == "__main__":
    main()
