"""Saliency-driven query-token selection (paper Sec. III-D): saliency prediction with top-down propagation,
its supervision targets and loss, hierarchical (level x layer) token selection and the background embedding."""

from .background_embedding import BackgroundEmbedding
from .predictor import SaliencyPredictor
from .targets import saliency_loss, saliency_targets
from .token_selection import select_tokens

__all__ = ["BackgroundEmbedding", "SaliencyPredictor", "saliency_loss", "saliency_targets", "select_tokens"]
