"""sdconet.inference."""
