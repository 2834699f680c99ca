"""facelab: facial keypoints and emotion models, one ResNet-18, tracked with DVC and MLflow."""

import os

# TensorFlow's C++ INFO lines (e.g. the CPU-features notice) in every stage bury the progress lines;
# warnings and errors still show, and TF_CPP_MIN_LOG_LEVEL=0 brings them back. Set here, before any
# facelab module imports TensorFlow. TensorFlow 2.21 prints its "oneDNN custom operations are on"
# notice whatever this says.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

__version__ = "0.1.0"
