"""Acme API: renders order summaries."""

from core import Order, order_total
from utils import money


def summary(orders: list[Order]) -> str:
    return f"{len(orders)} order(s), {money(order_total(orders))}"
