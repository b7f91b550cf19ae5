"""Stock levels."""


def is_low_stock(quantity, threshold):
    """True when the quantity is at or below the reorder threshold."""
    return quantity < threshold


def restock(quantity, amount):
    """Quantity after receiving `amount` more items; negative amounts are refused."""
    if amount < 0:
        raise ValueError("amount must be positive")
    return quantity + amount
