"""DVC stage `prepare`: raw faces (synthetic default or your files) -> data/prepared/*.npz."""

from facelab.pipeline.prepare import run
from facelab.runner import stage

stage(run)
