"""Accuracy and weighted F1 of saved emotion models alone and of their averaged probabilities (an ensemble).

A cheap way to rank "train several networks and average them" before building it into a stage: this
scores each saved ``models/emotion.keras`` as served (its own test-time averaging) on prepared splits,
then the mean of their class probabilities. No training; about a minute of CPU per model for FER2013's
2,871 validation faces::

    python benchmarks/ensemble_choices.py run-a/models/emotion.keras run-b/models/emotion.keras \
        --splits run-a/data/prepared/emotion_val.npz run-a/data/prepared/emotion_test.npz

Only models trained on the same split (the same ``seed``: it draws the validation faces) can be
compared on its validation faces; choose there, and read the test split only to report.
"""

from __future__ import annotations

import argparse

import numpy as np
from tta_choices import label_scores  # benchmarks/tta_choices.py

from facelab import artifacts, inference


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="saved emotion models (.keras) of the same classes")
    parser.add_argument("--splits", nargs="+", required=True, help="prepared splits (.npz with images and labels)")
    args = parser.parse_args()
    models = [inference.load_model(path) for path in args.models]
    print("| split | model | accuracy | weighted F1 |\n|---|---|---|---|")
    for path in args.splits:
        split = artifacts.load_split(path)
        probabilities = [inference.predict(model, split["images"]) for model in models]
        rows = list(zip(args.models, probabilities)) + [("mean of all", np.mean(probabilities, axis=0))]
        for name, probs in rows:
            accuracy, f1_weighted = label_scores(split["labels"], probs.argmax(axis=1))
            print(f"| {path} | {name} | {accuracy:.4f} | {f1_weighted:.4f} |", flush=True)


if __name__ == "__main__":
    main()
