"""Who the global model listens to: per-account trust, how suspicious each label is, caps on one
account's share of a digit, and a k-NN candidate's figures with accounts left out.

recognizer.feedback and recognizer.promotion call these at every label ranking and retrain; everything here takes arrays, so
tests and benchmarks can call it too. The numbers were set with bench/poisoning.py.

- Evidence for a label: the k-NN's out-of-sample probabilities (the account's own drawings and
  strokes left out), combined with the labels other accounts gave their similar drawings (one vote
  per account, weighted by its trust, only drawings within the model's typical neighbour distance).
- Trust of an account: a smoothed share of its labels that agree with that evidence where the
  evidence is confident (staff approvals count as agreement, rejections as disagreement). Two
  rounds: the second weights other accounts' votes by the trust the first round gave them, so
  colluding accounts do not vouch for each other.
- Suspicion of a label: the chance it is wrong given the evidence and the account's trust (a label
  is wrong with the chance 1 - trust, then any other digit). An honest account whose style is new
  keeps a high trust, so the model disagreeing with a few of its labels does not flag them; an account
  that labels against confident predictions loses its trust, and then its every contradicted label is.
- Kept searches: both searches of the evidence are kept between rankings as neighbour lists, so that a
  ranking searches only what is new to it and the votes are arithmetic on the lists.

The rooms, each one concept (callers import the names from here):

- `out_of_sample`: a k-NN's training set as the searches need it (KnnPart) and its probabilities with
  accounts left out (neighbour_probabilities).
- `other_accounts`: the search every kept list is, each query's nearest rows of other accounts.
- `peers`: other accounts' votes (peer_votes) and the kept peer lists (peer_neighbours, neighbours_reached,
  merge_neighbours, lists_to_research, votes_from_neighbours).
- `training_lists`: the out-of-sample searches kept between rankings (training_neighbours,
  extend_training_lists, probabilities_from_lists).
- `evidence_ids`: the names cached evidence is kept under (feature_space_id, model_id, training_rows_digest).
- `ranking`: trust and suspicion (rank_labels, vote_weights).
- `caps`: one account's share of a digit (cap_accounts); `holdout`: the per-digit held-out set (holdout_fill).
- `leave_out`: a candidate's figures with accounts left out (LeaveOutEvaluator).
"""

from recognizer.ml.knn import N_CLASSES

from .caps import cap_accounts
from .evidence_ids import EVIDENCE_VERSION, feature_space_id, model_id, training_rows_digest
from .holdout import digit_user_order, holdout_fill
from .leave_out import LeaveOutEvaluator
from .other_accounts import GRAPH_MARGIN, nearest_of_other_accounts
from .out_of_sample import (
    KnnPart,
    image_part,
    neighbour_probabilities,
    part_probabilities,
    rows_with_strokes,
    stroke_part,
)
from .peers import (
    PEER_GRAPH_MIN_QUERIES,
    PEER_KEPT,
    PEER_NEIGHBOURS,
    PEER_SPARE,
    lists_to_research,
    merge_neighbours,
    neighbours_reached,
    peer_neighbours,
    peer_votes,
    votes_from_neighbours,
)
from .ranking import (
    CONFIDENT,
    MODEL_SMOOTHING,
    PEER_PRIOR,
    PRIOR_AGREE,
    PRIOR_DISAGREE,
    AccountTrust,
    Ranking,
    combine_evidence,
    prior_trust,
    rank_labels,
    suspicion,
    vote_weights,
)
from .training_lists import (
    PAD_KEY,
    TRAINING_SPARE,
    extend_training_lists,
    probabilities_from_lists,
    training_list_length,
    training_neighbours,
)

__all__ = [
    "CONFIDENT",
    "EVIDENCE_VERSION",
    "GRAPH_MARGIN",
    "MODEL_SMOOTHING",
    "N_CLASSES",
    "PAD_KEY",
    "PEER_GRAPH_MIN_QUERIES",
    "PEER_KEPT",
    "PEER_NEIGHBOURS",
    "PEER_PRIOR",
    "PEER_SPARE",
    "PRIOR_AGREE",
    "PRIOR_DISAGREE",
    "TRAINING_SPARE",
    "AccountTrust",
    "KnnPart",
    "LeaveOutEvaluator",
    "Ranking",
    "cap_accounts",
    "combine_evidence",
    "digit_user_order",
    "extend_training_lists",
    "feature_space_id",
    "holdout_fill",
    "image_part",
    "lists_to_research",
    "merge_neighbours",
    "model_id",
    "nearest_of_other_accounts",
    "neighbour_probabilities",
    "neighbours_reached",
    "part_probabilities",
    "peer_neighbours",
    "peer_votes",
    "prior_trust",
    "probabilities_from_lists",
    "rank_labels",
    "rows_with_strokes",
    "stroke_part",
    "suspicion",
    "training_list_length",
    "training_neighbours",
    "training_rows_digest",
    "vote_weights",
    "votes_from_neighbours",
]

# The names tests knew them by when they were private to one module, recognizer/trust.py.
_digit_user_order = digit_user_order
_part_probabilities = part_probabilities
