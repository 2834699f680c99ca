"""DVC stage `combine`: the champion versions named in models/champions.json -> reports/combine/faces.png."""

from facelab.pipeline.combine import run
from facelab.runner import stage

stage(run)
