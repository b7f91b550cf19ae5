"""A tiny shop inventory: the ledex demo project (three bugs are seeded on purpose)."""
