"""facelab: facial keypoints and emotion models, one ResNet-18, tracked with DVC and MLflow."""

__version__ = "0.1.0"
