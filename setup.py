"""Installs aasp_sb: AaSP (aliasing-aware self-supervised pre-training) for SpeechBrain."""

from setuptools import find_packages, setup

setup(
    name="aasp_sb",
    version="0.1.0",
    description=(
        "AaSP: aliasing-aware self-supervised pre-training for audio "
        "spectrogram transformers, as a SpeechBrain extension"
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["aasp_sb", "aasp_sb.*"]),
    python_requires=">=3.9",
    install_requires=[
        "speechbrain>=1.1.2,<1.2",
        "torch>=2.4",
        "torchaudio>=2.4",
        "hyperpyyaml>=1.2",
        "sentencepiece",
        "soundfile>=0.12",
        "numpy",
        "tqdm",
    ],
    extras_require={
        # nnAudio: tests/test_frontend.py checks the front end against M2D's own
        "dev": ["pytest>=7", "ruff>=0.4", "nnAudio>=0.3", "tensorboard>=2.10"],
        "plots": ["matplotlib>=3.5"],
    },
    entry_points={
        "console_scripts": [
            "aasp-embed=aasp_sb.embed:main",
            "aasp-stability=aasp_sb.analysis.stability:main",
            "aasp-plots=aasp_sb.analysis.plots:main",
            "aasp-shards=aasp_sb.data.shards:main",
        ]
    },
)
