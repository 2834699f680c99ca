"""Reproducible .keras files: the same model saves to the same bytes, loads in safe mode, is written atomically."""

import json
import time
import zipfile

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from facelab.nn import keras_files, tta  # noqa: E402
from facelab.nn.resnet import build_keypoint_model  # noqa: E402


def _served_model() -> keras.Model:
    """A small ResNet after one optimiser step, wrapped in test-time averaging, as the training stages save it."""
    keras.backend.clear_session()  # same layer names however many models this process built before
    keras.utils.set_random_seed(0)
    model = build_keypoint_model(96, width=16)
    model.compile(optimizer="adam", loss="mse")
    rng = np.random.default_rng(0)
    model.train_on_batch(rng.uniform(0, 255, (2, 96, 96, 1)).astype(np.float32), rng.uniform(0, 96, (2, 30)))
    return tta.wrap(model, "keypoints", flip=True, shift_px=2)


def test_the_same_model_saves_to_the_same_bytes_and_loads_safely(tmp_path):
    model = _served_model()
    first, second, rebuilt = tmp_path / "a" / "m.keras", tmp_path / "b" / "m.keras", tmp_path / "c" / "m.keras"
    keras_files.save_model(model, first)
    time.sleep(1.1)  # Keras's date_saved counts seconds
    keras_files.save_model(model, second)
    # a second, identical model: other Python objects, so other ids where Keras writes id(obj) into config.json
    keras_files.save_model(_served_model(), rebuilt)
    assert first.read_bytes() == second.read_bytes() == rebuilt.read_bytes()

    with zipfile.ZipFile(first) as archive:
        assert [info.filename for info in archive.infolist()] == ["metadata.json", "config.json", "model.weights.h5"]
        assert {info.date_time for info in archive.infolist()} == {keras_files.ZIP_DATE_TIME}
        metadata = json.loads(archive.read("metadata.json"))
    assert metadata == {"keras_version": keras.__version__, "date_saved": keras_files.DATE_SAVED}

    loaded = keras.saving.load_model(first, compile=False, safe_mode=True)
    faces = np.random.default_rng(1).uniform(0, 255, (3, 96, 96, 1)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(loaded(faces)), np.asarray(model(faces)), rtol=1e-6, atol=1e-6)
    assert tta.settings(loaded) == {"flip": True, "shift_px": 2}


class _FailingModel:
    """Stands in for a Keras model whose ``save`` writes ``content`` and then fails (or writes a non-zip)."""

    def __init__(self, content: bytes, fail: bool):
        self.content, self.fail = content, fail

    def save(self, path):
        path.write_bytes(self.content)
        if self.fail:
            raise OSError("disk full")


@pytest.mark.parametrize(
    "model, error",
    [
        (_FailingModel(b"PK\x03\x04half a zip", fail=True), OSError),
        (_FailingModel(b"not a zip", False), zipfile.BadZipFile),
    ],
    ids=["keras-save-fails", "rewrite-fails"],
)
def test_a_failed_save_leaves_the_old_file_and_nothing_else(tmp_path, model, error):
    target = tmp_path / "models" / "m.keras"
    target.parent.mkdir()
    target.write_bytes(b"the previous model")
    with pytest.raises(error):
        keras_files.save_model(model, target)
    assert target.read_bytes() == b"the previous model"
    assert list(target.parent.iterdir()) == [target]  # no scratch folder, no half-written temporary file
