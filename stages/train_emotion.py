"""DVC stage `train_emotion`: ResNet-18 emotion classifier -> models/emotion.keras, registered."""

from facelab.pipeline.train import run_emotion
from facelab.runner import stage

stage(run_emotion)
