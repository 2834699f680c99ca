"""Analysing ordinary photos with the champion models: finding and cropping faces, the analysers (Keras and ONNX
Runtime), the batch loop ``facelab predict``, the demo page and the served pyfunc share, ONNX export.

May import: the root modules, ``facelab.data``, ``facelab.nn``, ``facelab.tracking`` and ``facelab.reports``. The
layering rule: docs/architecture.md; tests/code/test_structure.py fails on an import against it.
"""
