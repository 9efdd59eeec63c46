"""How models-before-ml-split.joblib.gz was made: model files as the code before recognizer.ml was split into
common/features/kinds wrote them (commit 8be2505), for tests/test_ml_compat.py to load with today's code.

    git archive 8be2505 recognizer/__init__.py recognizer/ml tests/__init__.py tests/stroke_helpers.py \\
        | tar -x -C /tmp/old-ml
    cd /tmp && /path/to/.venv/bin/python /path/to/tests/data/make_models_before_ml_split.py /tmp/old-ml OUT.joblib.gz

Small on purpose (4 PCA components, 160 digits): the file is in the repository.
"""

import sys

import joblib
import numpy as np

OLD_CODE, OUT = sys.argv[1], sys.argv[2]
sys.path.insert(0, OLD_CODE)  # before the imports below: they must find the old code

import recognizer.ml.model as m
from recognizer.ml import mnist
from recognizer.ml.svm import SvmDigitClassifier
from tests.stroke_helpers import stroke_dataset

assert m.__file__.startswith(OLD_CODE), f"not the old code: {m.__file__}"

d = mnist.load_fallback_digits()
X, y = d.train_images[:160] / 255.0, d.train_labels[:160]
probe = (d.test_images[:24] / 255.0).astype(np.float32)
S, sy = stroke_dataset(2, seed=0)
pool = {digit: [s for s, label in zip(S, sy) if label == digit] for digit in range(10)}
strokes = [pool[int(label)].pop() if pool[int(label)] else None for label in y]  # the image's digit, by pen
knn = m.train_model(X, y, cv=False, features="gradients", defaults={"pca_components": 4, "k": 3},
                    strokes=strokes).estimator
svm = SvmDigitClassifier(n_components=4).fit(X, y)
P, _ = stroke_dataset(1, seed=1)
probe_strokes = [P[int(label)] if i < 10 else None for i, label in enumerate(d.test_labels[:24])]
joblib.dump({
    "knn": knn, "svm": svm, "probe": "fallback digits test_images[:24] / 255", "probe_strokes": probe_strokes,
    "knn_proba": knn.predict_proba(probe, strokes=probe_strokes),
    "knn_distance": np.array([knn.predict_one(p).distance for p in probe]),
    "svm_proba": svm.predict_proba(probe),
}, OUT, compress=3)
