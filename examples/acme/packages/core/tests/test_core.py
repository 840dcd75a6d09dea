import unittest

from core import Order, order_total


class OrderTotalTest(unittest.TestCase):
    def test_sums_cents(self) -> None:
        orders = [Order(id=1, customer="a", total_cents=250), Order(id=2, customer="b", total_cents=5)]
        self.assertEqual(order_total(orders), 255)
