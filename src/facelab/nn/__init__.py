"""The network and its training: the ResNet-18 and its heads, losses, input pipelines, the fit loops, sharpness-aware
steps, weight averaging, test-time averaging, precision and devices, several workers, and ``.keras`` model files.

May import: the root modules and ``facelab.data``. Nothing here knows MLflow or DVC. The layering rule:
docs/architecture.md; tests/code/test_structure.py fails on an import against it.
"""
