"""DVC stage `augment`: augmented keypoint training set + previews of both augmentations."""

from facelab.pipeline.augment import run
from facelab.runner import stage

stage(run)
