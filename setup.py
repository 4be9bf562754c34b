"""Install the framework-free ``sdconet`` package (the detectron2 adapter is imported lazily).

    pip install -e .          # runtime
    pip install -e ".[geo]"   # + rasterio, pyogrio (GeoTIFF/COG/VRT in, GeoJSON/GeoPackage out)
    pip install -e ".[export]"  # + onnx, onnxscript, onnxruntime (tools/export.py)
    pip install -e ".[dev]"   # + pytest, ruff, the geo and export extras (so CI tests them)
"""

from setuptools import find_packages, setup

PACKAGE_ROOT = "projects/SDCoNet"
GEO = ["rasterio>=1.3", "pyogrio>=0.7"]
EXPORT = ["onnx>=1.16", "onnxscript>=0.2", "onnxruntime>=1.18"]

setup(
    name="sdconet",
    version="0.1.0",
    description=(
        "SDCoNet: saliency-driven multi-task collaborative network (Swin-T shared by a super-resolution "
        "decoder and a DINO detector with saliency token pruning), with a detectron2 plugin."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.9",
    package_dir={"": PACKAGE_ROOT},
    packages=find_packages(PACKAGE_ROOT, include=["sdconet", "sdconet.*"]),
    install_requires=[
        "torch>=2.4",  # torch.library.custom_op (the Triton kernel as one opaque op for torch.compile)
        "torchvision",
        "timm>=1.0.8",
        "fvcore",
        "pycocotools",
        "opencv-python-headless",
        "numpy",
        "scipy",
        "pillow",
        "tifffile",
        "tqdm",
        "matplotlib",
    ],
    extras_require={
        # Georeferenced rasters (windowed reading, COG/VRT, GSD) and GeoJSON/GeoPackage output (tools/predict.py --geo).
        "geo": GEO,
        # ONNX export and its onnxruntime check (tools/export.py).
        "export": EXPORT,
        "dev": ["pytest>=7", "ruff>=0.5", *GEO, *EXPORT],
        # Optional peer model for tools/benchmark.py (never a core dependency).
        "peer": ["transformers"],
    },
)
