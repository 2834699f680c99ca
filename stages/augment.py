"""DVC stage `augment`: augmented keypoint training set + previews of both augmentations."""
from facelab.augment import run
from facelab.cli import stage

stage(run)
