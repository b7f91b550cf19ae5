import pytest

from inventory.stock import is_low_stock, restock


def test_low_stock_below_threshold():
    assert is_low_stock(2, 5)


def test_low_stock_at_threshold():
    assert is_low_stock(5, 5)


def test_restock_adds():
    assert restock(3, 4) == 7


def test_restock_refuses_negative():
    with pytest.raises(ValueError):
        restock(3, -1)


def test_not_low_when_plenty():
    assert not is_low_stock(9, 5)
