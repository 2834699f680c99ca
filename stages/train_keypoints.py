"""DVC stage `train_keypoints`: ResNet-18 keypoint regressor -> models/keypoints.keras, registered."""

from facelab.pipeline.train import run_keypoints
from facelab.runner import stage

stage(run_keypoints)
