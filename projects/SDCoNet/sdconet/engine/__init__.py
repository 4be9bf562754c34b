"""sdconet.engine."""
