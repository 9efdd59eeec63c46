"""The label ranking searches only what is new to it (recognizer.feedback.label_evidence) and decides as
if it had searched everything: the same flags, suspicion and trust as a ranking from scratch and as the
plain two-round ranking (peer_votes searched in both rounds) that it replaces.

Tiny data: the bundled digits' test images drawn by a few accounts, one of which labels 1s as 7.
"""

from __future__ import annotations

import copy
import sys

import numpy as np
import pytest
from django.db.models import Count

from recognizer import feedback, trust
from recognizer.models import Drawing, LabelEvidence, UserTrust
from tests.training_helpers import make_drawing

pytestmark = [pytest.mark.django_db]


@pytest.fixture(scope="module")
def estimators():
    """Two k-NNs on the bundled digits with different PCA bases (another training set): the model a
    retrain promotes has another feature space."""
    from recognizer.ml import mnist
    from recognizer.ml.model import DigitClassifier

    data = mnist.load_fallback_digits()
    first = DigitClassifier(n_components=30).fit(data.train_images / 255.0, data.train_labels)
    second = DigitClassifier(n_components=30).fit(data.train_images[::2] / 255.0, data.train_labels[::2])
    return first, second


@pytest.fixture
def accounts(django_user_model):
    return [django_user_model.objects.create_user(name, f"{name}@example.com", f"{name}-password-1")
            for name in ("alice", "bob", "carol", "dave", "erin", "mallory")]


def draw(user, data, rows, label=None):
    return [make_drawing(user, data.test_images[i], int(data.test_labels[i]) if label is None else label)
            for i in rows]


@pytest.fixture
def site(tiny_training, accounts, fallback_data):
    """Five honest accounts with 40 drawings each (every neighbour list is full), mallory's 1s labelled 7.
    Every drawing is a different image: no two at the same distance from a third."""
    *honest, mallory = accounts
    for n, user in enumerate(honest):
        draw(user, fallback_data, range(40 * n, 40 * n + 40))
    ones = [i for i in range(200, 330) if fallback_data.test_labels[i] == 1][:10]
    draw(mallory, fallback_data, ones, label=7)
    spare = [i for i in range(200, 359) if i not in ones]
    return {"honest": honest, "mallory": mallory, "spare": spare}


def reference(estimator):
    """The ranking as it was before evidence was kept: every drawing searched, in both rounds."""
    from django.conf import settings

    ds = feedback.drawing_set(Drawing.objects.not_rejected().order_by("id"))
    rejected = dict(Drawing.objects.labelled().filter(status=Drawing.Status.REJECTED)
                    .values("user_id").annotate(n=Count("id")).values_list("user_id", "n"))
    features = estimator.transform(ds.images)
    p = feedback.out_of_sample_probabilities(estimator, ds.images, ds.users, ds.strokes, features=features)
    accounts = sorted({int(u) for u in ds.users} | set(rejected))
    scores = {u: trust.prior_trust() for u in accounts}
    for _ in range(2):
        votes, mass = trust.peer_votes(features, ds.users, ds.labels, np.array([scores[int(u)] for u in ds.users]),
                                       estimator.novelty_distance_)
        evidence = trust.combine_evidence(p, votes, mass)
        confident = evidence.max(axis=1) >= trust.CONFIDENT
        agree = (confident & (evidence.argmax(axis=1) == ds.labels)) | ds.approved
        disagree = confident & (evidence.argmax(axis=1) != ds.labels) & ~ds.approved
        for u in accounts:
            a, d = agree[ds.users == u].sum(), disagree[ds.users == u].sum() + rejected.get(u, 0)
            scores[u] = (trust.PRIOR_AGREE + a) / (trust.PRIOR_AGREE + trust.PRIOR_DISAGREE + a + d)
    suspicion = trust.suspicion(evidence, ds.labels, np.array([scores[int(u)] for u in ds.users]))
    flagged = (suspicion >= settings.RECOGNIZER_SUSPICION_THRESHOLD) & ~ds.approved
    return {"ids": list(ds.ids), "suspicion": suspicion, "suspicious": flagged, "trust": scores}


def stored():
    rows = list(Drawing.objects.not_rejected().order_by("id").values_list("id", "suspicious", "suspicion_score"))
    return {"ids": [r[0] for r in rows], "suspicious": np.array([r[1] for r in rows]),
            "suspicion": np.array([r[2] for r in rows], np.float64),
            "trust": dict(UserTrust.objects.values_list("user_id", "score"))}


def assert_same(got, expected):
    assert got["ids"] == expected["ids"]
    assert np.abs(got["suspicion"] - expected["suspicion"]).max() < 1e-6
    assert (got["suspicious"] == expected["suspicious"]).all()
    assert set(got["trust"]) >= set(expected["trust"])  # (an account with nothing left keeps its last row)
    assert all(abs(got["trust"][u] - expected["trust"][u]) < 1e-9 for u in expected["trust"])


def stored_lists():
    return {pk: (np.frombuffer(ids, np.int64), np.frombuffer(dist, np.float32))
            for pk, ids, dist in LabelEvidence.objects.values_list("drawing_id", "neighbour_ids", "neighbour_distances")}


def from_scratch(estimator):
    """What a ranking without any kept evidence stores: (figures, neighbour lists)."""
    LabelEvidence.objects.all().delete()
    summary = feedback.flag_suspicious_labels(estimator)
    assert summary["reused"] == 0
    return stored(), stored_lists()


def assert_same_lists(got, expected):
    """Kept lists still hold drawings deleted or rejected since (skipped when used): what is left of each
    is the start of the list a search from scratch finds, and at least the PEER_NEIGHBOURS that count."""
    assert set(got) == set(expected)
    for pk, (ids, dist) in expected.items():
        present = [(i, d) for i, d in zip(*got[pk]) if i in expected]
        listed = [i for i in ids if i >= 0]
        assert len(present) >= min(trust.PEER_NEIGHBOURS, len(listed)), pk
        assert [i for i, _ in present] == listed[:len(present)], pk
        assert np.allclose([d for _, d in present], dist[:len(present)], rtol=1e-5, atol=1e-5)


@pytest.fixture
def searches(monkeypatch):
    """Which drawings the ranking searched: every training row for out-of-sample probabilities (count), only
    the rows new to the model for a kept training list ("extended", count), and peer neighbour lists (count)."""
    seen = {"probabilities": 0, "extended": 0, "lists": 0}
    full, extend, neighbours = trust.training_neighbours, trust.extend_training_lists, trust.peer_neighbours

    def spy_full(part, Q, users):
        seen["probabilities"] += len(Q)
        return full(part, Q, users)

    def spy_extend(part, Q, users, keys, dist, new_rows):
        seen["extended"] += len(Q)
        return extend(part, Q, users, keys, dist, new_rows)

    def spy_neighbours(features, users, rows=None, k=trust.PEER_KEPT):
        seen["lists"] += len(features) if rows is None else len(rows)
        return neighbours(features, users, rows, k)

    for name, spy in (("training_neighbours", spy_full), ("extend_training_lists", spy_extend),
                      ("peer_neighbours", spy_neighbours)):
        # where callers look it up (recognizer.trust) and where the room that defines it calls it itself
        # (extend_training_lists searches a list again with training_neighbours)
        monkeypatch.setattr(sys.modules[getattr(trust, name).__module__], name, spy)
        monkeypatch.setattr(trust, name, spy)

    def take(extended: bool = False):
        out = dict(seen) if extended else {"probabilities": seen["probabilities"], "lists": seen["lists"]}
        seen.update(probabilities=0, extended=0, lists=0)
        return out

    return take


# --- the pure parts ---


def test_votes_from_kept_lists_are_the_searched_votes():
    rng = np.random.default_rng(3)
    n = 900
    users = rng.integers(1, 40, n)
    users[:300] = 5  # one big account
    features = rng.normal(size=(n, 8)).astype(np.float32)
    labels, row_trust = rng.integers(0, 10, n), rng.random(n)
    votes, mass = trust.peer_votes(features, users, labels, row_trust, radius=3.0)
    rows, dist = trust.peer_neighbours(features, users)  # PEER_KEPT of them: the first 30 count
    got_votes, got_mass = trust.votes_from_neighbours(rows, dist, users, labels, row_trust, radius=3.0)
    assert np.allclose(got_votes, votes, atol=1e-12) and np.allclose(got_mass, mass, atol=1e-12)
    assert not np.allclose(got_votes, trust.votes_from_neighbours(rows, dist, users, labels, row_trust, radius=2.0)[0])
    few = np.arange(15) % 3  # three accounts of five: ten other drawings for each, fewer than kept
    rows_few, dist_few = trust.peer_neighbours(features[:15], few)
    assert ((rows_few >= 0).sum(axis=1) == 10).all() and (few[np.maximum(rows_few, 0)] != few[:, None])[rows_few >= 0].all()
    assert np.allclose(trust.votes_from_neighbours(rows_few, dist_few, few, labels[:15], row_trust[:15])[0],
                       trust.peer_votes(features[:15], few, labels[:15], row_trust[:15])[0])

    # Lists of the first 850 drawings with the last 50 merged in are the lists of all 900.
    old, new = np.arange(850), np.arange(850, 900)
    kept, kept_dist = trust.peer_neighbours(features[old], users[old])
    src, dst, d = trust.neighbours_reached(features, users, new, old, kept_dist[:, -1])
    changed = trust.merge_neighbours(kept, kept_dist, dst, src, d)
    full, full_dist = trust.peer_neighbours(features, users)
    assert 0 < len(changed) < len(old)
    assert (kept == full[old]).all() and np.allclose(kept_dist, full_dist[old], atol=1e-5)
    assert not trust.merge_neighbours(kept, kept_dist, dst, src, d).size  # already listed: nothing changes


def _part(F, labels, groups, ids, mult=None, k=5):
    F = np.ascontiguousarray(F, np.float32)
    return trust.KnnPart(F, np.einsum("ij,ij->i", F, F), labels, mult, groups, k, "distance", ids)


def test_kept_training_lists_extended_with_the_new_rows_vote_as_a_full_search():
    rng = np.random.default_rng(5)
    n = 1500
    F = rng.normal(size=(n, 6)).astype(np.float32)
    groups = rng.integers(1, 30, n)
    groups[:400] = -1  # a data set's rows: keyed by their place among such rows
    groups[1300:1350] = 7  # an account with many new rows: its own are left out of its drawings' lists
    ids = np.where(groups < 0, -1, np.arange(n) + 1000)
    labels = rng.integers(0, 10, n)
    Q = rng.normal(size=(300, 6)).astype(np.float32)
    users = rng.integers(1, 30, 300)
    F[420:440] = F[500] + rng.normal(scale=0.1, size=(20, 6))  # drawings close together, all dropped below:
    Q[0] = F[500] + 0.05  # the list of a query among them is searched again
    users[0] = 99
    old = _part(F[:1000], labels[:1000], groups[:1000], ids[:1000])
    keys, dist = trust.training_neighbours(old, Q, users)
    assert keys.shape == (300, 5 + trust.TRAINING_SPARE)
    assert np.abs(trust.probabilities_from_lists(old, keys, dist) - trust._part_probabilities(old, Q, users, set())).max() < 1e-5

    # the next model: some drawings dropped (and the nearest of query 0), 500 new rows, other weights
    nearest0 = old.rows_of(keys[0])
    dropped = np.union1d(rng.choice(np.arange(400, 1000), 40, replace=False), nearest0[nearest0 >= 400])
    rows = np.concatenate([np.setdiff1d(np.arange(1000), dropped), np.arange(1000, n)])
    mult = rng.uniform(0.1, 1.0, len(rows)).astype(np.float32)
    new = _part(F[rows], labels[rows], groups[rows], ids[rows], mult)
    new_rows = np.flatnonzero(~np.isin(new.keys, old.keys))
    assert len(new_rows) == 500
    again = trust.extend_training_lists(new, Q, users, keys, dist, new_rows)
    assert again[0] and 0 < again.sum() < 10
    got = trust.probabilities_from_lists(new, keys, dist)
    expected = trust._part_probabilities(new, Q, users, set())
    assert np.abs(got - expected).max() < 1e-5
    full_keys, full_dist = trust.training_neighbours(new, Q, users)
    present = new.rows_of(keys) >= 0
    for i in range(len(Q)):  # what the model still has of a kept list starts the list a full search finds
        listed = keys[i][present[i]]
        assert list(listed[:5]) == list(full_keys[i][:5]), i
    mine = new.groups[np.maximum(new.rows_of(keys), 0)] == users[:, None]
    assert not (mine & present).any()  # never the query's own account
    assert not np.allclose(got, trust.probabilities_from_lists(old, keys, dist))  # the new weights count


def test_a_full_list_that_lost_too_many_is_searched_again():
    stored_ids = np.array([[4, 5, 6, 7], [4, 5, -1, -1], [4, 5, 6, 7]])
    present = np.array([[0, -1, -1, 3], [-1, -1, -1, -1], [0, 1, 2, -1]])
    assert list(trust.lists_to_research(stored_ids, present, k=3)) == [True, False, False]


def test_ids_name_the_feature_space_and_the_model(estimators):
    first, second = estimators
    same = copy.deepcopy(first)
    assert trust.feature_space_id(same) == trust.feature_space_id(first) != trust.feature_space_id(second)
    assert trust.model_id(same) == trust.model_id(first)
    relabelled = copy.deepcopy(first)
    relabelled.train_labels_ = (relabelled.train_labels_ + 1) % 10
    assert trust.feature_space_id(relabelled) == trust.feature_space_id(first)
    assert trust.model_id(relabelled) != trust.model_id(first)


# --- a ranking searches only what is new ---


def test_new_drawings_are_the_only_ones_searched_and_the_decisions_match_a_full_ranking(
        site, estimators, fallback_data, django_user_model, searches):
    est = estimators[0]
    first = feedback.flag_suspicious_labels(est)
    assert first["searched"] == first["ranked"] == 210 and first["reused"] == 0
    assert first["low_trust_users"] == [site["mallory"].pk]
    assert_same(stored(), reference(est))
    searches()

    frank = django_user_model.objects.create_user("frank", "frank@example.com", "frank-password-1")
    draw(site["honest"][0], fallback_data, site["spare"][:4])
    draw(frank, fallback_data, site["spare"][4:8])
    draw(site["mallory"], fallback_data, site["spare"][8:12], label=7)
    summary = feedback.flag_suspicious_labels(est)
    assert summary["ranked"] == 222 and summary["searched"] == 12 and summary["reused"] == 210
    assert searches() == {"probabilities": 12, "lists": 12}  # the new drawings' own searches, nothing else
    assert summary["lists_entered"] > 12 and summary["lists_searched_again"] == 0
    incremental, lists = stored(), stored_lists()
    assert_same(incremental, reference(est))
    scratch, scratch_lists = from_scratch(est)
    assert_same(incremental, scratch)
    assert_same_lists(lists, scratch_lists)  # the new drawings sit in the old lists they fall into

    searches()
    again = feedback.flag_suspicious_labels(est)  # nothing new: no search at all
    assert again["searched"] == 0 and searches() == {"probabilities": 0, "lists": 0}
    assert_same(stored(), scratch)


def test_relabels_rejections_and_deletions_are_reflected(site, estimators, fallback_data):
    est = estimators[0]
    feedback.flag_suspicious_labels(est)
    alice, bob, carol = site["honest"][:3]
    before = dict(Drawing.objects.values_list("id", "suspicion_score"))

    relabelled = Drawing.objects.filter(user=carol).order_by("id")[:8]
    relabelled_ids = [d.pk for d in relabelled]
    for d in relabelled:
        feedback.label_drawing(d, (d.label + 5) % 10)
    rejected = list(Drawing.objects.filter(user=alice).order_by("id").values_list("pk", flat=True)[:5])
    Drawing.objects.filter(pk__in=rejected).update(status=Drawing.Status.REJECTED)
    Drawing.objects.filter(user=bob).delete()  # 40 drawings: lists that held many of them are searched again

    summary = feedback.flag_suspicious_labels(est)
    assert summary["ranked"] == 210 - 5 - 40
    assert summary["lists_searched_again"] > 0 and summary["searched"] == summary["lists_searched_again"]
    incremental, lists = stored(), stored_lists()
    assert_same(incremental, reference(est))
    assert UserTrust.objects.get(user=alice).n_labels == 40  # the rejected labels still count against her
    assert not LabelEvidence.objects.filter(drawing_id__in=rejected).exists()
    after = dict(Drawing.objects.values_list("id", "suspicion_score"))
    assert min(after[pk] - before[pk] for pk in relabelled_ids) > 0.1  # wrong labels now
    scratch, scratch_lists = from_scratch(est)
    assert_same(incremental, scratch)
    assert_same_lists(lists, scratch_lists)

    # A rejection undone: the drawing comes back as new, searched and put back into the lists it belongs to.
    Drawing.objects.filter(pk=rejected[0]).update(status=Drawing.Status.APPROVED)
    summary = feedback.flag_suspicious_labels(est)
    assert summary["searched"] == 1
    incremental, lists = stored(), stored_lists()
    assert_same(incremental, reference(est))
    assert sum(rejected[0] in ids for ids, _ in lists.values()) > 0
    scratch, scratch_lists = from_scratch(est)
    assert_same_lists(lists, scratch_lists)


def test_another_feature_space_ranks_everything_again(site, estimators, searches):
    first, second = estimators
    feedback.flag_suspicious_labels(first)
    assert feedback.flag_suspicious_labels(copy.deepcopy(first))["searched"] == 0  # the same model, loaded again
    searches()
    summary = feedback.flag_suspicious_labels(second)
    assert summary["searched"] == summary["ranked"] == 210 and summary["reused"] == 0
    assert searches() == {"probabilities": 210, "lists": 210}
    assert set(LabelEvidence.objects.values_list("space", flat=True)) == {trust.feature_space_id(second)}
    assert_same(stored(), reference(second))


def test_another_model_in_the_same_space_keeps_the_lists(site, estimators, searches):
    first = estimators[0]
    feedback.flag_suspicious_labels(first)
    weighted = copy.deepcopy(first)
    weighted.sample_weight_ = np.where(weighted.train_labels_ == 1, 0.05, 1.0).astype(np.float32)
    searches()
    summary = feedback.flag_suspicious_labels(weighted)
    # the same rows, weighted otherwise: every probability is new, from the kept training lists, no search at all
    assert summary["searched"] == 210 and summary["training_lists_extended"] == 210
    assert searches(extended=True) == {"probabilities": 0, "extended": 210, "lists": 0}
    assert_same(stored(), reference(weighted))


def random_strokes(rng, label):
    """A pen trajectory: a random walk, drawn differently for each label."""
    steps = rng.normal(size=(24, 2)) + [np.cos(label), np.sin(label)]
    points = np.cumsum(steps, axis=0) * 4 + 100
    return [np.column_stack([points, np.arange(24) * 10.0])]


@pytest.fixture
def with_strokes(site):
    from recognizer.ml import strokes as ml_strokes

    rng = np.random.default_rng(8)
    for d in Drawing.objects.order_by("id"):
        if d.pk % 3:
            d.strokes = ml_strokes.strokes_to_json(random_strokes(rng, d.label))
            d.save(update_fields=["strokes"])
    return rng


def refitted(previous, drawings, weights=None):
    """`previous` refitted in its space on its data set rows and `drawings` (as a retrain does: recognizer.training)."""
    from recognizer.ml import model as ml_model

    ds = feedback.drawing_set(drawings)
    rows = ml_model.knn_rows(previous)
    w = np.ones(len(ds), np.float32) if weights is None else weights
    image = rows.pick(rows.groups < 0) + ml_model.KnnRows(previous.transform(ds.images), ds.labels, w, ds.users, ds.ids)
    strokes = None
    if previous.reads_strokes:
        srows = ml_model.knn_rows(previous.stroke_model_)
        has = np.array([st is not None for st in ds.strokes], bool)
        strokes = srows.pick(srows.groups < 0) + ml_model.KnnRows(
            previous.stroke_model_.features([st for st, h in zip(ds.strokes, has) if h]), ds.labels[has], w[has],
            ds.users[has], ds.ids[has])
    return ml_model.refit_knn(previous, image, strokes)


def test_a_promotion_in_the_same_space_searches_only_the_rows_new_to_the_model(
        site, with_strokes, estimators, fallback_data, searches):
    """A retrain's model (the data set rows, users' drawings as rows: some dropped, new ones added, other weights)
    ranks with the kept training lists extended by its new rows, image and strokes: the decisions of a full search."""
    from recognizer.ml.strokes import StrokeClassifier

    rng = with_strokes
    base = copy.deepcopy(estimators[0])
    pen = [random_strokes(rng, d) for d in np.arange(300) % 10]
    stroke_model = StrokeClassifier().fit(pen, np.arange(300) % 10)
    stroke_model.train_groups_ = -1000 - np.arange(300) % 6
    base.attach_stroke_model(stroke_model, 0.45)
    drawings = list(Drawing.objects.order_by("id"))
    first = refitted(base, drawings[:150])
    feedback.flag_suspicious_labels(first)
    assert searches() == {"probabilities": 210 + 140, "lists": 210}  # image and stroke lists of every drawing

    draw(site["honest"][0], fallback_data, site["spare"][:6])
    draw(site["mallory"], fallback_data, site["spare"][6:10], label=7)
    kept = [d for d in drawings if d.pk % 7] + list(Drawing.objects.order_by("id"))[210:]  # some dropped, new in
    second = refitted(first, kept, weights=rng.uniform(0.2, 1.0, len(kept)).astype(np.float32))
    summary = feedback.flag_suspicious_labels(second)
    counts = searches(extended=True)
    assert summary["training_lists_extended"] == 210 and counts["extended"] == 210 + 140  # no decoding
    assert summary["training_rows_new"] == len(kept) - len([d for d in drawings[:150] if d.pk % 7])
    assert counts["probabilities"] == 10 + summary.get("training_lists_searched_again", 0)  # the new drawings
    assert_same(stored(), reference(second))
    assert set(feedback.TrainingRows.objects.values_list("model", flat=True)) == {trust.model_id(second)}
    # the old drawings' rows were updated in place (their probabilities, and their lists where new rows entered)
    assert summary["updated_in_place"] == 210 - summary["lists_searched_again"] > 0
    assert 0 < summary["lists_changed_in_place"] < summary["updated_in_place"]
    features = dict(LabelEvidence.objects.values_list("drawing_id", "features"))
    # read back, they are this model's evidence: nothing is searched, the decisions are the same
    again = feedback.flag_suspicious_labels(second)
    assert again["searched"] == 0 and again["reused"] == 220
    assert_same(stored(), reference(second))
    # and the lists updated in place extend again under the next model as a full search would find them
    draw(site["honest"][1], fallback_data, site["spare"][10:14])
    third = refitted(second, kept + list(Drawing.objects.order_by("id"))[220:])
    searches()
    summary = feedback.flag_suspicious_labels(third)
    assert summary["updated_in_place"] > 0 and searches()["probabilities"] == 4 + summary["training_lists_searched_again"]
    assert_same(stored(), reference(third))
    assert all(bytes(features[pk]) == bytes(f) for pk, f in LabelEvidence.objects.values_list("drawing_id", "features")
               if pk in features)  # features are never rewritten in a space

    # a model from scratch (another space): every list is searched again
    summary = feedback.flag_suspicious_labels(estimators[1])
    assert "training_lists_extended" not in summary and searches()["probabilities"] == 224
    assert_same(stored(), reference(estimators[1]))


# --- computed ahead, in parts (the spread retrain's workers: recognizer.retraining) ---


def precompute_in_parts(estimator, size=60):
    """What a spread retrain's workers do, in parts and out of order."""
    todo = feedback.evidence_to_compute(estimator)
    parts = [todo[s: s + size] for s in range(0, len(todo), size)][::-1]
    counts = [feedback.precompute_evidence(estimator, part) for part in parts]
    assert len(feedback.evidence_to_compute(estimator)) == 0
    return todo, counts


def test_evidence_computed_ahead_in_another_space_leaves_the_ranking_only_the_lists(
        site, estimators, fallback_data, searches):
    first, second = estimators
    feedback.flag_suspicious_labels(first)
    draw(site["honest"][0], fallback_data, site["spare"][:15])
    todo, counts = precompute_in_parts(second)
    assert len(todo) == 225 and sum(c["computed"] for c in counts) == 225
    assert sum(c["kept_lists"] for c in counts) == 0  # the lists were in the first model's space
    searches()
    summary = feedback.flag_suspicious_labels(second)
    assert searches() == {"probabilities": 0, "lists": 225}
    assert summary["searched"] == 225
    assert_same(stored(), reference(second))


def test_evidence_computed_ahead_in_the_same_space_keeps_the_lists_and_enters_the_new_drawings(
        site, estimators, fallback_data, searches):
    first = estimators[0]
    feedback.flag_suspicious_labels(first)
    new = draw(site["honest"][1], fallback_data, site["spare"][:12])
    weighted = copy.deepcopy(first)
    weighted.sample_weight_ = np.where(weighted.train_labels_ == 1, 0.05, 1.0).astype(np.float32)
    todo, counts = precompute_in_parts(weighted)
    assert len(todo) == 222 and sum(c["kept_lists"] for c in counts) == 210
    # between the parts and the ranking: a drawing goes, and another comes
    gone = Drawing.objects.exclude(pk__in=[d.pk for d in new]).order_by("id").first()
    gone.delete()
    late = draw(site["mallory"], fallback_data, site["spare"][12:13], label=7)
    searches()
    summary = feedback.flag_suspicious_labels(weighted)
    assert searches() == {"probabilities": 1, "lists": 13}  # the late drawing's search; the new ones' lists
    assert summary["ranked"] == 222 and not LabelEvidence.objects.filter(pk=gone.pk).exists()
    assert_same(got := stored(), reference(weighted))
    lists = stored_lists()
    assert sum(any(i in ids for i in [d.pk for d in new + late]) for ids, _ in lists.values()) > 0
    scratch, scratch_lists = from_scratch(weighted)
    assert_same(got, scratch)
    assert_same_lists(lists, scratch_lists)


def test_evidence_ahead_skips_rejected_deleted_and_up_to_date_drawings(site, estimators):
    first = estimators[0]
    feedback.flag_suspicious_labels(first)
    assert len(feedback.evidence_to_compute(first)) == 0
    assert feedback.precompute_evidence(first, list(Drawing.objects.values_list("pk", flat=True)))["computed"] == 0
    rejected = Drawing.objects.order_by("id").first()
    Drawing.objects.filter(pk=rejected.pk).update(status=Drawing.Status.REJECTED)
    second = estimators[1]
    todo = feedback.evidence_to_compute(second)
    assert rejected.pk not in todo and len(todo) == 209
    counts = feedback.precompute_evidence(second, [*todo.tolist(), rejected.pk, 10**9])
    assert counts["computed"] == 209


def test_the_model_alone_ranking_forks_no_processes(monkeypatch, caplog):
    """cleanlab's default process pool hangs a Celery worker (its children keep the worker's SIGTERM handler)."""
    import multiprocessing

    def no_pool(*args, **kwargs):
        raise AssertionError("a process pool was started")

    monkeypatch.setattr(multiprocessing, "Pool", no_pool)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 500)
    p = rng.dirichlet(np.ones(10), 500)
    p[np.arange(500), labels] += 2.0
    p /= p.sum(axis=1, keepdims=True)
    with caplog.at_level("WARNING", logger="recognizer.feedback"):
        issues = feedback.find_label_issues(labels, p)
    assert issues.shape == (500,) and not caplog.records  # cleanlab ran, without falling back


# --- the same searches through a graph, for a large site (lowered thresholds) ---


def test_searches_that_leave_accounts_out_through_a_graph_find_the_exact_neighbours_of_other_accounts(monkeypatch):
    """With a graph, the k + GRAPH_MARGIN nearest it finds are searched instead of every row: never a row of the
    query's own account, nearly always the exact search's rows; a query whose own account fills its neighbourhood
    beyond the margin is searched exactly."""
    from recognizer.ml import ann

    rng = np.random.default_rng(11)
    n, k = 4000, 12
    F = rng.normal(size=(n, 12)).astype(np.float32)
    groups = rng.integers(1, 80, n)
    F[:60] = F[0] + rng.normal(scale=0.01, size=(60, 12))  # account 500 drew 60 drawings nearly alike
    groups[:60] = 500
    sq = np.einsum("ij,ij->i", F, F)
    index = ann.NeighbourIndex.build(F)
    rows = np.concatenate([np.arange(0, 10), rng.choice(np.arange(60, n), 600, replace=False)])
    Q, users = F[rows], groups[rows]
    calls = []
    real = index.search
    monkeypatch.setattr(index, "search", lambda q, kk, *a, **kw: calls.append(kk) or real(q, kk, *a, **kw))
    exact_idx, exact_dist = trust.nearest_of_other_accounts(F, sq, groups, Q, users, k)
    idx, dist = trust.nearest_of_other_accounts(F, sq, groups, Q, users, k, index)
    assert calls and max(calls) <= k + trust.GRAPH_MARGIN  # the graph was asked for candidates, not every row
    assert (idx >= 0).all() and not (groups[idx] == users[:, None]).any()
    recall = np.mean([len(set(a) & set(b)) / k for a, b in zip(idx, exact_idx)])
    assert recall >= 0.97, recall
    assert (np.diff(dist, axis=1) >= 0).all()  # nearest first
    # account 500's own 60 drawings fill its queries' nearest 28: searched exactly, the exact answer
    np.testing.assert_array_equal(idx[:10], exact_idx[:10])
    np.testing.assert_allclose(dist[:10], exact_dist[:10], rtol=1e-5)

    # the kept training lists search through the model's graph (KnnPart.index) ...
    part = trust.KnnPart(F, sq, rng.integers(0, 10, n), None, groups, 4, "distance", np.arange(n), index)
    keys, _ = trust.training_neighbours(part, Q, users)
    exact_keys, _ = trust.training_neighbours(_part(F, part.labels, groups, np.arange(n), k=4), Q, users)
    assert np.mean(keys == exact_keys) >= 0.95
    # ... and the peer lists of many drawings through one built for them
    monkeypatch.setattr(ann, "ANN_MIN_ROWS", 1000)
    monkeypatch.setattr(trust.peers, "PEER_GRAPH_MIN_QUERIES", 500)  # where peer_neighbours reads it
    built = []
    build = ann.NeighbourIndex.build
    monkeypatch.setattr(ann.NeighbourIndex, "build", classmethod(lambda cls, R, **kw: built.append(len(R)) or
                                                                 build(R, **kw)))
    peers, _ = trust.peer_neighbours(F, groups, rows=rows)
    assert built == [n]
    exact_peers, _ = trust.peer_neighbours(F, groups, rows=rows[:499])  # too few queries: exact, no graph
    assert built == [n]
    assert not (groups[peers] == users[:, None]).any()
    assert np.mean([len(set(a) & set(b)) / trust.PEER_KEPT for a, b in zip(peers[:499], exact_peers)]) >= 0.97
