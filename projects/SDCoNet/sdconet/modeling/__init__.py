"""The SDCoNet model (framework-free PyTorch).

Sub-packages follow the architecture (paper Fig. 2):

* ``backbone``  -- the shared Swin-T encoder and its weight loading;
* ``sr``        -- the super-resolution decoder (training-only branch);
* ``saliency``  -- saliency prediction, its targets, hierarchical token selection and the background embedding;
* ``dino``      -- the DINO detection branch: detection levels, pruned deformable encoder, decoder, two-stage
  query selection, contrastive denoising;
* ``losses``    -- Hungarian matcher, set criterion, focal / L1 / GIoU losses;
* ``ops``       -- multi-scale deformable attention kernels (PyTorch ``grid_sample``; Triton on CUDA).

The top level holds the assembled model (``sdconet.SDCoNet``), its configuration (``config.SDCoNetConfig``), the
builder (``build.build_sdconet``) and shared box utilities.
"""

from .build import build_sdconet
from .config import VARIANTS, SDCoNetConfig, SRConfig, SwinConfig
from .sdconet import SDCoNet

__all__ = ["VARIANTS", "SDCoNet", "SDCoNetConfig", "SRConfig", "SwinConfig", "build_sdconet"]
