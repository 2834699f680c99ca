"""How facelab names registered models: the aliases and the ``models:/`` URIs, without importing MLflow.

``facelab predict --runtime onnx`` and the demo on ONNX Runtime run without TensorFlow or MLflow
installed when given local files, so the spelling of a registry URI lives here rather than in
``facelab.tracking.registry`` (which imports MLflow). ``is_local`` tells a model file from a registry URI.
"""

from __future__ import annotations

from facelab.errors import FacelabError

CANDIDATE, CHAMPION = "candidate", "champion"
PREFIX = "models:/"


def alias_uri(name: str, alias: str = CHAMPION) -> str:
    """``models:/<name>@<alias>``: the version that holds ``alias`` when the URI is read."""
    return f"{PREFIX}{name}@{alias}"


def version_uri(name: str, version: str | int) -> str:
    """``models:/<name>/<version>``: that version, even if an alias moves meanwhile."""
    return f"{PREFIX}{name}/{version}"


def parse(uri: str) -> tuple[str, str | None, str | None]:
    """``models:/name@alias`` -> (name, alias, None); ``models:/name/3`` -> (name, None, "3")."""
    if not uri.startswith(PREFIX):
        raise FacelabError(
            f"{uri}: expected a model file or a registry URI models:/<name>@<alias> or models:/<name>/<version>"
        )
    rest = uri[len(PREFIX) :].strip("/")
    if "@" in rest:
        name, alias = rest.split("@", 1)
        if name and alias:
            return name, alias, None
    else:
        name, _, version = rest.rpartition("/")
        if name and version.isdigit():
            return name, None, version
    raise FacelabError(f"{uri}: expected models:/<name>@<alias> or models:/<name>/<version>")


def is_local(uri: str | None, suffix: str) -> bool:
    """Whether ``uri`` names a local model file ending in ``suffix`` (``.keras``, ``.onnx``), not a URI."""
    return uri is not None and uri.endswith(suffix) and "://" not in uri and not uri.startswith("models:")
