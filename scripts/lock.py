"""The locks of exact versions, one per TensorFlow build: requirements/<build>.lock.txt.

    python scripts/lock.py compile [--upgrade]   what `make lock` runs: uv pip compile of pyproject.toml for
                                                 Python 3.11 on Linux x86-64 from PyPI, then the facelab header
    python scripts/lock.py check                 what `make lock-check` and tests/code/test_lock.py check

A compile keeps each version already in the lock that still satisfies pyproject.toml (uv reads the existing
output file as its preferences) and moves only what must move; --upgrade (`make lock UPGRADE=1`) takes the
newest versions instead. The facelab header records the extras a lock holds and a sha256 of pyproject.toml's
dependency tables, so that the check can tell a lock compiled from another pyproject.toml.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
PROJECT = "facelab"
# One lock per TensorFlow build, each with the extras `make install` puts beside it (the Makefile's EXTRAS).
LOCKS = {
    "cpu": ("cpu", "test", "team-test", "demo-test"),
    "gpu": ("gpu", "test", "team-test", "demo-test"),
}
PYTHON_VERSION = "3.11"
PYTHON_PLATFORM = "x86_64-manylinux_2_28"
INDEX_URL = "https://pypi.org/simple"
# The environment the locks are for, to evaluate requirement markers in.
ENVIRONMENT = {
    **default_environment(),
    "python_version": "3.11",
    "python_full_version": "3.11.0",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "os_name": "posix",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
}
HEADER = "# facelab-lock:"
ROOT = f"{PROJECT} (pyproject.toml)"  # what uv's `# via` annotations call pyproject.toml's requirements
_PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s;#\\]+)\s*$")
_VIA = re.compile(r"^\s+#\s+(?:via\s+)?(?P<parent>\S.*?)\s*$")


def lock_path(build: str) -> Path:
    return REPO / "requirements" / f"{build}.lock.txt"


def pyproject_sha256(pyproject_text: str) -> str:
    """sha256 of the dependency tables alone: comments and other sections of pyproject.toml may change freely."""
    project = tomllib.loads(pyproject_text)["project"]
    tables = {key: project.get(key) for key in ("requires-python", "dependencies", "optional-dependencies")}
    return hashlib.sha256(json.dumps(tables, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def header(build: str, pyproject_text: str) -> str:
    return f"{HEADER} build={build} extras={','.join(LOCKS[build])} pyproject-sha256={pyproject_sha256(pyproject_text)}"


def parse_lock(lock_text: str) -> tuple[dict[str, str], dict[str, set[str]], dict[str, str], list[str]]:
    """(pins name -> version, parents name -> `# via` names, header fields, lines that are neither)."""
    pins: dict[str, str] = {}
    parents: dict[str, set[str]] = {}
    fields: dict[str, str] = {}
    odd: list[str] = []
    current = None
    for line in lock_text.splitlines():
        if line.startswith(HEADER):
            fields.update(field.split("=", 1) for field in line[len(HEADER) :].split() if "=" in field)
        elif match := _PIN.match(line):
            current = canonicalize_name(match["name"])
            if current in pins:
                odd.append(f"{line} (pinned twice)")
            pins[current] = match["version"]
            parents[current] = set()
        elif current is not None and line.startswith((" ", "\t")) and (match := _VIA.match(line)):
            if match["parent"] != "via":
                parents[current].add(match["parent"])
        elif line.strip() and not line.startswith("#"):
            odd.append(line)  # an option (--index-url, --find-links, -e, a file:// URL) or a pin without ==
    return pins, parents, fields, odd


def _requirements(project: dict, extras: tuple[str, ...]) -> list[Requirement]:
    """pyproject.toml's dependencies and those of the extras, with facelab[...] self-references followed."""
    optional = project.get("optional-dependencies", {})
    wanted, seen, found = list(extras), set(), [Requirement(r) for r in project.get("dependencies", [])]
    while wanted:
        extra = wanted.pop()
        if extra in seen:
            continue
        seen.add(extra)
        if extra not in optional:
            raise KeyError(f"pyproject.toml has no extra {extra!r}")
        for text in optional[extra]:
            requirement = Requirement(text)
            if canonicalize_name(requirement.name) == PROJECT:
                wanted.extend(requirement.extras)
            else:
                found.append(requirement)
    return found


def problems(lock_text: str, pyproject_text: str, build: str | None = None) -> list[str]:
    """What is wrong between a lock and pyproject.toml; [] when the lock is the compile of that pyproject."""
    pins, parents, fields, odd = parse_lock(lock_text)
    found = [f"not a pin from PyPI: {line!r}" for line in odd]
    if not fields:
        return found + [f"no `{HEADER}` header: compile the lock with `make lock`"]
    if build is not None and fields.get("build") != build:
        found.append(f"the header says build={fields.get('build')}, this lock is for build={build}")
    extras = tuple(fields.get("extras", "").split(","))
    if build in LOCKS and extras != LOCKS[build]:
        found.append(f"the lock holds extras {','.join(extras)}, scripts/lock.py says {','.join(LOCKS[build])}")
    if fields.get("pyproject-sha256") != pyproject_sha256(pyproject_text):
        found.append("pyproject.toml's dependency tables changed since the lock was compiled: run `make lock`")
    project = tomllib.loads(pyproject_text)["project"]
    try:
        requirements = _requirements(project, extras)
    except KeyError as error:
        return found + [str(error.args[0])]
    for requirement in requirements:
        if requirement.marker is not None and not requirement.marker.evaluate({**ENVIRONMENT, "extra": ""}):
            continue
        name = canonicalize_name(requirement.name)
        if name not in pins:
            found.append(f"pyproject.toml requires {requirement}, the lock pins no {name}")
        elif not requirement.specifier.contains(pins[name], prereleases=True):
            found.append(f"pyproject.toml requires {requirement}, the lock pins {name}=={pins[name]}")
    if PROJECT in pins:
        found.append(f"the lock pins {PROJECT} itself (it is installed with `pip install --no-deps -e .`)")
    strangers: dict[str, list[str]] = {}
    for name, via in sorted(parents.items()):
        for parent in via - {ROOT}:
            if canonicalize_name(parent) not in pins:
                strangers.setdefault(parent, []).append(name)
    for parent, names in sorted(strangers.items()):
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        found.append(f"{shown} there via {parent!r}, which is neither pyproject.toml nor a pin")
    reached, frontier = set(), [ROOT]
    children: dict[str, set[str]] = {}
    for name, via in parents.items():
        for parent in via:
            children.setdefault(parent if parent == ROOT else canonicalize_name(parent), set()).add(name)
    while frontier:
        for child in children.get(frontier.pop(), ()):
            if child not in reached:
                reached.add(child)
                frontier.append(child)
    found += [f"{name}=={pins[name]} is not reached from pyproject.toml" for name in sorted(set(pins) - reached)]
    return found


def compile_locks(uv: str, upgrade: bool, uv_args: list[str]) -> None:
    pyproject_text = (REPO / "pyproject.toml").read_text()
    # PyPI alone: no index, find-links or constraint of this machine's uv or pip set-up.
    env = {k: v for k, v in os.environ.items() if not re.match(r"UV_(.*INDEX.*|FIND_LINKS|CONSTRAINT|OVERRIDE)", k)}
    for build, extras in LOCKS.items():
        path = lock_path(build)
        path.parent.mkdir(exist_ok=True)
        command = [uv, "pip", "compile", "pyproject.toml", "--no-config", "--quiet"]
        command += ["--python-version", PYTHON_VERSION, "--python-platform", PYTHON_PLATFORM]
        command += ["--index-url", INDEX_URL, "--custom-compile-command", "make lock"]
        command += [arg for extra in extras for arg in ("--extra", extra)]
        command += ["--output-file", str(path.relative_to(REPO))] + (["--upgrade"] if upgrade else []) + uv_args
        subprocess.run(command, cwd=REPO, env=env, check=True)
        lines = path.read_text().splitlines(keepends=True)
        at = next(i for i, line in enumerate(lines) if not line.startswith("#"))
        lines.insert(at, header(build, pyproject_text) + "\n")
        path.write_text("".join(lines))
        print(f"{path.relative_to(REPO)}: {sum(1 for line in lines if _PIN.match(line))} pins")


def check() -> int:
    pyproject_text = (REPO / "pyproject.toml").read_text()
    failed = False
    for build in LOCKS:
        path = lock_path(build)
        found = problems(path.read_text(), pyproject_text, build) if path.exists() else [f"{path} is missing"]
        for problem in found:
            print(f"{path.relative_to(REPO)}: {problem}", file=sys.stderr)
        failed = failed or bool(found)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    compile_parser = sub.add_parser("compile", help="refresh every lock from pyproject.toml (make lock)")
    compile_parser.add_argument("--uv", default="uv", help="the uv executable")
    compile_parser.add_argument("--upgrade", action="store_true", help="newest versions, not the locked ones")
    compile_parser.add_argument("uv_args", nargs="*", help="more arguments for uv pip compile (after --)")
    sub.add_parser("check", help="every lock agrees with pyproject.toml (make lock-check)")
    args = parser.parse_args(argv)
    if args.command == "compile":
        compile_locks(args.uv, args.upgrade, args.uv_args)
    return check()


if __name__ == "__main__":
    sys.exit(main())
