from inventory.text import slugify


def test_slugify_lowercases_and_joins():
    assert slugify("Blue Coffee Mug") == "blue-coffee-mug"
