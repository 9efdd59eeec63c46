"""One bad account can neither poison nor freeze the feedback loop: trust, quarantine, caps, the per-digit
gate and its retry without the culprit, the per-digit held-out set, and toy models never replacing real ones.

Tiny data throughout (scikit-learn's bundled digits); bench/poisoning.py measures the real thing.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from django.urls import reverse

from recognizer import feedback, promotion, retraining, serving, trust, versions
from recognizer.models import Drawing, ModelVersion, UserTrust
from tests.training_helpers import make_drawing

pytestmark = [pytest.mark.django_db, pytest.mark.filterwarnings("ignore:WARNING. MNIST was NOT found:RuntimeWarning")]


@pytest.fixture
def mallory(django_user_model):
    return django_user_model.objects.create_user("mallory", "mallory@example.com", "mallory-password-1")


@pytest.fixture
def carol(django_user_model):
    return django_user_model.objects.create_user("carol", "carol@example.com", "carol-password-1")


def draw(user, data, rows, *, label=None, **kw):
    """`user` labels the fallback test digits at `rows`: truthfully, or all as `label`."""
    return [make_drawing(user, data.test_images[i], int(data.test_labels[i]) if label is None else label, **kw)
            for i in rows]


def rows_of(data, digit, n=None, start=0):
    rows = np.flatnonzero(data.test_labels == digit)[start:]
    return rows if n is None else rows[:n]


def honest_rows(data, n, start=0):
    return list(range(start, start + n))


def candidate_estimator(run_or_version):
    pk = run_or_version if isinstance(run_or_version, int) else run_or_version.model_version_id
    version = ModelVersion.objects.get(pk=pk)
    return versions.load_estimator(version.file, version.sha256)


# --- trust ---


def test_trust_drops_for_an_account_labelling_against_confident_predictions(tiny_training, active_model, alice,
                                                                            mallory, fallback_data):
    draw(alice, fallback_data, honest_rows(fallback_data, 60))
    bad = draw(mallory, fallback_data, rows_of(fallback_data, 1, 30), label=7)
    summary = feedback.flag_suspicious_labels()
    alice_trust, mallory_trust = UserTrust.objects.get(user=alice), UserTrust.objects.get(user=mallory)
    assert alice_trust.score >= 0.9 > tiny_training.RECOGNIZER_TRUST_THRESHOLD > 0.3 > mallory_trust.score
    assert mallory_trust.n_disagree >= 25 and alice_trust.n_agree >= 50
    assert summary["low_trust_users"] == [mallory.pk]
    flagged = set(Drawing.objects.filter(suspicious=True).values_list("user_id", flat=True))
    assert flagged == {mallory.pk}
    assert Drawing.objects.filter(pk__in=[d.pk for d in bad], suspicious=True).count() >= 27


def test_staff_rejections_lower_trust_and_approvals_raise_it(tiny_training, active_model, alice, fallback_data):
    drawings = draw(alice, fallback_data, honest_rows(fallback_data, 20))
    feedback.flag_suspicious_labels()
    before = UserTrust.objects.get(user=alice).score
    Drawing.objects.filter(pk__in=[d.pk for d in drawings[:15]]).update(status=Drawing.Status.REJECTED)
    feedback.flag_suspicious_labels()
    assert UserTrust.objects.get(user=alice).score < before - 0.2


def test_colluding_accounts_do_not_vouch_for_each_other():
    # Two accounts label the same kind of drawing 1 -> 7 next to each other; five honest ones label it 1. The
    # model alone is unsure (60% 1, 30% 7): the other accounts' labels decide, each weighted by its trust.
    rng = np.random.default_rng(0)
    centre = rng.normal(size=8)
    features, users, labels = [], [], []
    for user in range(1, 8):
        for _ in range(20):
            features.append(centre + 0.05 * rng.normal(size=8))
            users.append(user)
            labels.append(7 if user in (6, 7) else 1)
    p_model = np.full((len(users), 10), 0.1 / 8)
    p_model[:, 1], p_model[:, 7] = 0.6, 0.3
    ranking = trust.rank_labels(np.array(labels), np.array(users), p_model, np.array(features))
    assert ranking.trust[6].score < 0.3 and ranking.trust[7].score < 0.3
    # with every account's vote weighted the same, the colluders' votes would keep the honest ones at 0.8
    assert min(ranking.trust[u].score for u in range(1, 6)) > 0.9
    assert ranking.suspicious[np.array(users) >= 6].all() and not ranking.suspicious[np.array(users) < 6].any()


def test_an_honest_new_style_the_model_disagrees_with_is_not_flagged():
    # A trusted account whose few drawings the model reads wrong (a style it does not know) is not flooded
    # into review; the same labels from an account that always labels against the model are.
    n = 200
    users = np.repeat([1, 2], n)
    labels = np.tile(np.arange(10), 2 * n // 10)
    p_model = np.full((2 * n, 10), 0.0)
    p_model[np.arange(2 * n), labels] = 1.0
    novel = np.arange(0, n, 20)  # 5% of account 1's drawings: the model is sure they are another digit
    p_model[novel] = np.eye(10)[(labels[novel] + 3) % 10]
    p_model[n:] = np.eye(10)[(labels[n:] + 3) % 10]  # account 2: every label against the model
    ranking = trust.rank_labels(labels, users, p_model)
    assert ranking.trust[1].score > 0.9 and ranking.trust[2].score < 0.1
    assert not ranking.suspicious[:n].any()
    assert ranking.suspicious[n:].all()


def test_the_ranking_refuses_labels_that_are_not_digits():
    with pytest.raises(ValueError, match="0-9"):
        trust.rank_labels(np.array([3, 10]), np.array([1, 1]), np.full((2, 10), 0.1))


# --- quarantine ---


def test_quarantined_labels_do_not_train_until_approved(tiny_training, active_model, alice, mallory, fallback_data):
    tiny_training.RECOGNIZER_REQUIRE_REVIEW = False
    tiny_training.RECOGNIZER_HOLDOUT_SHARE = 0.0
    draw(alice, fallback_data, honest_rows(fallback_data, 60))
    bad = draw(mallory, fallback_data, rows_of(fallback_data, 1, 30), label=7)
    run, _ = retraining.retrain_in_foreground()
    quarantined = set(Drawing.objects.quarantined().values_list("pk", flat=True))
    assert len(quarantined & {d.pk for d in bad}) >= 27
    assert run.data_counts["quarantined"] == len(quarantined)
    assert run.data_counts["quarantined_by_user"] == {str(mallory.pk): len(quarantined)}
    groups = candidate_estimator(run).train_groups_
    assert (groups == mallory.pk).sum() == 30 - len(quarantined)  # only what the ranking did not flag
    assert not set(Drawing.objects.trusted().values_list("pk", flat=True)) & quarantined

    Drawing.objects.filter(pk__in=quarantined).update(status=Drawing.Status.APPROVED)  # staff vouch for them
    assert set(Drawing.objects.trusted().values_list("pk", flat=True)) >= quarantined
    versions.activate(active_model)
    run, _ = retraining.retrain_in_foreground()
    first = run.decision["attempts"][0]["candidate"]  # approved 1 -> 7 labels: the gate refuses them, see below
    assert (candidate_estimator(first).train_groups_ == mallory.pk).sum() == 30


def test_a_quarantined_account_still_personalises_its_own_answers(tiny_training, active_model, alice, mallory,
                                                                   fallback_data):
    draw(alice, fallback_data, honest_rows(fallback_data, 60))
    draw(mallory, fallback_data, rows_of(fallback_data, 1, 20), label=7)
    feedback.flag_suspicious_labels()
    assert Drawing.objects.quarantined().filter(user=mallory).exists()
    kwargs = serving.personal_predict_kwargs(mallory, serving.model_cache.get())
    assert len(kwargs["extra_y"]) == 20 and set(kwargs["extra_y"]) == {7}


# --- caps ---


def test_caps_limit_one_accounts_share_of_a_digit(tiny_training, alice, bob, carol, mallory, fallback_data,
                                                  monkeypatch):
    monkeypatch.setattr(feedback.training_data, "is_holdout_user", lambda user_id: user_id == alice.pk)
    tiny_training.RECOGNIZER_USER_CLASS_SHARE = 0.25
    tiny_training.RECOGNIZER_USER_CLASS_FLOOR = 5
    tiny_training.RECOGNIZER_HOLDOUT_MIN_PER_DIGIT = 4
    threes = rows_of(fallback_data, 3)
    draw(alice, fallback_data, threes[:4])
    draw(bob, fallback_data, threes[4:12])
    draw(carol, fallback_data, threes[12:20])
    many = draw(mallory, fallback_data, threes[20:40])
    Drawing.objects.filter(pk=many[-1].pk).update(status=Drawing.Status.APPROVED)  # staff-approved: always kept
    Drawing.objects.filter(pk__in=[d.pk for d in many[:10]]).update(suspicion_score=0.9)  # the most suspicious
    data = feedback.assemble_training_data()
    mine = data.train.ids[data.train.users == mallory.pk]
    cap = int(np.ceil(16 / 3))  # a quarter of the digit's training drawings: a third of the others'
    assert len(mine) == cap
    assert many[-1].pk in mine and not set(mine) & {d.pk for d in many[:10]}
    assert (data.train.users == bob.pk).sum() == 8 and (data.train.users == carol.pk).sum() == 8
    assert data.report["capped"] == {str(mallory.pk): {"3": 20 - cap}}


def test_the_floor_lets_a_small_sites_first_users_train():
    keep, dropped = trust.cap_accounts([1] * 12 + [2] * 2, [4] * 14, np.zeros(14), share=0.25, floor=30)
    assert keep.all() and not dropped


def _cap_accounts_row_by_row(users, labels, rank_key, exempt, share, floor):
    """cap_accounts as it was first written, one scan of every drawing per (digit, account): the reference."""
    keep, dropped, ratio = np.ones(len(users), bool), {}, share / (1.0 - share)
    for digit in np.unique(labels):
        of_digit = labels == digit
        total = int(of_digit.sum())
        for user in np.unique(users[of_digit]):
            mine = of_digit & (users == user)
            n = int(mine.sum())
            cap = max(floor, math.ceil(ratio * (total - n)))
            if n <= cap:
                continue
            free = np.flatnonzero(mine & ~exempt)
            room = max(0, cap - int((mine & exempt).sum()))
            order = free[np.lexsort((free, rank_key[free]))]
            keep[order[room:]] = False
            if len(order) > room:
                dropped.setdefault(int(user), {})[str(int(digit))] = int(len(order) - room)
    return keep, dropped


@pytest.mark.parametrize("seed", range(4))
def test_caps_are_those_of_a_scan_per_account_and_digit(seed):
    rng = np.random.default_rng(seed)
    n = 3000
    users = rng.choice([3, 5, 8, 13, 21, 34], size=n, p=[0.4, 0.3, 0.1, 0.1, 0.05, 0.05])
    labels = rng.integers(0, 10, n)
    rank_key = rng.choice([0.0, 0.1, 0.5, 0.9], size=n)  # ties: broken by row
    exempt = rng.random(n) < 0.05
    left_out = []
    for share, floor in ((0.25, 5), (0.1, 0), (0.4, 30)):
        got = trust.cap_accounts(users, labels, rank_key, exempt, share=share, floor=floor)
        want = _cap_accounts_row_by_row(users, labels, rank_key, exempt, share, floor)
        np.testing.assert_array_equal(got[0], want[0])
        assert got[1] == want[1] and list(got[1]) == list(want[1])
        left_out.append(int((~got[0]).sum()))
    assert left_out[0] > 0 and left_out[1] > left_out[0]  # the caps bite, harder for a smaller share


def test_low_trust_accounts_vote_with_less_weight():
    w = trust.vote_weights([1, 2, 3, 2], {1: 0.95, 2: 0.2}, 0.8, approved=[False, False, False, True])
    assert list(w) == pytest.approx([1.0, 0.25, 1.0, 1.0])


# --- the held-out set ---


def test_the_held_out_set_has_every_digit_users_drew(tiny_training, alice, bob, carol, fallback_data, monkeypatch):
    monkeypatch.setattr(feedback.training_data, "is_holdout_user", lambda user_id: user_id == alice.pk)
    tiny_training.RECOGNIZER_HOLDOUT_MIN_PER_DIGIT = 4
    for digit in range(5):
        draw(alice, fallback_data, rows_of(fallback_data, digit, 6))
    for digit in range(10):
        draw(bob, fallback_data, rows_of(fallback_data, digit, 6, start=6))
        if digit != 9:  # only bob drew 9s
            draw(carol, fallback_data, rows_of(fallback_data, digit, 6, start=12))
    data = feedback.assemble_training_data()
    held = data.holdout.by_label()
    assert set(held) == {str(d) for d in range(10)}
    assert all(held[str(d)] == 6 for d in range(5))  # alice's own, nobody else's
    assert all(held[str(d)] >= 4 for d in range(5, 9))  # one whole account's drawings of the digit
    assert 1 <= held["9"] < 6 and data.train.by_label()["9"] >= 3  # one account drew it: a share
    assert alice.pk not in set(data.train.users)  # a held-out user is never trained on
    for digit in range(5, 9):  # by user: each digit's held-out drawings are one account's
        assert len(set(data.holdout.users[data.holdout.labels == digit])) == 1
    assert set(data.report["holdout_filled"]) == {str(d) for d in range(5, 10)}


def test_a_low_trust_account_never_fills_the_held_out_set(tiny_training, alice, bob, mallory, fallback_data,
                                                          monkeypatch):
    monkeypatch.setattr(feedback.training_data, "is_holdout_user", lambda user_id: False)
    # mallory would be the first account the per-digit user split holds out for 2s, were she trusted
    accounts = sorted([alice, bob, mallory], key=lambda u: trust._digit_user_order(2, u.pk))
    low = accounts[0]
    for i, user in enumerate(accounts):
        draw(user, fallback_data, rows_of(fallback_data, 2, 10, start=10 * i))
    UserTrust.objects.create(user=low, score=0.1)
    data = feedback.assemble_training_data()
    assert len(data.holdout) and low.pk not in set(data.holdout.users)


# --- the gate ---


def figures(mnist, by_digit, holdout=None, holdout_by_digit=None, source="mnist"):
    return {"mnist_test": mnist, "mnist_test_by_digit": by_digit, "holdout": holdout,
            "holdout_by_digit": holdout_by_digit or {}, "test_set": source, "data_source": source}


def test_a_drop_in_one_digit_blocks_even_when_the_average_holds(settings):
    settings.RECOGNIZER_PROMOTION_TOLERANCE, settings.RECOGNIZER_DIGIT_TOLERANCE = 0.003, 0.02
    active = figures(0.970, {str(d): 0.97 for d in range(10)})
    same_average = {**{str(d): 0.9755 for d in range(10)}, "1": 0.92}  # 1s lose 5 points, the rest gain
    decision = promotion.gate(figures(0.970, same_average), active)
    assert not decision["promote"]
    assert decision["reasons"][0].startswith("MNIST test accuracy on 1s drops by 5.00 points")
    assert decision["failed"][0]["digit"] == "1"
    assert promotion.gate(figures(0.970, {**same_average, "1": 0.955}), active)["promote"]


def test_a_held_out_digit_blocks_only_beyond_tolerance_and_a_few_drawings(settings):
    settings.RECOGNIZER_HOLDOUT_DIGIT_TOLERANCE, settings.RECOGNIZER_HOLDOUT_DIGIT_MIN_LOST = 0.05, 2
    by_digit = {str(d): 0.97 for d in range(10)}
    active = figures(0.97, by_digit, 0.90, {"1": {"accuracy": 0.95, "n": 20}, "4": {"accuracy": 0.9, "n": 10}})
    one_lost = figures(0.97, by_digit, 0.90, {"1": {"accuracy": 0.90, "n": 20}, "4": {"accuracy": 0.9, "n": 10}})
    assert promotion.gate(one_lost, active)["promote"]  # one drawing of 20: noise
    targeted = figures(0.97, by_digit, 0.90, {"1": {"accuracy": 0.50, "n": 20}, "4": {"accuracy": 1.0, "n": 10}})
    decision = promotion.gate(targeted, active)
    assert not decision["promote"] and "held-out drawings accuracy on 1s" in decision["reasons"][0]
    assert decision["failed"][0]["lost"] == 9


def test_a_fallback_digits_candidate_never_replaces_an_mnist_model(settings):
    better = figures(0.99, {str(d): 0.99 for d in range(10)}, 0.99, source="sklearn-digits")
    decision = promotion.gate(better, figures(0.90, {str(d): 0.9 for d in range(10)}, 0.80, source="mnist"))
    assert not decision["promote"]
    assert decision["reasons"][0] == "the candidate trained on sklearn-digits cannot replace a model trained on mnist"
    upgrade = promotion.gate(figures(0.99, {}, source="mnist"), figures(0.5, {}, source="sklearn-digits"))
    assert upgrade["promote"]


def test_mnist_test_figures_are_compared_only_on_the_same_test_set():
    active = {**figures(0.99, {}), "test_set": "mnist"}
    candidate = {**figures(0.50, {}), "test_set": "sklearn-digits", "data_source": "mnist"}
    decision = promotion.gate(candidate, active)
    assert decision["promote"] and any("different test sets" in r for r in decision["reasons"])


def test_a_retrain_on_fallback_digits_never_replaces_an_mnist_model(tiny_training, active_model, alice, fallback_data):
    ModelVersion.objects.filter(pk=active_model.pk).update(data_source="mnist")
    draw(alice, fallback_data, honest_rows(fallback_data, 30))
    run, _ = retraining.retrain_in_foreground()
    assert run.status == "not_promoted"
    assert "cannot replace a model trained on mnist" in run.decision["reasons"][0]
    assert run.decision["retries"] == 0  # no account can fix that: not retried
    assert ModelVersion.objects.get(is_active=True).pk == active_model.pk


def test_a_gate_failure_retries_without_the_culprit_and_records_it(tiny_training, active_model, alice, bob, mallory,
                                                                   fallback_data, monkeypatch):
    # Staff approved mallory's batch by mistake (approved labels skip the quarantine and the caps): the
    # candidate reads the held-out user's 1s as 7s. The retry leaves mallory out and the honest drawings land.
    monkeypatch.setattr(feedback.training_data, "is_holdout_user", lambda user_id: user_id == alice.pk)
    ones = rows_of(fallback_data, 1)
    draw(alice, fallback_data, ones[:20])
    draw(bob, fallback_data, [i for i in range(120) if fallback_data.test_labels[i] != 1])
    draw(mallory, fallback_data, ones, label=7, status=Drawing.Status.APPROVED)
    run, _ = retraining.retrain_in_foreground()
    decision = run.decision
    assert run.status == "promoted", decision["reasons"]
    first, last = decision["attempts"]
    assert not first["promote"] and any("1s drops" in r for r in first["reasons"])
    assert last["promote"] and last["left_out"] == [mallory.pk]
    assert decision["retries"] == 1
    assert [c["user"] for c in decision["left_out"]] == [mallory.pk]
    assert decision["left_out"][0]["username"] == "mallory" and "1s" in decision["left_out"][0]["why"]
    assert run.data_counts["left_out_accounts"] == [mallory.pk]
    model = candidate_estimator(run)
    assert (model.train_groups_ == bob.pk).sum() > 0 and (model.train_groups_ == mallory.pk).sum() == 0
    assert ModelVersion.objects.get(is_active=True).pk == run.model_version_id == last["candidate"]


def test_without_the_retry_the_same_attack_freezes_learning(tiny_training, active_model, alice, bob, mallory,
                                                            fallback_data, monkeypatch):
    tiny_training.RECOGNIZER_GATE_RETRIES = 0
    monkeypatch.setattr(feedback.training_data, "is_holdout_user", lambda user_id: user_id == alice.pk)
    ones = rows_of(fallback_data, 1)
    draw(alice, fallback_data, ones[:20])
    draw(bob, fallback_data, [i for i in range(120) if fallback_data.test_labels[i] != 1])
    draw(mallory, fallback_data, ones, label=7, status=Drawing.Status.APPROVED)
    run, _ = retraining.retrain_in_foreground()
    assert run.status == "not_promoted" and run.decision["left_out"] == []


# --- strokes ---


def test_the_ranking_leaves_the_users_own_strokes_out(small_training_result):
    import copy

    from recognizer.ml.strokes import StrokeClassifier
    from tests.stroke_helpers import stroke_dataset

    _data, result = small_training_result
    estimator = copy.deepcopy(result.estimator)
    drawings, labels = stroke_dataset(per_digit=8)
    mine = np.flatnonzero(labels == 1)[:4]
    stroke_labels = labels.copy()
    stroke_labels[mine] = 7  # user 5's own strokes of 1, labelled 7, are in the stroke model
    groups = np.full(len(labels), -1)
    groups[mine] = 5
    estimator.attach_stroke_model(StrokeClassifier().fit(drawings, stroke_labels), stroke_weight=1.0)
    estimator.stroke_model_.train_groups_ = groups
    image = np.zeros((1, 28, 28), np.float32)
    query = [drawings[mine[0]]]
    p_own = trust.neighbour_probabilities(estimator, image, query)
    p_out = feedback.out_of_sample_probabilities(estimator, image, np.array([5]), strokes=query)
    assert p_own[0].argmax() == 7 and p_out[0].argmax() == 1


# --- the admin ---


@pytest.fixture
def admin_client_logged_in(client, django_user_model):
    client.force_login(django_user_model.objects.create_superuser("root", "root@example.com", "root-password-1"))
    return client


def test_the_admin_shows_trust_and_rejects_by_user(admin_client_logged_in, alice, mallory, fallback_data):
    UserTrust.objects.create(user=alice, score=0.97, n_labels=60, n_agree=55)
    UserTrust.objects.create(user=mallory, score=0.12, n_labels=30, n_disagree=29, n_flagged=28)
    kept = draw(alice, fallback_data, honest_rows(fallback_data, 3))
    bad = draw(mallory, fallback_data, honest_rows(fallback_data, 4, start=3), label=7)
    vouched = draw(mallory, fallback_data, [10], status=Drawing.Status.APPROVED)[0]
    Drawing.objects.filter(pk=bad[0].pk).update(suspicious=True)
    page = admin_client_logged_in.get(reverse("admin:recognizer_usertrust_changelist")).content.decode()
    assert "12% (low)" in page and "97%" in page
    assert page.index("mallory") < page.index("alice")  # lowest trust first
    listing = admin_client_logged_in.get(reverse("admin:recognizer_drawing_changelist")).content.decode()
    assert "12% (low)" in listing
    quarantined = admin_client_logged_in.get(reverse("admin:recognizer_drawing_changelist") + "?quarantined=yes")
    assert quarantined.status_code == 200 and f"/drawing/{bad[0].pk}/change/" in quarantined.content.decode()

    admin_client_logged_in.post(reverse("admin:recognizer_usertrust_changelist"),
                                {"action": "reject_pending", "_selected_action": [mallory.pk]})
    statuses = dict(Drawing.objects.values_list("pk", "status"))
    assert all(statuses[d.pk] == "rejected" for d in bad)
    assert statuses[vouched.pk] == "approved" and all(statuses[d.pk] == "pending" for d in kept)


def test_the_drawing_list_rejects_every_pending_label_of_the_selected_drawings_users(admin_client_logged_in, alice,
                                                                                    mallory, fallback_data):
    kept = draw(alice, fallback_data, honest_rows(fallback_data, 2))
    bad = draw(mallory, fallback_data, honest_rows(fallback_data, 5, start=2), label=7)
    admin_client_logged_in.post(reverse("admin:recognizer_drawing_changelist"),
                                {"action": "reject_users", "_selected_action": [bad[0].pk]})
    assert set(Drawing.objects.filter(user=mallory).values_list("status", flat=True)) == {"rejected"}
    assert set(Drawing.objects.filter(pk__in=[d.pk for d in kept]).values_list("status", flat=True)) == {"pending"}


def test_the_training_run_list_shows_who_was_left_out(admin_client_logged_in):
    from recognizer.models import TrainingRun

    TrainingRun.objects.create(trigger="staff", status="promoted", data_counts={"quarantined": 28},
                               decision={"left_out": [{"user": 9, "username": "mallory", "why": "held-out 1s"}]})
    page = admin_client_logged_in.get(reverse("admin:recognizer_trainingrun_changelist")).content.decode()
    assert "28 / mallory" in page
