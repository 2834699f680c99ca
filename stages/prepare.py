"""DVC stage `prepare`: raw faces (synthetic default or your files) -> data/prepared/*.npz."""
from facelab.cli import stage
from facelab.prepare import run

stage(run)
