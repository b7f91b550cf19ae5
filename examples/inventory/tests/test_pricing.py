from inventory.pricing import apply_discount, total


def test_discount_takes_percent_off():
    assert apply_discount(200, 25) == 150


def test_total_rounds_to_cents():
    assert total([0.1, 0.2]) == 0.3
