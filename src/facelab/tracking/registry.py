"""The MLflow model registry: logging a Keras model and registering it (``log_and_register_keras``,
``register_version``), the pip requirements pinned with a logged model (``pinned_requirements``), and reading
and moving versions (``get_version``, ``champion_version``, ``search_versions``, ``version_by_model_md5``,
``tag_version``, ``set_alias``, ``version_tags``, ``load_keras``).

* Every trained model is registered with the alias ``candidate`` and the tag ``facelab.model_md5`` (the md5 of
  its ``models/*.keras`` file, as in ``dvc.lock``: how ``evaluate`` finds the version behind the file).
  ``evaluate`` then calls ``facelab.tracking.champions.promote`` (the champion rules).
* Registering a model is find-or-create by run, with its tags in the same call, so a retried or rerun
  registration never leaves a duplicate or an untagged version.
* Every call goes through ``facelab.tracking.store.retry``; the store itself (connection, runs, and the
  deletion of the versions of a run that did not finish) is ``facelab.tracking.store``.
"""

from __future__ import annotations

from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException, RestException

from facelab.config import flatten
from facelab.tracking.store import retry
from facelab.tracking.uris import CANDIDATE, CHAMPION

# Version tag: which model file a version is (the champion rules' tags are in facelab.tracking.champions).
MODEL_MD5_TAG = "facelab.model_md5"  # md5 of the models/*.keras file the version was logged from
KERAS_REQUIREMENTS = ("keras", "tensorflow", "numpy")
TENSORFLOW_MODULE = "tensorflow"


def log_and_register_keras(
    model,
    name: str,
    input_example,
    description: str = "",
    tags: dict[str, Any] | None = None,
    model_md5: str | None = None,
) -> dict[str, Any]:
    """Log ``model`` to the active run with a signature, register it, alias it ``candidate``.

    ``model_md5``: the md5 of the ``models/*.keras`` file the model was saved to (tag
    ``facelab.model_md5``). Returns name, version, run_id, model_uri.
    """
    import mlflow.keras
    from mlflow.models import infer_signature

    prediction = model(input_example, training=False)
    signature = infer_signature(input_example, prediction.numpy())
    # No input_example: MLflow 3.17's Keras flavour fails to write it (its folder does not exist yet).
    info = retry(
        lambda: mlflow.keras.log_model(
            model,
            name="model",
            signature=signature,
            pip_requirements=pinned_requirements(KERAS_REQUIREMENTS) or ["keras", "tensorflow"],
        ),
        "log model",
    )
    tags = {**(tags or {}), **({MODEL_MD5_TAG: model_md5} if model_md5 else {})}
    version = register_version(info.model_uri, name, tags, description)
    retry(lambda: MlflowClient().set_registered_model_alias(name, CANDIDATE, version.version), "alias candidate")
    return {
        "name": name,
        "version": int(version.version),
        "run_id": mlflow.active_run().info.run_id,
        "model_uri": info.model_uri,
    }


def register_version(model_uri: str, name: str, tags: dict[str, Any] | None = None, description: str = ""):
    """Register the active run's logged model as a new version of ``name``, with its tags, exactly once.

    Find-or-create by run: a try whose answer was lost (the server restarted after creating the
    version) finds its version instead of creating a second one. The tags go with the creation, so
    no version is ever seen untagged; the description is set after it (idempotent).
    """
    client = MlflowClient()
    run_id = mlflow.active_run().info.run_id
    tag_values = {key: str(value) for key, value in flatten(tags or {}).items()}

    def find_or_create():
        found = client.search_model_versions(f"name='{name}' and run_id='{run_id}'")
        if found:
            return found[0]
        return mlflow.register_model(model_uri, name, tags=tag_values)

    version = retry(find_or_create, "register model")
    if description:
        retry(lambda: client.update_model_version(name, version.version, description=description), "describe")
    return version


def _distributions(package: str) -> list[str]:
    """The installed distributions to pin for ``package``. ``tensorflow`` is the module: it is pinned as the
    build installed here, ``tensorflow-cpu`` (``.[cpu]``) or ``tensorflow`` (``.[gpu]``, pinned without its
    CUDA extra: that wheel serves on a CPU as well), so a model is served with the TensorFlow it was trained with."""
    if package != TENSORFLOW_MODULE:
        return [package]
    from importlib.metadata import packages_distributions

    return sorted({name.replace("_", "-").lower() for name in packages_distributions().get(TENSORFLOW_MODULE, [])})


def pinned_requirements(packages: tuple[str, ...]) -> list[str]:
    """``package==version`` for each of ``packages`` installed here (a logged model's pip requirements)."""
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for package in packages:
        for name in _distributions(package):
            try:
                pins.append(f"{name}=={version(name)}")
            except PackageNotFoundError:
                continue
    return pins


def tag_version(name: str, version: int, tags: dict[str, Any]) -> None:
    client = MlflowClient()
    for key, value in flatten(tags).items():
        retry(lambda: client.set_model_version_tag(name, str(version), key, str(value)), "tag version")


def get_version(name: str, alias: str | None = None, number: int | str | None = None):
    """Version ``number`` of the registered model ``name``, or the one ``alias`` points at (MLflow's
    not-found error when there is none)."""
    client = MlflowClient()
    if alias:
        return retry(lambda: client.get_model_version_by_alias(name, alias), f"get {alias}")
    return retry(lambda: client.get_model_version(name, str(number)), "get version")


def champion_version(name: str):
    """The model version holding ``champion``, or None."""
    try:
        return get_version(name, CHAMPION)
    except (MlflowException, RestException) as exc:
        if "not found" in str(exc).lower() or "RESOURCE_DOES_NOT_EXIST" in str(exc):
            return None
        raise


def search_versions(filter_string: str) -> list:
    """The model versions matching an MLflow search filter, e.g. ``name = 'x' and tags.`t` = 'v'``."""
    client = MlflowClient()
    return retry(lambda: client.search_model_versions(filter_string), "search versions")


def set_alias(name: str, alias: str, version: int | str) -> None:
    """Point ``alias`` of the registered model ``name`` at ``version``."""
    client = MlflowClient()
    retry(lambda: client.set_registered_model_alias(name, alias, str(version)), f"alias {alias}")


def version_by_model_md5(name: str, md5: str):
    """The newest version of ``name`` tagged with the md5 of its .keras file (what dvc.lock records), or None."""
    client = MlflowClient()
    found = retry(
        lambda: client.search_model_versions(f"name = '{name}' and tags.`{MODEL_MD5_TAG}` = '{md5}'"), "search versions"
    )
    return max(found, key=lambda v: int(v.version), default=None)


def load_keras(model_uri: str):
    """A Keras model from a ``models:/name@alias`` (or any MLflow) URI, in Keras safe mode.

    A facelab model holds ``facelab.nn.tta``'s layers: its callers (``facelab.serve.keras_runtime``,
    ``facelab.serve.predict_command``) import ``facelab.nn.inference``, which registers them.
    """
    import mlflow.keras

    return mlflow.keras.load_model(model_uri, load_model_kwargs={"safe_mode": True, "compile": False})


def version_tags(name: str, alias: str = CHAMPION) -> dict[str, str]:
    """The tags of the version that holds ``alias`` (e.g. the emotion model's class list)."""
    return dict(get_version(name, alias).tags)
