"""The promotion gate: the figures a candidate and the active model are compared on (MNIST test and held-out
users, overall and per digit), the decision, and, after a refusal, which accounts drive it."""

from __future__ import annotations

import hashlib

import numpy as np
from django.conf import settings

from recognizer import trust
from recognizer.feedback import DrawingSet
from recognizer.ml.evaluate import evaluate

# Which training data a model's figures can be trusted against: a candidate trained on the offline
# fallback digits never replaces a model trained on MNIST, whatever its figures say.
DATA_SOURCE_RANK = {"mnist": 2, "sklearn-digits": 1}


def _source_rank(source) -> int:
    return DATA_SOURCE_RANK.get(str(source or ""), 0)


def _digit_value(figures: dict, check: str, digit: str | None = None):
    if check == "mnist_test":
        return figures.get("mnist_test")
    if check == "holdout":
        return figures.get("holdout")
    if check == "mnist_test_digit":
        return (figures.get("mnist_test_by_digit") or {}).get(digit)
    if check == "holdout_digit":
        entry = (figures.get("holdout_by_digit") or {}).get(digit)
        return None if entry is None else entry["accuracy"]
    return None


def gate(candidate: dict, active: dict | None) -> dict:
    """Promote unless the candidate is worse than the active model beyond a tolerance anywhere it is measured.

    Checks, in order: the training data (a model trained on the fallback digits never replaces one
    trained on MNIST); MNIST test accuracy, overall and for each digit (only when both figures are on the
    same test set); held-out users' accuracy, overall and for each digit (a digit blocks only when it also
    loses RECOGNIZER_HOLDOUT_DIGIT_MIN_LOST drawings: a few drawings are noisy). One digit dropping blocks
    even when the average holds: that is what a targeted attack does. `failed` lists each failing check
    with how far beyond its tolerance it is (`excess`), which the retry measures accounts against.
    """
    if active is None:
        return {"promote": True, "reasons": ["no model was active"], "failed": []}
    failed, notes = [], []

    def check(name, cand_value, act_value, tolerance, digit=None, n=None):
        if cand_value is None or act_value is None:
            return
        drop = act_value - cand_value
        if drop <= tolerance + 1e-12:
            return
        lost = None if n is None else round(drop * n)
        if lost is not None and lost < settings.RECOGNIZER_HOLDOUT_DIGIT_MIN_LOST:
            return
        what = {"mnist_test": "MNIST test accuracy", "holdout": "held-out drawings accuracy",
                "mnist_test_digit": f"MNIST test accuracy on {digit}s",
                "holdout_digit": f"held-out drawings accuracy on {digit}s"}[name]
        reason = f"{what} drops by {drop * 100:.2f} points (tolerance {tolerance * 100:.2f})"
        if name.endswith("_digit"):
            reason += f": {act_value * 100:.1f}% -> {cand_value * 100:.1f}%"
        if lost is not None:
            reason += f", {lost} of {n} drawings"
        failed.append({"check": name, "digit": digit, "drop": drop, "tolerance": tolerance,
                       "excess": drop - tolerance, "lost": lost, "reason": reason})

    c_src, a_src = candidate.get("data_source"), active.get("data_source")
    if _source_rank(c_src) < _source_rank(a_src):
        failed.append({"check": "data_source", "digit": None, "excess": 1.0,
                       "reason": f"the candidate trained on {c_src!s} cannot replace a model trained on {a_src!s}"})
    if candidate.get("mnist_test") is None or active.get("mnist_test") is None:
        notes.append("no MNIST test figures of both models to compare")
    elif candidate.get("test_set") != active.get("test_set"):
        notes.append(f"MNIST test figures are on different test sets ({candidate.get('test_set')} and "
                     f"{active.get('test_set')}): not compared")
    else:
        check("mnist_test", candidate["mnist_test"], active["mnist_test"], settings.RECOGNIZER_PROMOTION_TOLERANCE)
        a_digits = active.get("mnist_test_by_digit") or {}
        for digit, value in sorted((candidate.get("mnist_test_by_digit") or {}).items()):
            check("mnist_test_digit", value, a_digits.get(digit), settings.RECOGNIZER_DIGIT_TOLERANCE, digit)
    if candidate.get("holdout") is None or active.get("holdout") is None:
        notes.append("no held-out user drawings to compare on")
    else:
        check("holdout", candidate["holdout"], active["holdout"], settings.RECOGNIZER_HOLDOUT_TOLERANCE)
        a_digits = active.get("holdout_by_digit") or {}
        for digit, entry in sorted((candidate.get("holdout_by_digit") or {}).items()):
            other = a_digits.get(digit)
            if other is not None and other["n"] == entry["n"]:
                check("holdout_digit", entry["accuracy"], other["accuracy"],
                      settings.RECOGNIZER_HOLDOUT_DIGIT_TOLERANCE, digit, entry["n"])
    promote = not failed
    reasons = [f["reason"] for f in failed] + notes
    if promote:
        reasons.append("not worse than the active model beyond the tolerance")
    return {"promote": promote, "reasons": reasons, "failed": failed}


def _accuracy_figures(pred: np.ndarray, y: np.ndarray) -> tuple[float, dict]:
    pred, y = np.asarray(pred, np.int64), np.asarray(y, np.int64)
    by_digit = {}
    for digit in np.unique(y):
        rows = y == digit
        by_digit[str(int(digit))] = {"accuracy": float((pred[rows] == digit).mean()), "n": int(rows.sum())}
    return float((pred == y).mean()), by_digit


def gate_figures(estimator, data, holdout: DrawingSet, mnist_metrics: dict | None = None, data_source=None,
             cache: dict | None = None) -> dict:
    """The gate's figures: MNIST test accuracy overall and per digit (`mnist_metrics` when training
    already measured it; `cache` keeps the active model's between attempts), and the held-out drawings'."""
    key = ("mnist", data.source)
    if mnist_metrics is None and cache is not None and key in cache:
        mnist_metrics = cache[key]
    if mnist_metrics is None or "per_digit" not in mnist_metrics:
        mnist_metrics = evaluate(estimator, data.test_images / 255.0, data.test_labels)
    if cache is not None:
        cache[key] = mnist_metrics
    present = {int(d) for d in np.unique(data.test_labels)}
    out = {"data_source": data_source, "test_set": data.source, "mnist_test": mnist_metrics["accuracy"],
           "mnist_test_by_digit": {str(d): float(v) for d, v in enumerate(mnist_metrics["per_digit"]) if d in present},
           "holdout": None, "holdout_by_digit": {}}
    if len(holdout):
        # a model that reads strokes is judged on what it serves: the held-out drawings' strokes too
        kw = {"strokes": holdout.strokes} if getattr(estimator, "reads_strokes", False) and holdout.strokes else {}
        pred = estimator.predict(holdout.images, **kw)
        out["holdout"], out["holdout_by_digit"] = _accuracy_figures(pred, holdout.labels)
    return out


def _badness(decision: dict) -> float:
    return float(sum(f["excess"] for f in decision["failed"] if f["check"] != "data_source"))


def _describe(check: dict, before: dict, after: dict, active: dict) -> str:
    digit = check.get("digit")
    name = {"mnist_test": "MNIST test", "holdout": "held-out drawings", "mnist_test_digit": f"MNIST test {digit}s",
            "holdout_digit": f"held-out {digit}s"}[check["check"]]
    values = [_digit_value(f, check["check"], digit) for f in (before, after, active)]
    return f"{name}: {values[0] * 100:.1f}% -> {values[1] * 100:.1f}% without it (active {values[2] * 100:.1f}%)"


def find_culprits(estimator, data, holdout: DrawingSet, candidate: dict, active: dict, scores: dict,
                  train_users) -> tuple[list[dict], dict]:
    """(the accounts to leave out, how they were measured) after the gate refused `candidate`.

    A k-NN is measured without training again: for each account whose drawings are among the neighbours
    of the evaluation drawings the candidate gets wrong in the failing checks, the figures as if it had
    not been trained on (trust.LeaveOutEvaluator). Accounts are added greedily while each takes away at
    least a fifth of what is beyond the tolerances, at most RECOGNIZER_MAX_LEFT_OUT (two colluding
    accounts only show together). A model that is not a k-NN cannot be measured so: its low-trust
    accounts are left out.
    """
    decision = gate(candidate, active)
    if decision["promote"] or any(f["check"] == "data_source" for f in decision["failed"]):
        return [], {"measured": "nothing an account could fix"}
    threshold = settings.RECOGNIZER_TRUST_THRESHOLD
    if trust.image_part(estimator) is None:
        low = sorted(int(u) for u in np.unique(train_users) if scores.get(int(u), 1.0) < threshold)
        return ([{"user": u, "trust": scores.get(u), "why": "low trust; this model kind cannot measure one "
                  "account's effect without training again"} for u in low], {"measured": "trust only"})
    needs_mnist = any(f["check"].startswith("mnist") for f in decision["failed"])
    needs_holdout = any(f["check"].startswith("holdout") for f in decision["failed"]) and len(holdout)
    sets = {}
    if needs_mnist:
        sets["mnist"] = (data.test_images / 255.0, data.test_labels, None)
    if needs_holdout:
        sets["holdout"] = (holdout.images, holdout.labels, holdout.strokes)
    evaluator = trust.LeaveOutEvaluator(estimator, sets)

    def figures_without(excluded) -> dict:
        figs = dict(candidate)
        if "mnist" in sets:
            acc, by_digit = _accuracy_figures(evaluator.predictions("mnist", excluded), evaluator.labels("mnist"))
            figs.update(mnist_test=acc, mnist_test_by_digit={d: v["accuracy"] for d, v in by_digit.items()})
        if "holdout" in sets:
            figs["holdout"], figs["holdout_by_digit"] = _accuracy_figures(
                evaluator.predictions("holdout", excluded), evaluator.labels("holdout"))
        return figs

    base = figures_without(())
    base_decision = gate(base, active)
    implicated: dict[int, int] = {}
    for f in decision["failed"]:
        name = "mnist" if f["check"].startswith("mnist") else "holdout"
        y = evaluator.labels(name)
        wrong = evaluator.predictions(name) != y
        scope = wrong if f.get("digit") is None else wrong & (y == int(f["digit"]))
        for account, n in evaluator.accounts(name, scope).items():
            implicated[account] = implicated.get(account, 0) + n
    candidates = [a for a, _ in sorted(implicated.items(), key=lambda kv: (-kv[1], kv[0]))[:10]]
    current, current_figs, current_decision = _badness(base_decision), base, base_decision
    leave_one_out, chosen = {}, []
    for _ in range(settings.RECOGNIZER_MAX_LEFT_OUT):
        best = None
        for account in candidates:
            if account in [c["user"] for c in chosen]:
                continue
            figs = figures_without([c["user"] for c in chosen] + [account])
            d = gate(figs, active)
            bad = _badness(d)
            if not chosen:
                leave_one_out[str(account)] = round(bad, 6)
            if best is None or bad < best[1]:
                best = (account, bad, figs, d)
        if best is None or current <= 0 or best[1] > 0.8 * current:
            break
        account, bad, figs, d = best
        after = {(g["check"], g.get("digit")): g["excess"] for g in d["failed"]}
        improved = max(current_decision["failed"],
                       key=lambda f: f["excess"] - after.get((f["check"], f.get("digit")), 0.0))
        chosen.append({"user": int(account), "trust": scores.get(int(account)),
                       "why": _describe(improved, current_figs, figs, active),
                       "excess_before": round(current, 6), "excess_after": round(bad, 6)})
        current, current_figs, current_decision = bad, figs, d
        if current <= 0:
            break
    return chosen, {"measured": "leave-accounts-out k-NN figures", "implicated": {str(a): implicated[a] for a in candidates},
                    "leave_one_out_excess": leave_one_out, "excess": round(_badness(base_decision), 6)}


def judged_holdout(holdout: DrawingSet, limit: int) -> DrawingSet:
    """The held-out drawings the gate judges on: all of them up to `limit`, else at most limit/10 per digit.

    The same drawings for every candidate and the active model (picked by a hash of the drawing id, not at
    random), so figures compare; and the gate's cost stops growing with the drawings users made."""
    if not limit or len(holdout) <= limit:
        return holdout
    per_digit = max(1, limit // 10)
    order = np.array([hashlib.sha256(f"digitsite-gate:{int(i)}".encode()).digest()[:8] for i in holdout.ids])
    keep = np.zeros(len(holdout), bool)
    for digit in np.unique(holdout.labels):
        rows = np.flatnonzero(holdout.labels == digit)
        keep[rows[np.argsort(order[rows], kind="stable")[:per_digit]]] = True
    return holdout.pick(keep)
