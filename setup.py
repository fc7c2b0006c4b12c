"""Installs bfcnn: bias-free CNN denoisers for TensorFlow / Keras 3."""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent

setup(
    name="bfcnn",
    version="0.1.0",
    description="Bias-free CNN image denoisers, a trainer, an exporter and a model zoo for Keras 3",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    # The zoo lives in the top-level pretrained/ folder and ships inside the wheel as
    # the subpackage bfcnn.pretrained, so `pip install bfcnn` is all a user needs.
    packages=find_packages(include=["bfcnn", "bfcnn.*"]) + ["bfcnn.pretrained"],
    package_dir={"bfcnn.pretrained": "pretrained"},
    package_data={"bfcnn.pretrained": ["*.keras", "*.tflite", "*.json"]},
    install_requires=[
        "tensorflow>=2.16",
        "numpy",
        "pillow",
        "pyyaml",
        "tensorboard",
    ],
    extras_require={
        "test": ["pytest", "scikit-image", "ai-edge-litert", "bm3d", "tensorflow-datasets"],
        "tfds": ["tensorflow-datasets"],
        "lite": ["ai-edge-litert"],
        "bench": ["bm3d", "scikit-image"],
        "demo": ["scikit-image"],
        "docs": ["matplotlib"],
    },
    entry_points={
        "console_scripts": [
            "bfcnn-train=bfcnn.train:main",
            "bfcnn-export=bfcnn.export:main",
            "bfcnn-denoise=bfcnn.denoise:main",
            "bfcnn-evaluate=bfcnn.evaluate:main",
            "bfcnn-average=bfcnn.average:main",
        ]
    },
)
