"""sdconet.modeling.ops."""
