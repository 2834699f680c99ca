"""Files that are not a YAML mapping, shared by the tests of params.yaml and of the profiles (config.read_mapping)."""

from __future__ import annotations

from pathlib import Path

NOT_A_MAPPING = {  # name -> (the file's content (None: a directory), what the error says)
    "not-yaml": ("seed: 1\ndata: [\n", "not valid YAML"),
    "a-list": ("- seed\n- data\n", "found a list"),
    "a-scalar": ("42\n", "found the single value"),
    "a-directory": (None, "is a directory"),
    "binary": (b"\x89PNG\r\n\x1a\n\xff\xfe\x00\x00", "not UTF-8"),
}


def write(path: Path, content) -> Path:
    """``content`` at ``path``: text, bytes, or (None) a directory."""
    if content is None:
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path
