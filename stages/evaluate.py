"""DVC stage `evaluate`: test metrics -> metrics/evaluate.json; the champion rules -> models/champions.json."""

from facelab.pipeline.evaluate import run
from facelab.runner import stage

stage(run)
