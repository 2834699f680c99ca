"""What a logged model pins (registry.pinned_requirements): the TensorFlow build installed here, exactly one."""

from importlib.metadata import packages_distributions, version

from facelab.serve import pyfunc
from facelab.tracking import registry

TENSORFLOW_BUILDS = ("tensorflow", "tensorflow-cpu")


def _tensorflow_pins(pins: list[str]) -> list[str]:
    return [pin for pin in pins if pin.split("==")[0] in TENSORFLOW_BUILDS]


def test_models_pin_the_one_tensorflow_build_installed():
    installed = [name.replace("_", "-").lower() for name in packages_distributions()["tensorflow"]]
    assert len(installed) == 1, f"more than one TensorFlow distribution installed: {installed}"
    expected = [f"{installed[0]}=={version(installed[0])}"]
    assert _tensorflow_pins(registry.pinned_requirements(registry.KERAS_REQUIREMENTS)) == expected
    assert _tensorflow_pins(registry.pinned_requirements(pyfunc.REQUIREMENTS)) == expected


def test_other_packages_are_pinned_by_their_own_name():
    pins = registry.pinned_requirements(("keras", "numpy", "no-such-package-facelab"))
    assert pins == [f"keras=={version('keras')}", f"numpy=={version('numpy')}"]


def test_a_gpu_install_pins_tensorflow_not_tensorflow_cpu(monkeypatch):
    """As on a machine installed with .[gpu]: the module comes from the `tensorflow` distribution."""
    import importlib.metadata as metadata

    real_version = metadata.version
    monkeypatch.setattr(metadata, "packages_distributions", lambda: {"tensorflow": ["tensorflow"]})
    monkeypatch.setattr(metadata, "version", lambda name: "2.21.0" if name == "tensorflow" else real_version(name))
    pins = registry.pinned_requirements(registry.KERAS_REQUIREMENTS)
    assert _tensorflow_pins(pins) == ["tensorflow==2.21.0"]
