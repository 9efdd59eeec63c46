"""A retrain's attempts: train a candidate on the assembled data, gate it against the active model
(recognizer.promotion), and while it is refused train again without the accounts that drive the refusal,
up to RECOGNIZER_GATE_RETRIES times."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from django.conf import settings
from django.contrib.auth import get_user_model

from recognizer import feedback, promotion, training, versions
from recognizer.ml import store as ml_store
from recognizer.models import ModelVersion, TrainingRun
from recognizer.retraining.progress import Progress, RunReporter

logger = logging.getLogger(__name__)


def active_estimator() -> tuple[ModelVersion | None, object | None]:
    """(the active version, its estimator); the estimator is None when its file cannot be loaded."""
    active = ModelVersion.objects.filter(is_active=True).first()
    if active is None:
        return None, None
    try:
        return active, versions.load_estimator(active.file, active.sha256)
    except (ml_store.CorruptModelError, OSError) as exc:
        logger.error("The active model v%s cannot be loaded for comparison: %s", active.pk, exc)
        return active, None


@dataclass
class Attempts:
    """What the attempts of one retrain came to: the last candidate, its figures and the gate's decision, with
    the record of every attempt and the accounts left out along the way."""

    data: feedback.TrainingData  # the last attempt's: without the accounts left out
    outcome: training.TrainingOutcome | None = None
    candidate_figures: dict = field(default_factory=dict)
    active_figures: dict | None = None
    decision: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    attempts: list = field(default_factory=list)
    left_out: list = field(default_factory=list)
    culprit_search: dict = field(default_factory=dict)


@dataclass
class _Active:
    """The model the candidates are gated against, and its figures measured once for all attempts."""

    version: ModelVersion | None
    estimator: object | None
    cache: dict


def train_and_gate(run: TrainingRun, report: RunReporter, data: feedback.TrainingData, counts: dict,
                   active: ModelVersion | None, estimator: object | None) -> Attempts:
    """Train and gate candidates until one is promoted, the retries run out, or leaving accounts out cannot
    help; `counts` takes each candidate's training counts."""
    defaults = _kept_hyperparameters(active)
    gated = _Active(active, estimator, _stored_active_figures(active))
    retries = settings.RECOGNIZER_GATE_RETRIES
    state = Attempts(data)
    for attempt in range(retries + 1):
        span = (0.05, 0.8) if attempt == 0 else (0.8 + 0.12 * (attempt - 1) / retries, 0.8 + 0.12 * attempt / retries)
        judged = _attempt(run, report, span, state, defaults, gated, counts)
        if state.decision["promote"] or attempt == retries or state.active_figures is None:
            break
        report("measuring which accounts drive the failure", span[1])
        if not _leave_out_culprits(run, state, judged, attempt):
            break
    return state


def _kept_hyperparameters(active: ModelVersion | None) -> dict | None:
    """Without cross-validation (RECOGNIZER_RETRAIN_CV off): the active model's PCA size, k and weighting."""
    if settings.RECOGNIZER_RETRAIN_CV or active is None:
        return None
    hp = active.metadata.get("hyperparameters") or {}
    return {k: hp[src] for k, src in (("pca_components", "n_components"), ("k", "n_neighbors"),
                                      ("weights", "weights")) if src in hp}


def _stored_active_figures(active: ModelVersion | None) -> dict:
    """The active model's MNIST test figures as measured when it was trained: the same estimator on the same
    test set (when its data source is this run's) answers the same, so they are not measured again."""
    stored = ((active.metrics or {}).get("mnist_test") or {}) if active is not None else {}
    return {("mnist", active.data_source): stored} if "per_digit" in stored else {}


def _attempt(run: TrainingRun, report: RunReporter, span: tuple[float, float], state: Attempts,
             defaults: dict | None, active: _Active, counts: dict) -> feedback.DrawingSet:
    """Train one candidate on `state.data`, gate it and record it in `state` and on its version; returns the
    judged holdout it was gated on."""
    data = state.data
    outcome = _train_candidate(run, data, defaults, report.scaled(*span),
                               previous=(active.version, active.estimator) if active.estimator is not None else None)
    mnist, estimator = outcome.extra["data"], outcome.extra["estimator"]
    counts.update(outcome.version.metadata.get("counts", {}))
    report("evaluating the candidate", span[1])
    judged = promotion.judged_holdout(data.holdout, settings.RECOGNIZER_GATE_HOLDOUT_MAX)
    candidate_figures = promotion.gate_figures(estimator, mnist, judged, mnist_metrics=outcome.metrics["mnist_test"],
                                               data_source=outcome.version.data_source)
    report("evaluating the active model", span[1])
    if active.estimator is not None:
        active_figures = promotion.gate_figures(active.estimator, mnist, judged,
                                                data_source=active.version.data_source, cache=active.cache)
    else:  # none, or its file cannot be loaded: only what it was trained on can be compared
        active_figures = None if active.version is None else {"data_source": active.version.data_source}
    decision = promotion.gate(candidate_figures, active_figures)
    state.attempts.append({"candidate": outcome.version.pk, "promote": decision["promote"],
                           "reasons": decision["reasons"], "left_out": [c["user"] for c in state.left_out],
                           "user_train": len(data.train), "holdout": len(data.holdout), "holdout_judged": len(judged)})
    metrics = {**outcome.metrics, "holdout": candidate_figures["holdout"]}
    ModelVersion.objects.filter(pk=outcome.version.pk).update(
        metrics=metrics, metadata={**outcome.version.metadata, "gate": decision})
    state.outcome, state.decision, state.metrics = outcome, decision, metrics
    state.candidate_figures, state.active_figures = candidate_figures, active_figures
    return judged


def _leave_out_culprits(run: TrainingRun, state: Attempts, judged: feedback.DrawingSet, attempt: int) -> bool:
    """Find the accounts that drive the refusal and take them out of `state.data`; False when there are none
    (the reason is added to the decision: not retried)."""
    estimator, mnist = state.outcome.extra["estimator"], state.outcome.extra["data"]
    culprits, state.culprit_search = promotion.find_culprits(
        estimator, mnist, judged, state.candidate_figures, state.active_figures, state.data.trust,
        state.data.train.users)
    if not culprits:
        state.decision["reasons"].append("leaving accounts out does not fix this: not retried")
        return False
    names = dict(get_user_model().objects.filter(pk__in=[c["user"] for c in culprits])
                 .values_list("pk", "username"))
    for c in culprits:
        c["username"] = names.get(c["user"], "")
        c["attempt"] = attempt + 1
    state.left_out += culprits
    state.data = state.data.without([c["user"] for c in state.left_out])
    logger.warning("Run %s: candidate v%s refused (%s); training again without accounts %s", run.pk,
                   state.outcome.version.pk, "; ".join(state.decision["reasons"]), [c["user"] for c in culprits])
    return True


def _train_candidate(run: TrainingRun, data: feedback.TrainingData, defaults: dict | None, progress: Progress,
                     previous: tuple[ModelVersion, object] | None = None):
    """One candidate: MNIST (and the pen data) plus the training drawings, with their vote weights; in the
    active model's feature space when it can be kept (training.refit_in_space)."""
    train, holdout = data.train, data.holdout
    extra = training.ExtraTrainingData(
        images=train.images, labels=train.labels, groups=train.users, weight=data.weights, strokes=train.strokes,
        ids=train.ids,
        metadata={"training_run": run.pk, "user_drawings": {
            "train": len(train), "holdout": len(holdout), "weight": settings.RECOGNIZER_USER_SAMPLE_WEIGHT,
            "left_out_accounts": data.report.get("left_out_accounts", [])}},
    )
    return training.train_new_model(limit=settings.RECOGNIZER_TRAIN_LIMIT, activate=False,
                                    cv=settings.RECOGNIZER_RETRAIN_CV, progress=progress, extra=extra,
                                    defaults=defaults, kind=settings.RECOGNIZER_RETRAIN_KIND, previous=previous)
