import unittest

from api import summary
from core import Order


class SummaryTest(unittest.TestCase):
    def test_summary(self) -> None:
        self.assertEqual(summary([Order(id=1, customer="a", total_cents=1999)]), "1 order(s), $19.99")
