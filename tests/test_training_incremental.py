"""A retrain that keeps the active k-NN's feature space: it reuses the rows that model already has and
featurises only drawings new to it (recognizer.training.refit_in_space, recognizer.ml.model.refit_knn)."""

from __future__ import annotations

import numpy as np
import pytest

from recognizer import promotion, retraining, serving, trust, versions
from recognizer.ml import model as ml_model
from recognizer.models import ModelVersion
from tests.training_helpers import make_drawing


def label_some(user, data, n, *, start=0):
    return [make_drawing(user, data.test_images[i], int(data.test_labels[i])) for i in range(start, start + n)]


def test_a_refit_on_a_models_own_rows_is_that_model(fused_training_result):
    data, estimator = fused_training_result
    images = data.test_images[:40] / 255.0
    rows, stroke_rows = ml_model.knn_rows(estimator), ml_model.knn_rows(estimator.stroke_model_)
    again = ml_model.refit_knn(estimator, rows, stroke_rows)
    np.testing.assert_array_equal(again.train_features_, estimator.train_features_)
    np.testing.assert_allclose(again.predict_proba(images), estimator.predict_proba(images))
    assert again.reads_strokes and trust.feature_space_id(again) == trust.feature_space_id(estimator)
    # rows of another space are refused, not silently mixed
    with pytest.raises(ValueError, match="feature space"):
        ml_model.refit_knn(estimator, ml_model.KnnRows(rows.features[:, :5], rows.labels, rows.weights,
                                                       rows.groups, rows.ids))


def test_a_refit_with_new_rows_answers_like_a_model_that_has_them(small_training_result):
    data, result = small_training_result
    estimator = result.estimator
    rows = ml_model.knn_rows(estimator)
    # a "user" who writes every 3 the way the training set writes 8s: after the refit their 3s vote 3. The user's rows
    # are the training 8s' own feature rows and the queries are 8s from outside the training set: a query equal to a
    # training row would be decided by float noise (its distance to that row and to the row's copy come out as 0 and
    # 1e-3 from one matrix product, and 1 / distance then outvotes any weight).
    train_eights = np.flatnonzero(data.train_labels == 8)
    n = len(train_eights)
    eights = data.test_images[data.test_labels == 8][:30] / 255.0
    new = ml_model.KnnRows(estimator.train_features_[train_eights], np.full(n, 3), np.full(n, 5.0, np.float32),
                           np.full(n, 7, np.int64), np.arange(1000, 1000 + n))
    refit = ml_model.refit_knn(estimator, rows + new)
    assert (estimator.predict(eights) == 8).mean() > 0.8
    assert (refit.predict(eights) == 3).mean() > 0.8
    assert list(refit.train_ids_[-n:]) == list(range(1000, 1000 + n)) and list(refit.train_groups_[-n:]) == [7] * n


@pytest.mark.django_db
def test_the_second_retrain_featurises_only_the_drawings_new_to_the_space(tiny_training, active_model, alice, bob,
                                                                            fallback_data, django_user_model):
    tiny_training.RECOGNIZER_HOLDOUT_SHARE = 0.0
    label_some(alice, fallback_data, 30)
    first, _ = retraining.retrain_in_foreground()
    assert first.status == "promoted", first.decision
    v1 = ModelVersion.objects.get(pk=first.model_version_id)
    assert "refit" not in v1.metadata["hyperparameters"]  # the fixture's model knew no drawing ids: from scratch
    est1 = versions.load_estimator(v1.file, v1.sha256)
    ids1 = set(est1.train_ids_[est1.train_ids_ >= 0].tolist())
    assert ids1 <= set(alice.drawings.values_list("id", flat=True)) and len(ids1) == first.data_counts["user_train"]

    new = label_some(bob, fallback_data, 12, start=30)
    second, _ = retraining.retrain_in_foreground()
    v2 = ModelVersion.objects.get(pk=second.model_version_id)
    refit = v2.metadata["hyperparameters"]["refit"]
    est2 = versions.load_estimator(v2.file, v2.sha256)
    ids2 = set(est2.train_ids_[est2.train_ids_ >= 0].tolist())
    assert len(ids2) == second.data_counts["user_train"] > len(ids1)
    assert refit["rows"] == len(ids2 & ids1) > 0, refit  # taken from the active model, not featurised again
    assert refit["label_evidence"] + refit["computed"] == len(ids2 - ids1) > 0, refit
    assert refit["label_evidence"] > 0  # the label ranking had stored them in this space already
    assert refit["feature_space"] == trust.feature_space_id(est1)
    assert refit["neighbour_index"] is None  # a small training set: exact search, no graph
    n_base = int((est1.train_groups_ < 0).sum())
    kept = [pk for pk in est1.train_ids_[n_base:] if pk in ids2]
    assert list(est2.train_ids_[n_base:n_base + len(kept)]) == kept  # the active model's drawings first, its order
    assert trust.feature_space_id(est2) == trust.feature_space_id(est1)
    for drawing in [d for d in new if d.pk in ids2]:  # the new drawings are in, with what the space makes of them
        row = int(np.flatnonzero(est2.train_ids_ == drawing.pk)[0])
        image = np.frombuffer(bytes(drawing.preprocessed), np.uint8).reshape(28, 28) / 255.0
        np.testing.assert_allclose(est2.train_features_[row], est1.transform(image[None])[0], atol=1e-4)
        assert est2.train_labels_[row] == drawing.label
    for pk in ids2 & ids1:  # the rows taken over are the active model's, bit for bit
        np.testing.assert_array_equal(est2.train_features_[est2.train_ids_ == pk], est1.train_features_[est1.train_ids_ == pk])
    serving.model_cache.clear()


@pytest.mark.django_db
def test_after_a_promotion_in_the_same_space_the_ranking_searches_only_the_new_rows(
        tiny_training, active_model, alice, bob, fallback_data, monkeypatch):
    """The third retrain ranks under a model refitted in the space of the one the second ranked under: every
    drawing's kept training lists are extended with that model's new rows, none is decoded or searched again."""
    from recognizer import feedback

    tiny_training.RECOGNIZER_HOLDOUT_SHARE = 0.0
    label_some(alice, fallback_data, 30)
    first, _ = retraining.retrain_in_foreground()
    assert first.status == "promoted"  # from scratch: a new space
    label_some(bob, fallback_data, 12, start=30)
    second, _ = retraining.retrain_in_foreground()  # ranks under the first's model: lists searched in full
    assert second.status == "promoted", second.decision
    assert second.data_counts["ranking"]["searched_in_full"] == 42
    label_some(bob, fallback_data, 5, start=42)
    decoded = []
    real = feedback.drawing_set
    monkeypatch.setattr(feedback.out_of_sample, "drawing_set", lambda qs: decoded.append(ds := real(qs)) or ds)
    third, _ = retraining.retrain_in_foreground()
    ranking = third.data_counts["ranking"]
    assert ranking["training_lists_extended"] == 42 and ranking["searched_in_full"] == 5, ranking
    est1, est2 = (versions.load_estimator(v.file, v.sha256) for v in
                  ModelVersion.objects.filter(pk__in=[first.model_version_id, second.model_version_id]).order_by("pk"))
    assert ranking["training_rows_new"] == len(set(est2.train_ids_) - set(est1.train_ids_)) > 0
    assert sum(len(ds) for ds in decoded[:1]) == 5  # the ranking decoded the new drawings only
    serving.model_cache.clear()


def test_stored_strokes_are_parsed_when_read(monkeypatch):
    from recognizer import feedback

    raw = [None, [[[0, 0], [5, 5], [9, 2]]], [], [[[1, 1], [2, 8]]]]
    parsed = []
    real = feedback.stored_strokes
    monkeypatch.setattr(feedback.drawings, "stored_strokes", lambda r: parsed.append(r) or real(r))
    strokes = feedback.StoredStrokes(raw)
    picked = strokes.take([3, 1, 0])
    both = picked + [None] + strokes[2:]
    assert len(both) == 6 and not parsed
    has = feedback.has_strokes(both, parsed_before=[True, False, False, False, False, False])
    assert list(has) == [True, True, False, False, False, True]
    assert len(parsed) == 2  # those with strokes not known to parse
    assert both[0] is not None and both[0][0].shape == (2, 3) and both[2] is None
    mixed = picked + [[np.zeros((2, 3))]]  # parsed strokes cannot join stored ones unparsed: a plain list
    assert isinstance(mixed, list) and len(mixed) == 4 and mixed[-1][0].shape == (2, 3)
    # as drawing_set reads them: their JSON text (None, "[]" and "null" are none; text that is no JSON too)
    text = feedback.StoredStrokes([None, "[[[0, 0], [5, 5], [9, 2]]]", "[]", "null", "[[[1,", "[[[1, 1], [2, 8]]]"])
    assert list(text.present()) == [False, True, False, False, True, True]
    assert list(feedback.has_strokes(text)) == [False, True, False, False, False, True]
    np.testing.assert_array_equal(text[1][0], strokes[1][0])


@pytest.mark.django_db
def test_a_drawing_set_reads_the_strokes_a_drawing_stores(alice, fallback_data):
    """Read from the database as JSON text, parsed when read: the strokes the model instances hold."""
    from recognizer import feedback
    from recognizer.ml import strokes as ml_strokes
    from recognizer.models import Drawing
    from tests.training_helpers import make_drawing

    for i, strokes in enumerate([[[[0, 0, 0], [5, 5, 10]], [[9, 2, 20], [3, 3, 30]]], None, [[[1.5, 2.25, 0]]]]):
        drawing = make_drawing(alice, fallback_data.test_images[i], int(fallback_data.test_labels[i]))
        drawing.strokes = strokes
        drawing.save(update_fields=["strokes"])
    from_text = feedback.drawing_set(Drawing.objects.order_by("id"))
    from_instances = feedback.drawing_set(list(Drawing.objects.order_by("id")))
    assert isinstance(from_text.strokes._raw[0], str)
    for a, b in zip(from_text.strokes, from_instances.strokes):
        assert (a is None) == (b is None)
        if a is not None:
            assert [x.tolist() for x in a] == [x.tolist() for x in b]
    assert [len(s) for s in from_text.strokes if s] == [2, 1]
    assert ml_strokes.strokes_to_json(from_text.strokes[2]) == [[[1.5, 2.25, 0.0]]]


@pytest.mark.django_db
def test_a_refit_keeps_the_previous_models_drawings_first_in_its_order_and_extends_its_graph(
        small_training_result, monkeypatch):
    from recognizer import training
    from recognizer.ml import ann

    monkeypatch.setattr(ann, "ANN_MIN_ROWS", 200)  # the bundled digits count as a large training set
    data, result = small_training_result
    images = data.test_images[:50] / 255.0
    labels = data.test_labels[:50].astype(np.int64)
    rows = ml_model.knn_rows(result.estimator)
    ids = np.arange(5000, 5050)
    # the previous model trained on the first 40 drawings, in a shuffled order of its own
    mine = np.random.default_rng(0).permutation(40)
    previous = ml_model.refit_knn(result.estimator, rows + ml_model.KnnRows(
        result.estimator.transform(images[mine]), labels[mine], np.ones(40, np.float32), ids[mine] % 3,
        ids[mine]))
    assert previous.neighbour_index_origin_ == "built"

    def retrain(keep):  # the drawings in another order: newest first, each with its own weight
        keep = np.asarray(keep)[::-1]
        extra = training.ExtraTrainingData(images=images[keep], labels=labels[keep], groups=ids[keep] % 3,
                                           weight=1.0 + keep / 100.0, ids=ids[keep])
        return training.refit_in_space(previous, extra)

    def check_aligned(estimator, keep):
        user = estimator.train_ids_ >= 0
        assert sorted(estimator.train_ids_[user]) == sorted(ids[keep])
        at = estimator.train_ids_[user] - 5000
        np.testing.assert_array_equal(estimator.train_labels_[user], labels[at])
        np.testing.assert_array_equal(estimator.train_groups_[user], ids[at] % 3)
        np.testing.assert_allclose(estimator.sample_weight_[user], 1.0 + at / 100.0)
        np.testing.assert_allclose(estimator.train_features_[user], result.estimator.transform(images[at]), atol=1e-4)

    grown = retrain(np.arange(50))  # every drawing kept, 10 new
    n = len(previous.train_ids_)
    np.testing.assert_array_equal(grown.estimator.train_ids_[:n], previous.train_ids_)  # a prefix, in its order
    np.testing.assert_array_equal(grown.estimator.train_features_[:n], previous.train_features_)
    np.testing.assert_array_equal(np.sort(grown.estimator.train_ids_[n:]), ids[40:])
    check_aligned(grown.estimator, np.arange(50))
    assert grown.hyperparameters["refit"]["rows"] == 40 and grown.hyperparameters["refit"]["computed"] == 10
    assert grown.hyperparameters["refit"]["neighbour_index"] == "extended"

    keep = np.delete(np.arange(50), 7)  # a drawing the previous model trained on is left out (e.g. rejected)
    rebuilt = retrain(keep)
    kept = [pk for pk in previous.train_ids_ if pk >= 0 and pk != ids[7]]
    user = rebuilt.estimator.train_ids_ >= 0
    assert list(rebuilt.estimator.train_ids_[user][:len(kept)]) == kept  # still first, in the previous order
    check_aligned(rebuilt.estimator, keep)
    assert rebuilt.hyperparameters["refit"]["neighbour_index"] == "built"


@pytest.mark.django_db
@pytest.mark.parametrize("why", ["switched off", "other MNIST rows", "user drawings more than doubled"])
def test_a_retrain_starts_from_scratch_when_the_space_cannot_be_kept(why, tiny_training, active_model, alice, bob,
                                                                     fallback_data, monkeypatch):
    from recognizer import training

    monkeypatch.setattr(training, "SPACE_MIN_USER_ROWS", 1)
    tiny_training.RECOGNIZER_HOLDOUT_SHARE = 0.0
    label_some(alice, fallback_data, 20)
    first, _ = retraining.retrain_in_foreground()
    assert first.status == "promoted", first.decision
    label_some(bob, fallback_data, 60 if why.startswith("user") else 5, start=20)
    if why == "switched off":
        tiny_training.RECOGNIZER_RETRAIN_INCREMENTAL = False
    elif why == "other MNIST rows":
        tiny_training.RECOGNIZER_TRAIN_LIMIT = 1000
    second, _ = retraining.retrain_in_foreground()
    v2 = ModelVersion.objects.get(pk=second.model_version_id)
    assert "refit" not in v2.metadata["hyperparameters"]
    serving.model_cache.clear()


def test_the_gate_judges_a_bounded_sample_of_held_out_drawings_the_same_every_time():
    from recognizer.feedback import DrawingSet

    n = 500
    labels = np.arange(n) % 10
    labels[:300] = 1  # most held-out drawings are 1s
    held = DrawingSet(np.zeros((n, 28, 28), np.float32), labels, np.arange(n) % 7, np.arange(1000, 1000 + n))
    assert promotion.judged_holdout(held, 0) is held and promotion.judged_holdout(held, n) is held
    judged = promotion.judged_holdout(held, 100)
    counts = np.bincount(judged.labels, minlength=10)
    assert counts.max() == 10 and len(judged) == 100  # a tenth per digit: the 1s do not crowd the others out
    again = promotion.judged_holdout(held.pick(np.arange(n)[::-1]), 100)
    assert set(again.ids) == set(judged.ids)  # by drawing, not by position or chance
