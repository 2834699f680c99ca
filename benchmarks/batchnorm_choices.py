"""Served validation of one trained emotion model with its BatchNorm statistics as trained and as recomputed.

``train_*.recompute_batchnorm`` averages the BatchNorm statistics over the un-augmented training faces
after training (``training.recompute_batchnorm``). This reads a saved ``models/emotion.keras``, takes
the network inside its test-time averaging, and scores it on prepared splits with that same averaging
(the saved model's own mirror image and shifts) twice: with the statistics it was saved with and
with them recomputed, as training does (the same function, seed and batch size). No
training; about 2 minutes of CPU for FER2013's 25,838 training and 2,871 validation faces::

    python benchmarks/batchnorm_choices.py models/emotion.keras data/prepared/emotion_train.npz \
        data/prepared/emotion_val.npz [data/prepared/emotion_test.npz] --batch-size 64 --seed 42

Choose on the validation split; the test split only reports what a choice is worth there.
"""

from __future__ import annotations

import argparse

from tta_choices import scores  # benchmarks/tta_choices.py

from facelab import artifacts, inference, training, tta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a saved emotion model (.keras)")
    parser.add_argument("train", help="the prepared training split (.npz) the statistics are recomputed on")
    parser.add_argument(
        "splits", nargs="+", help="prepared splits (.npz with images and labels): the validation one to choose"
    )
    parser.add_argument("--batch-size", type=int, default=64, help="train_emotion.batch_size of the run")
    parser.add_argument("--seed", type=int, default=42, help="the run's seed")
    args = parser.parse_args()
    saved = inference.load_model(args.model)  # safe mode, as evaluate loads it
    network, averaging = tta.unwrap(saved), tta.settings(saved)
    train = artifacts.load_split(args.train)
    recomputed = training.recompute_batchnorm(network, train["images"], args.batch_size, args.seed)
    print("| split | BatchNorm statistics | accuracy | weighted F1 |\n|---|---|---|---|")
    for path in args.splits:
        split = artifacts.load_split(path)
        for name, model in (("as trained", network), ("recomputed", recomputed)):
            accuracy, f1_weighted = scores(tta.wrap(model, "emotion", **averaging), split["images"], split["labels"])
            print(f"| {path} | {name} | {accuracy:.4f} | {f1_weighted:.4f} |", flush=True)


if __name__ == "__main__":
    main()
