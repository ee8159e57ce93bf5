"""Install slim_callbacks: `pip install .` (add `[test]` for the test suite, which
includes `[docs]`, the documentation site's build; `[onnx]` for ONNX export)."""
import shutil
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py


# `mkdocs build --strict` of docs/ (run by tests/test_docs.py, hence part of `test` too)
DOCS = ["mkdocs>=1.6", "mkdocs-material>=9.5", "mkdocstrings[python]>=0.26"]


class BuildWithRecipes(build_py):
    """Ships the top-level recipes/ inside the package (slim_callbacks/recipes) so
    `slim-callbacks run quickstart` finds them in a non-editable install too."""

    def run(self):
        super().run()
        shutil.copytree(Path(__file__).parent / "recipes",
                        Path(self.build_lib) / "slim_callbacks" / "recipes", dirs_exist_ok=True)


setup(
    name="slim_callbacks",
    version="0.1.0",
    description="Progressive, dependency-aware channel pruning for PaddlePaddle, inside model.fit().",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["slim_callbacks", "slim_callbacks.*"]),
    cmdclass={"build_py": BuildWithRecipes},
    python_requires=">=3.9",
    install_requires=[
        "paddlepaddle>=3.0",
        "numpy>=2.0",
        "pyyaml>=6.0",
        "safetensors>=0.4",
        "visualdl>=2.5",
        "scikit-learn>=1.3",
        "threadpoolctl>=3.0",
        "tqdm>=4.60",
    ],
    extras_require={
        "test": ["pytest>=7", "hypothesis>=6", "paddle2onnx>=2.0", "onnxruntime>=1.16", *DOCS],
        "docs": DOCS,
        "plot": ["matplotlib>=3.5"],
        "onnx": ["paddle2onnx>=2.0", "onnxruntime>=1.16"],
        # what paddlenlp 2.8's model code imports; paddlenlp itself: pip install
        # paddlenlp==2.8.1 --no-deps (its own pins fight Paddle 3)
        "paddlenlp": ["huggingface-hub<0.26", "aistudio-sdk<0.2", "datasets==3.0.2", "colorlog",
                      "jieba", "sentencepiece", "regex", "seqeval", "fastapi"],
        # what paddledet 2.6's code imports; paddledet itself: pip install
        # paddledet==2.6.0 --no-deps (its own pins fight Paddle 3)
        "ppdet": ["scipy", "opencv-python-headless", "filelock", "prettytable", "pycocotools",
                  "typeguard", "terminaltables", "pyyaml", "tqdm"],
    },
    entry_points={"console_scripts": ["slim-callbacks=slim_callbacks.app.cli:main"]},
)
