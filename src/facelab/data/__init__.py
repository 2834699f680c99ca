"""Data: the file readers (readers) and their CSV engine (csv_engine, pixel_parser), the seeded synthetic
faces (synthetic, drawn by face_drawing), augmentation, and the paths of the pipeline's data files (artifacts:
what each stage reads and writes).

May import: the root modules (``facelab.errors``, ``facelab.atomic``, ``facelab.config``, ``facelab.formats``, ...)
and ``facelab.data``. No TensorFlow, no MLflow. The layering rule: docs/architecture.md; tests/code/test_structure.py
fails on an import against it.
"""
