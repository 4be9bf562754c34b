"""The super-resolution decoder (paper Sec. III-C, Eq. 2-4): trained in stage 2, not run at inference."""

from .decoder import SRDecoder

__all__ = ["SRDecoder"]
