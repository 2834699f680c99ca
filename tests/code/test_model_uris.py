"""Registry URIs as facelab spells and reads them (``facelab.tracking.uris``), and model files told from URIs."""

from __future__ import annotations

import pytest

from facelab.errors import FacelabError
from facelab.tracking.uris import alias_uri, is_local, parse, version_uri


def test_the_uris_facelab_writes_parse_back():
    assert parse(alias_uri("facelab-emotion")) == ("facelab-emotion", "champion", None)
    assert parse(alias_uri("facelab-emotion", "candidate")) == ("facelab-emotion", "candidate", None)
    assert parse(version_uri("facelab-keypoints", 12)) == ("facelab-keypoints", None, "12")


@pytest.mark.parametrize(
    "uri", ["emotion.keras", "runs:/abc/model", "models:/", "models:/name", "models:/name/v2", "models:/@champion"]
)
def test_anything_else_is_one_line_naming_it(uri):
    with pytest.raises(FacelabError) as error:
        parse(uri)
    message = str(error.value)
    assert message.startswith(f"{uri}: expected") and "\n" not in message


@pytest.mark.parametrize(
    ("uri", "suffix", "local"),
    [
        ("models/emotion.keras", ".keras", True),
        ("/tmp/emotion.onnx", ".onnx", True),
        ("models/emotion.keras", ".onnx", False),
        ("models:/facelab-emotion@champion", ".keras", False),
        ("s3://bucket/emotion.keras", ".keras", False),
        (None, ".keras", False),
    ],
)
def test_a_local_file_is_told_from_a_uri(uri, suffix, local):
    assert is_local(uri, suffix) is local
