"""DVC stage `train_emotion`: ResNet-18 emotion classifier -> models/emotion.keras, registered."""

from facelab.runner import stage
from facelab.train import run_emotion

stage(run_emotion)
