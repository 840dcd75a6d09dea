import unittest

from utils import money


class MoneyTest(unittest.TestCase):
    def test_formats_cents(self) -> None:
        self.assertEqual(money(1205), "$12.05")
