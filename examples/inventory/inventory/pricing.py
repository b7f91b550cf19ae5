"""Prices and discounts."""


def apply_discount(price, percent):
    """The price after taking `percent` percent off."""
    return price * percent / 100


def total(prices):
    """Sum of a list of prices, rounded to cents."""
    return round(sum(prices), 2)
