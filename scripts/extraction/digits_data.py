#!/usr/bin/python3
"""Calibration data for extraction detection and the OOD scorer.

Writes (relative to the repository root):
    testdata/extraction/digits-reference.json
        {"inputs": [[64 ints]...], "labels": [...]}: the training split of
        scikit-learn's digits (test_size=0.25, random_state=0, as
        scripts/fixtures/train_digits.py), the "reference sample of normal
        inputs supplied at deployment". testdata/digits/heldout.json is the
        other 25%, never used for fitting or calibration.
    testdata/extraction/digits-mlp.json
        {"w1": [64][64], "b1": [64], "w2": [64][10], "b2": [10]}: the
        weights of testdata/models/digits/1/model.onnx, read from the ONNX
        file, so that Go tests can compute the model's predicted labels and
        input gradients (for Jacobian-based augmentation) without ONNX
        Runtime. Input is raw 0..16 pixels; the graph divides by 16 first.
    testdata/extraction/ledoit-wolf.json
        {"std_floor": 0.1, "shrinkage": s, "mahalanobis_heldout": [450]}:
        scikit-learn's Ledoit-Wolf shrinkage of the standardised reference
        sample (standard deviations floored at 0.1 x their root mean square,
        as internal/ood does) and the Mahalanobis distances of the held-out
        digits under that shrunk covariance, to check internal/ood's fit.

Run with Debian's python (deterministic):
    /usr/bin/python3 scripts/extraction/digits_data.py
"""

import json
import os

import numpy as np
import onnx
from onnx import numpy_helper
from sklearn.covariance import LedoitWolf
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "testdata", "extraction")
MODEL = os.path.join(ROOT, "testdata", "models", "digits", "1", "model.onnx")
HELDOUT = os.path.join(ROOT, "testdata", "digits", "heldout.json")


def write_json(name, obj):
    with open(os.path.join(OUT, name), "w") as f:
        json.dump(obj, f, separators=(",", ":"))
        f.write("\n")


def main():
    digits = load_digits()
    X_train, X_test, y_train, y_test = train_test_split(
        digits.data, digits.target, test_size=0.25, random_state=0
    )
    # The held-out file must be the complement of what we write.
    with open(HELDOUT) as f:
        held = json.load(f)
    assert np.array_equal(np.array(held["inputs"]), X_test), "heldout.json is not the test split"
    os.makedirs(OUT, exist_ok=True)
    write_json(
        "digits-reference.json",
        {"inputs": [[int(v) for v in row] for row in X_train], "labels": [int(v) for v in y_train]},
    )
    model = onnx.load(MODEL)
    w = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer}
    write_json(
        "digits-mlp.json",
        {k: np.round(w[k], 9).tolist() for k in ("W1", "b1", "W2", "b2")},
    )
    X = X_train.astype(np.float64)
    mu = X.mean(0)
    sd = X.std(0)
    floor = 0.1 * np.sqrt(np.mean(sd**2))
    sd = np.maximum(sd, floor)
    lw = LedoitWolf().fit((X - mu) / sd)
    prec = np.linalg.inv(lw.covariance_)
    Zh = (X_test - mu) / sd
    maha = np.sqrt(np.einsum("ij,jk,ik->i", Zh, prec, Zh))
    write_json(
        "ledoit-wolf.json",
        {"std_floor": 0.1, "shrinkage": float(lw.shrinkage_), "mahalanobis_heldout": [float(v) for v in maha]},
    )
    print(f"reference {X_train.shape}, held-out {X_test.shape}, weights -> {os.path.relpath(OUT, ROOT)}")


if __name__ == "__main__":
    main()
