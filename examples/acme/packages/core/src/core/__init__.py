"""Acme core: orders and money."""

from core.generated import Customer, Order


def order_total(orders: list[Order]) -> int:
    return sum(o.total_cents for o in orders)


__all__ = ["Customer", "Order", "order_total"]
