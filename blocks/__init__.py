"""Prefect Block types: connection settings and secrets, each opening the opsflow object it
describes."""

# opsflow has no hosted documentation; what an operator does with one of these blocks (create,
# edit and load it, in the UI or in code) is Prefect's page on blocks, and each block's
# description says what it is for.
DOCUMENTATION_URL = "https://docs.prefect.io/v3/develop/blocks"
