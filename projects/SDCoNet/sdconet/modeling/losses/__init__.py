"""Detection losses: Hungarian matcher, DINO set criterion, sigmoid focal / L1 / GIoU losses, target checks."""

from .criterion import SetCriterion
from .matcher import HungarianMatcher

__all__ = ["HungarianMatcher", "SetCriterion"]
