"""Product names."""


def slugify(name):
    """URL slug for a product name: lower case, words joined by dashes."""
    return "-".join(name.split())
