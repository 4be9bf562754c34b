"""sdconet.data."""
