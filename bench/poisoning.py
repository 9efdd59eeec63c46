"""Poisoning benchmark: one (or two colluding) bad accounts against the feedback loop.

Pendigits writers are split by writer: unseen writers (never drawn on the site: the figure), honest
users (replayed through the API: POST /api/v1/predict with image and strokes, then the true label),
and the writers whose digits the attacker draws. The attacker's account draws a digit (1, or 4) in
jittered copies (random rotation, scale and shear of real trajectories, so every drawing is new) and
labels every one as another digit (7, or 9). Then the retrain runs (the code of `manage.py retrain`).

Each scenario runs twice: without review (RECOGNIZER_REQUIRE_REVIEW off: the trust, quarantine, caps
and gate alone) and with review (on: staff re-rank, look at every flagged drawing and judge it right,
reject all pending labels of an account whose flagged labels were mostly wrong, then approve the rest
in bulk without looking, and retrain). Reported for the model serving after the run: unseen writers'
accuracy on the attacked digit and overall (and the change against the honest-only retrain), the
share of the honest users' gain kept, poisoned and honest labels flagged, how many poisoned drawings
the candidate trained on, and the gate's decision and retries.

    MNIST_DIR=/work/shared/data/mnist PENDIGITS_DIR=/work/shared/data/pendigits \\
        nice -n 10 .venv/bin/python -m bench.poisoning [--mnist-limit 20000] [--sizes 100,300,1000]
        [--attacks 1:7,4:9] [--review off,on] [--split-seed 0] [--pen-writers 0] [--quick]

It runs in a temporary directory with its own SQLite database and media; nothing else is touched.
"""

from __future__ import annotations

import argparse
import base64
import math
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from bench._common import data_dirs, log, retrain_site

warnings.filterwarnings("ignore", message="No directory at")  # whitenoise: no collectstatic in a benchmark


def configure(tmp: Path, mnist_limit: int, pen_writers: int) -> None:
    retrain_site(tmp, mnist_limit, pen_warm_start=bool(pen_writers), RECOGNIZER_USER_PREDICT_RATE="1000000/minute")


def jittered(digit, rng):
    """A new drawing of the same digit: the trajectory rotated, scaled and sheared a little."""
    from recognizer.ml import PenDigit

    a = np.radians(rng.uniform(-10, 10))
    sx, sy, shear = rng.uniform(0.85, 1.15), rng.uniform(0.85, 1.15), rng.uniform(-0.2, 0.2)
    M = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]) @ np.array([[sx, shear], [0, sy]])
    return PenDigit(writer=-1, label=digit.label, strokes=[s @ M.T for s in digit.strokes])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist-limit", type=int, default=20000, help="MNIST training digits (0 = all 60,000)")
    parser.add_argument("--sizes", default="100,300,1000", help="attacking drawings per scenario")
    parser.add_argument("--attacks", default="1:7,4:9", help="drawn digit:label given, comma-separated")
    parser.add_argument("--review", default="off,on", help="RECOGNIZER_REQUIRE_REVIEW settings to run")
    parser.add_argument("--collusion", type=int, default=300, help="drawings per account of two colluding accounts "
                                                                   "(first attack; 0 = skip)")
    parser.add_argument("--padded", type=int, default=300, help="an account that labels this many 1s as 7 among "
                                                                "700 honest labels (0 = skip)")
    parser.add_argument("--rubber-stamp", type=int, default=300,
                        help="review on, but staff approve this many 1 -> 7 labels without looking: only the gate "
                             "and its retry stand in the way (0 = skip)")
    parser.add_argument("--honest-writers", type=int, default=7)
    parser.add_argument("--unseen-writers", type=int, default=7)
    parser.add_argument("--attack-writers", type=int, default=4)
    parser.add_argument("--pen-writers", type=int, default=0,
                        help="the pen-data warm start on this many other writers (0 = off, the default)")
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="300 drawings, the first attack, no review, no extras")
    args = parser.parse_args(argv)
    _mnist_dir, pen_dir = data_dirs()
    if args.quick:
        args.sizes, args.attacks, args.review, args.collusion, args.padded, args.rubber_stamp = \
            "300", args.attacks.split(",")[0], "off", 0, 0, 0
    tmp = Path(tempfile.mkdtemp(prefix="digitsite-poisoning-bench-"))
    configure(tmp, args.mnist_limit, args.pen_writers)

    from django.conf import settings
    from django.contrib.auth import get_user_model
    from rest_framework.test import APIClient

    from recognizer import feedback, retraining, serving, training, versions
    from recognizer.ml import load_pendigits, render_png
    from recognizer.ml import warmstart as ml_warmstart
    from recognizer.ml.evaluate import render_canvas_images
    from recognizer.models import Drawing, ModelVersion, UserTrust

    User = get_user_model()
    digits = load_pendigits(pen_dir)
    writers = [int(w) for w in np.random.default_rng(args.split_seed).permutation(sorted({d.writer for d in digits}))]
    cut = np.cumsum([args.unseen_writers, args.honest_writers, args.attack_writers, args.pen_writers])
    unseen_w, honest_w, attack_w, pen_w = (set(writers[a:b]) for a, b in zip([0, *cut[:-1]], cut))
    if args.pen_writers:  # the warm start on its own writers only: none of the others is ever trained on
        original = ml_warmstart.pen_training_set
        ml_warmstart.pen_training_set = lambda path, **kw: original(path, writers=sorted(pen_w), **kw)
    settings.PENDIGITS_DIR = str(pen_dir) if args.pen_writers else ""  # no canvas metrics at every retrain
    print(f"Setup: MNIST {args.mnist_limit or 60000} training digits, cross-validation off, pen-data warm start "
          f"{'on ' + str(len(pen_w)) + ' writers' if args.pen_writers else 'off'}; writers (split seed "
          f"{args.split_seed}): {len(unseen_w)} unseen, {len(honest_w)} honest users, {len(attack_w)} whose digits "
          f"attackers draw. Held-out share {settings.RECOGNIZER_HOLDOUT_SHARE}, trust threshold "
          f"{settings.RECOGNIZER_TRUST_THRESHOLD}, class share cap {settings.RECOGNIZER_USER_CLASS_SHARE} "
          f"(floor {settings.RECOGNIZER_USER_CLASS_FLOOR}), gate retries {settings.RECOGNIZER_GATE_RETRIES}.")
    # The replayed drawings' answers do not change what trains: personalisation (the account's own drawings
    # searched at every prediction, re-read after every label) is off to keep the replay fast.
    settings.RECOGNIZER_PERSONAL_MAX_DRAWINGS = 0
    print("Replay: every drawing through POST /api/v1/predict (image and strokes) and /label; personalisation off.")
    if args.pen_writers:  # render the pen data before the timing starts
        training.pen_warm_start()

    t0 = time.perf_counter()
    base = training.train_new_model(limit=args.mnist_limit, activate=True, cv=False).version
    base_est = versions.load_estimator(base.file, base.sha256)
    log(f"base model v{base.pk} in {time.perf_counter() - t0:.0f} s")

    unseen = [d for d in digits if d.writer in unseen_w]
    X_unseen, y_unseen, _ = render_canvas_images(unseen, seed=1)
    S_unseen = [d.strokes for d in unseen]

    def serving_figures(version_id: int) -> dict:
        version = ModelVersion.objects.get(pk=version_id)
        est = versions.load_estimator(version.file, version.sha256)
        kw = {"strokes": S_unseen} if getattr(est, "reads_strokes", False) else {}
        pred = np.asarray(est.predict(X_unseen, **kw))
        out = {"overall": float((pred == y_unseen).mean()), "est": est}
        for src in range(10):
            rows = y_unseen == src
            out[src] = float((pred[rows] == src).mean())
            out[("as", src)] = np.bincount(pred[rows], minlength=10)
        return out

    def post(client, pen_digit, label, rng) -> int:
        png = base64.b64encode(render_png(pen_digit, rng)).decode()
        strokes = [[[float(x), float(y)] for x, y in s] for s in pen_digit.strokes]
        answer = client.post("/api/v1/predict", {"image": png, "strokes": strokes}, format="json")
        assert answer.status_code == 200, answer.content
        drawing = answer.json()["drawing"]
        labelled = client.post(f"/api/v1/drawings/{drawing}/label", {"label": int(label)}, format="json")
        assert labelled.status_code == 200, labelled.content
        return drawing

    def account(name: str):
        """A new account on the training side (a held-out account never trains: the harmless case)."""
        n = 0
        while True:
            user = User.objects.create_user(f"{name}-{n}", password="bench-password-1")
            if not feedback.is_holdout_user(user.pk):
                return user
            user.delete()
            n += 1

    # Honest users draw and label through the API, once.
    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    honest_ids = []
    honest_users = []
    for w in sorted(honest_w):
        user = User.objects.create_user(f"writer{w}", password="bench-password-1")
        honest_users.append(user.pk)
        client = APIClient()
        client.force_authenticate(user)
        honest_ids += [post(client, d, d.label, rng) for d in digits if d.writer == w]
    held = [u for u in honest_users if feedback.is_holdout_user(u)]
    log(f"{len(honest_ids)} honest drawings of {len(honest_users)} users through the API in "
        f"{time.perf_counter() - t0:.0f} s; held-out users: {held}")
    honest_ids = set(honest_ids)

    pools = {}

    def attack_drawings(src: int, n: int, seed: int):
        key = (src, n, seed)
        if key not in pools:
            sources = [d for d in digits if d.writer in attack_w and d.label == src]
            r = np.random.default_rng([seed, src])
            pools[key] = [jittered(sources[i % len(sources)], r) for i in r.permutation(max(n, len(sources)))[:n]]
        return pools[key]

    def reset() -> None:
        User.objects.filter(username__startswith="attacker").delete()
        Drawing.objects.update(status=Drawing.Status.PENDING, reviewer=None, reviewed_at=None, suspicious=False,
                               suspicion_score=None)
        UserTrust.objects.all().delete()
        versions.activate(base)
        serving.model_cache.clear()
        serving.personal_examples.clear()

    def staff_review(truth: dict) -> int:
        """Staff re-rank, judge every flagged drawing, reject the accounts caught, approve the rest unseen."""
        feedback.flag_suspicious_labels(base_est)
        flagged = list(Drawing.objects.filter(suspicious=True).values_list("pk", "user_id", "label"))
        wrong_by_user: dict[int, list[bool]] = {}
        for pk, user, label in flagged:
            ok = truth[pk] == label
            Drawing.objects.filter(pk=pk).update(status="approved" if ok else "rejected")
            wrong_by_user.setdefault(user, []).append(not ok)
        caught = [u for u, w in wrong_by_user.items() if sum(w) >= max(3, len(w) / 2)]
        Drawing.objects.filter(user_id__in=caught, status="pending", label__isnull=False).update(status="rejected")
        Drawing.objects.filter(status="pending", label__isnull=False).update(status="approved")
        return len(flagged)

    def run_scenario(name: str, review: bool, attackers: list[tuple[str, list, dict]], stamp: bool = False) -> dict:
        """attackers: (account name, the pen digits it draws, {digit drawn: label it gives}; others: the truth).
        `stamp`: staff approve every label without looking (review on)."""
        reset()
        settings.RECOGNIZER_REQUIRE_REVIEW = review
        truth = {pk: lab for pk, lab in Drawing.objects.filter(pk__in=honest_ids).values_list("pk", "label")}
        poison_ids, attacker_pks = set(), []
        r = np.random.default_rng(7)
        for acc_name, pen_digits, given in attackers:
            user = account(acc_name)
            attacker_pks.append(user.pk)
            client = APIClient()
            client.force_authenticate(user)
            for d in pen_digits:
                label = d.label if given is None or d.label not in given else given[d.label]
                pk = post(client, d, label, r)
                truth[pk] = d.label
                if label != d.label:
                    poison_ids.add(pk)
        # cleanlab alone on the same out-of-sample probabilities, for comparison
        ds = feedback.drawing_set(Drawing.objects.filter(label__isnull=False).order_by("id"))
        p = feedback.out_of_sample_probabilities(base_est, ds.images, ds.users, ds.strokes)
        cl = feedback.find_label_issues(ds.labels, p)
        cl_poison = np.isin(ds.ids, list(poison_ids))
        cl_honest = np.isin(ds.ids, list(honest_ids))
        if stamp:
            Drawing.objects.filter(label__isnull=False).update(status="approved")
            reviewed = 0
        else:
            reviewed = staff_review(truth) if review else None
        flagged_now = set(Drawing.objects.filter(suspicious=True).values_list("pk", flat=True)) if review else None
        t = time.perf_counter()
        run, _ = retraining.retrain_in_foreground()
        seconds = time.perf_counter() - t
        if run.status == "failed":
            print(run.error, file=sys.stderr)
            raise SystemExit(1)
        flagged = flagged_now if review else set(Drawing.objects.filter(suspicious=True).values_list("pk", flat=True))
        serving = ModelVersion.objects.get(is_active=True).pk
        fig = serving_figures(serving)
        d = run.decision
        left_out = {c["user"] for c in d.get("left_out", [])}
        trained_ids = set(feedback.assemble_training_data().without(left_out).train.ids.tolist())  # what it trained
        trained_poison = len(trained_ids & poison_ids)
        trust_scores = dict(UserTrust.objects.filter(user_id__in=attacker_pks).values_list("user_id", "score"))
        honest_trust = list(UserTrust.objects.filter(user_id__in=honest_users).values_list("score", flat=True))
        log(f"{name} (review {'on' if review else 'off'}): {run.status} in {seconds:.0f} s; "
            f"{'; '.join(d.get('reasons', []))[:300]}")
        return {
            "name": name, "review": review, "status": run.status, "fig": fig, "seconds": seconds,
            "poison": len(poison_ids), "honest": len(honest_ids),
            "poison_flagged": len(flagged & poison_ids), "honest_flagged": len(flagged & honest_ids),
            "cleanlab_poison": int(cl[cl_poison].sum()), "cleanlab_honest": int(cl[cl_honest].sum()),
            "trained_poison": trained_poison, "retries": d.get("retries", 0),
            "left_out": [c.get("username") for c in d.get("left_out", [])], "reviewed": reviewed,
            "attempts": [a["promote"] for a in d.get("attempts", [])],
            "first_reasons": d.get("attempts", [{}])[0].get("reasons", []),
            "attacker_trust": [trust_scores.get(u) for u in attacker_pks],
            "honest_trust_min": min(honest_trust) if honest_trust else None,
            "quarantined": run.data_counts.get("quarantined"),
            "attackers": attacker_pks, "stamp": stamp,
        }

    base_fig = serving_figures(base.pk)
    reviews = [{"off": False, "on": True}[r.strip()] for r in args.review.split(",")]
    attacks = [tuple(int(x) for x in a.split(":")) for a in args.attacks.split(",")]
    sizes = [int(s) for s in args.sizes.split(",")]
    results = []
    for review in reviews:
        ref = run_scenario("honest only", review, [])
        ref["ref"] = ref
        results.append(ref)
        for src, dst in attacks:
            for n in sizes:
                res = run_scenario(f"{src}->{dst} x{n}", review,
                                   [("attacker", attack_drawings(src, n, 0), {src: dst})])
                res.update(ref=ref, src=src, dst=dst)
                results.append(res)
        src, dst = attacks[0]
        if args.collusion:
            res = run_scenario(f"{src}->{dst} 2 accounts x{args.collusion}", review,
                               [("attacker-a", attack_drawings(src, args.collusion, 1), {src: dst}),
                                ("attacker-b", attack_drawings(src, args.collusion, 2), {src: dst})])
            res.update(ref=ref, src=src, dst=dst)
            results.append(res)
        if args.rubber_stamp and review:
            res = run_scenario(f"{src}->{dst} x{args.rubber_stamp} all approved", review,
                               [("attacker", attack_drawings(src, args.rubber_stamp, 5), {src: dst})], stamp=True)
            res.update(ref=ref, src=src, dst=dst)
            results.append(res)
        if args.padded and not review:
            others = [d for d in digits if d.writer in attack_w and d.label != src]
            honest_part = [others[i] for i in np.random.default_rng(3).permutation(len(others))[:700]]
            mixed = attack_drawings(src, args.padded, 4) + honest_part
            res = run_scenario(f"{src}->{dst} x{args.padded} + 700 true", review, [("attacker", mixed, {src: dst})])
            res.update(ref=ref, src=src, dst=dst)
            results.append(res)

    print()
    print(f"Unseen writers ({len(y_unseen)} drawings) before any retrain: {base_fig['overall'] * 100:.2f}%; "
          + ", ".join(f"{d}s {base_fig[d] * 100:.1f}%" for d in sorted({a for a, _ in attacks})))
    header = (f"{'scenario':<26}{'review':>7}{'target digit':>14}{'Δ':>7}{'overall':>9}{'Δ':>7}{'gain kept':>10}"
              f"{'poison flagged':>16}{'honest flagged':>16}{'cleanlab h/p':>14}{'poison trained':>15}"
              f"{'gate':>14}{'retries':>8}  left out")
    print(header)
    print("-" * (len(header) + 12))
    for r in results:
        ref, fig = r["ref"], r["fig"]
        src = r.get("src", attacks[0][0])
        gain = ref["fig"]["overall"] - base_fig["overall"]
        kept = (fig["overall"] - base_fig["overall"]) / gain if gain > 0 else math.nan
        pf = f"{r['poison_flagged']}/{r['poison']} {r['poison_flagged'] / r['poison'] * 100:.0f}%" if r["poison"] else "-"
        if r["stamp"]:
            pf = "(approved)"  # staff approved every label before the ranking: nothing left to flag
        hf = f"{r['honest_flagged']}/{r['honest']} {r['honest_flagged'] / r['honest'] * 100:.1f}%"
        cl = (f"{r['cleanlab_honest'] / r['honest'] * 100:.1f}/"
              + (f"{r['cleanlab_poison'] / r['poison'] * 100:.0f}%" if r["poison"] else "-"))
        print(f"{r['name']:<26}{'on' if r['review'] else 'off':>7}"
              f"{fig[src] * 100:>13.1f}%{(fig[src] - ref['fig'][src]) * 100:>+7.1f}"
              f"{fig['overall'] * 100:>8.2f}%{(fig['overall'] - ref['fig']['overall']) * 100:>+7.2f}"
              f"{kept * 100:>9.0f}%{pf:>16}{hf:>16}{cl:>14}{r['trained_poison'] if r['poison'] else '-':>15}"
              f"{r['status']:>14}{r['retries']:>8}  {', '.join(r['left_out']) or '-'}")
    print()
    print("Δ: points against the honest-only retrain of the same review setting (target digit: the digit attacked, "
          "1s in the honest rows). gain kept: (overall - before) / (honest-only - before). cleanlab h/p: "
          "cleanlab alone on the same out-of-sample probabilities, honest / poisoned labels it flags.")
    for r in results:
        if r["poison"]:
            print(f"  {r['name']} (review {'on' if r['review'] else 'off'}): attacker trust "
                  f"{', '.join('-' if t is None else f'{t:.2f}' for t in r['attacker_trust'])}, lowest honest trust "
                  f"{r['honest_trust_min']:.2f}, quarantined {r['quarantined']}, unseen {r['src']}s read as "
                  f"{r['dst']}: {int(r['fig'][('as', r['src'])][r['dst']])} (honest-only "
                  f"{int(r['ref']['fig'][('as', r['src'])][r['dst']])}), attempts {r['attempts']}, "
                  f"retrain {r['seconds']:.0f} s" + (f", staff reviewed {r['reviewed']}" if r["review"] else ""))
            if r["retries"]:
                print(f"    first candidate refused: {'; '.join(r['first_reasons'])}")
    print(f"Work directory {tmp}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.exit(main())
