"""DVC stage `evaluate`: test metrics -> metrics/evaluate.json; moves `champion` when no worse."""
from facelab.cli import stage
from facelab.evaluate import run

stage(run)
