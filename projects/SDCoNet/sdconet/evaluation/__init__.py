"""sdconet.evaluation."""
