"""The shared Swin-T encoder (paper Sec. III-B) and loading of official / timm ImageNet weights."""

from .swin_encoder import SwinEncoder
from .swin_weights import load_swin_weights

__all__ = ["SwinEncoder", "load_swin_weights"]
