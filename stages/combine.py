"""DVC stage `combine`: both champion models from the registry -> reports/combine/faces.png."""
from facelab.cli import stage
from facelab.combine import run

stage(run)
