"""The feedback loop's data: labelling (by owners and staff), which labels are trusted, the held-out users,
the label ranking and per-account trust (recognizer.trust does the arithmetic), and the training data a
retrain assembles from all that with bounded influence per account.

The modules, each importing only those listed after it (lint-imports checks it):
- labels: labelling by owners and staff, one path (label_drawing, review, review_drawing).
- training_data: who is held out, the caps and the quarantine: the TrainingData a retrain assembles.
- ranking: the label ranking and per-account trust (flag_suspicious_labels, find_label_issues).
- precompute: the ranking's searches ahead of it, spread over workers (evidence_to_compute, precompute_evidence).
- evidence: what the ranking keeps per drawing in LabelEvidence: read, searched where new, stored.
- out_of_sample: probabilities from other accounts' rows only, searched in full or from kept lists.
- training_lists: a k-NN's out-of-sample searches kept as lists, extended at a promotion (TrainingLists).
- drawings: drawings as arrays (DrawingSet, drawing_set) and their strokes parsed when read (StoredStrokes).

Everything other modules use is importable from here, as from recognizer.feedback when it was one module.
"""

from recognizer.feedback.drawings import DrawingSet, StoredStrokes, drawing_set, has_strokes, take_strokes
from recognizer.feedback.evidence import RankingEvidence, label_evidence
from recognizer.feedback.labels import label_drawing, labels_changed, reject_pending_labels_of, review, review_drawing
from recognizer.feedback.out_of_sample import out_of_sample_probabilities
from recognizer.feedback.precompute import evidence_to_compute, precompute_evidence
from recognizer.feedback.ranking import find_label_issues, flag_suspicious_labels
from recognizer.feedback.training_data import (
    TrainingData,
    assemble_training_data,
    is_holdout_user,
    split_trusted,
    stored_trust,
)
from recognizer.feedback.training_lists import TrainingLists

# Read through recognizer.feedback by tests from when it was one module that imported them.
from recognizer.models import LabelEvidence, TrainingRows
from recognizer.serving import stored_strokes

__all__ = [
    "DrawingSet", "StoredStrokes", "drawing_set", "has_strokes", "take_strokes",
    "RankingEvidence", "label_evidence",
    "label_drawing", "labels_changed", "reject_pending_labels_of", "review", "review_drawing",
    "out_of_sample_probabilities",
    "evidence_to_compute", "precompute_evidence",
    "find_label_issues", "flag_suspicious_labels",
    "TrainingData", "assemble_training_data", "is_holdout_user", "split_trusted", "stored_trust",
    "TrainingLists",
    "LabelEvidence", "TrainingRows", "stored_strokes",
]
