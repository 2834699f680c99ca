"""Accuracy and weighted F1 of one trained emotion model under each test-time averaging setting.

Test-time averaging is part of the saved model (``facelab.tta``), so choosing it by retraining costs
a training per setting. This reads a saved ``models/emotion.keras``, takes the network inside its
averaging layers and scores it on a prepared split with every setting of SETTINGS (mirror image,
shift in pixels): no training, about 2 minutes of CPU for FER2013's 2,871 validation faces::

    python benchmarks/tta_choices.py models/emotion.keras data/prepared/emotion_val.npz

Choose on the validation split; read the test split (``emotion_test.npz``) only to report what the
choice is worth there, never to choose.
"""

from __future__ import annotations

import argparse

import keras
import numpy as np
from sklearn.metrics import f1_score

from facelab import artifacts, inference, tta

SETTINGS = [(False, 0), (True, 0), (True, 1), (True, 2), (True, 3), (True, 4)]


def label_scores(labels: np.ndarray, predicted: np.ndarray) -> tuple[float, float]:
    """(accuracy, weighted F1) of predicted class indices."""
    return float(np.mean(predicted == labels)), float(f1_score(labels, predicted, average="weighted"))


def scores(model: keras.Model, images: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(accuracy, weighted F1) of the model's most probable class."""
    return label_scores(labels, inference.predict(model, images).argmax(axis=1))  # as evaluate scores the saved model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a saved emotion model (.keras)")
    parser.add_argument("split", help="a prepared split (.npz with images and labels): the validation one to choose")
    args = parser.parse_args()
    network = tta.unwrap(inference.load_model(args.model))  # safe mode, as evaluate loads it
    split = artifacts.load_split(args.split)
    print("| mirror | shift px | views | accuracy | weighted F1 |\n|---|---|---|---|---|")
    for flip, shift_px in SETTINGS:
        averaged = tta.wrap(network, "emotion", flip=flip, shift_px=shift_px)
        accuracy, f1_weighted = scores(averaged, split["images"], split["labels"])
        views = len(tta.views(flip, shift_px))
        print(f"| {flip} | {shift_px} | {views} | {accuracy:.4f} | {f1_weighted:.4f} |", flush=True)


if __name__ == "__main__":
    main()
