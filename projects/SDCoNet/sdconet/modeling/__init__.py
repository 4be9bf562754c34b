"""sdconet.modeling."""
