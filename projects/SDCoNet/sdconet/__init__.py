"""SDCoNet: a Swin-T encoder shared by a super-resolution decoder and a saliency-pruned DINO detector.

The package is framework-free PyTorch; ``sdconet.d2`` (imported explicitly) is the detectron2 adapter.
"""

__version__ = "0.1.0"
