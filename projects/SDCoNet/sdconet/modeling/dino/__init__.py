"""The DINO detection branch: detection levels, saliency-pruned deformable encoder, DINO decoder, two-stage
(mixed) query selection and contrastive denoising."""

from .detector import DINODetector

__all__ = ["DINODetector"]
