"""What the pipeline reports: scores (RMSE, weighted F1, confusion matrices), pictures, the metric gate of CI, and
the results tables drawn from MLflow.

May import: the root modules, ``facelab.data`` and ``facelab.tracking``. The layering rule: docs/architecture.md;
tests/code/test_structure.py fails on an import against it.
"""
