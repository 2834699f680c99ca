"""DVC stage `augment`: augmented keypoint training set + previews of both augmentations."""

from facelab.augment import run
from facelab.runner import stage

stage(run)
