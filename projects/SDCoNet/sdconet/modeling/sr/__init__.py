"""The super-resolution decoder (paper Sec. III-C, Eq. 2-4): trained in stage 2, not run at inference."""

from .decoder import SRDecoder
from .projected import ProjectedSRDecoder

__all__ = ["ProjectedSRDecoder", "SRDecoder"]
