"""DVC stage `train_keypoints`: ResNet-18 keypoint regressor -> models/keypoints.keras, registered."""

from facelab.runner import stage
from facelab.train import run_keypoints

stage(run_keypoints)
