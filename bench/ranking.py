"""Label ranking cost: a full ranking (every drawing searched) against the incremental one (only drawings
new to it searched, the rest read from LabelEvidence), at a few site sizes, and whether they decide alike.

A synthetic site: MNIST training digits are the users' drawings (distinct images, real variety), about
50 per account, 2% of the accounts labelling every drawing as its digit + 3; the model is a k-NN on
gradient features trained on MNIST test digits (never a drawing), as the site's default kind is. Per
size: the drawings, one ranking to fill the evidence, 1% new drawings (half by existing accounts, half by
new ones), then the incremental ranking and a full one (evidence deleted first) of the same data. With
--old, the ranking as it was before evidence was kept (every drawing decoded and searched, the peer
search in both rounds, nothing stored) is timed too.

    MNIST_DIR=/work/shared/data/mnist nice .venv/bin/python -m bench.ranking [--sizes 2000,10000,50000]
        [--model-train 10000] [--new-share 0.01] [--old]

It runs in a temporary directory with its own SQLite database; nothing else is touched.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench._common import log, throwaway_site


def configure(tmp: Path) -> None:
    throwaway_site(tmp, DJANGO_LOG_LEVEL="ERROR")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2000,10000,50000", help="labelled drawings on the site")
    parser.add_argument("--model-train", type=int, default=10000, help="MNIST test digits the k-NN trains on")
    parser.add_argument("--new-share", type=float, default=0.01, help="new drawings before the second ranking")
    parser.add_argument("--per-account", type=int, default=50)
    parser.add_argument("--old", action="store_true", help="also time the ranking as it was (no evidence kept)")
    args = parser.parse_args(argv)
    mnist_dir = os.environ.get("MNIST_DIR")
    if not mnist_dir:
        print("Set MNIST_DIR.", file=sys.stderr)
        return 2
    sizes = [int(s) for s in args.sizes.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="digitsite-ranking-bench-"))
    configure(tmp)

    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.db.models import Count
    from django.utils import timezone

    from recognizer import feedback, trust
    from recognizer.ml import mnist
    from recognizer.ml import preprocess as ml_preprocess
    from recognizer.ml.model import DigitClassifier
    from recognizer.models import Drawing, LabelEvidence, UserTrust

    User = get_user_model()
    data = mnist.load_mnist(mnist_dir)
    t = time.perf_counter()
    est = DigitClassifier(n_components=50).fit(data.test_images[: args.model_train] / 255.0,
                                               data.test_labels[: args.model_train])
    log(f"k-NN on {args.model_train} MNIST test digits in {time.perf_counter() - t:.0f} s")
    rng = np.random.default_rng(0)
    pool = rng.permutation(len(data.train_images))
    stamp = timezone.now()

    def add_drawings(rows: np.ndarray, users: np.ndarray, bad: set) -> None:
        truth = data.train_labels[rows].astype(int)
        Drawing.objects.bulk_create([
            Drawing(user_id=int(u), image="drawings/bench.png", preprocessed=ml_preprocess.to_uint8(data.train_images[r] / 255.0),
                    predicted_digit=int(y), confidence=0.5, probabilities=[], label=(int(y) + 3) % 10 if int(u) in bad else int(y),
                    labelled_at=stamp)
            for r, u, y in zip(rows, users, truth)], batch_size=2000)

    def accounts(n: int, prefix: str) -> list[int]:
        User.objects.bulk_create([User(username=f"{prefix}{i}", password="!") for i in range(n)], batch_size=2000)
        return list(User.objects.filter(username__startswith=prefix).order_by("id").values_list("pk", flat=True))

    def snapshot() -> dict:
        rows = list(Drawing.objects.not_rejected().order_by("id").values_list("id", "suspicious", "suspicion_score"))
        return {"ids": np.array([r[0] for r in rows]), "flags": np.array([r[1] for r in rows]),
                "scores": np.array([r[2] for r in rows], np.float64),
                "trust": dict(UserTrust.objects.values_list("user_id", "score"))}

    def old_ranking() -> np.ndarray:
        """The ranking before evidence was kept, without its writes: flags per drawing in id order."""
        ds = feedback.drawing_set(Drawing.objects.not_rejected().order_by("id"))
        rejected = dict(Drawing.objects.labelled().filter(status=Drawing.Status.REJECTED)
                        .values("user_id").annotate(n=Count("id")).values_list("user_id", "n"))
        features = est.transform(ds.images)
        p = feedback.out_of_sample_probabilities(est, ds.images, ds.users, ds.strokes, features=features)
        scores = {int(u): trust.prior_trust() for u in np.unique(ds.users)}
        for _ in range(2):
            votes, mass = trust.peer_votes(features, ds.users, ds.labels,
                                           np.array([scores[int(u)] for u in ds.users]), est.novelty_distance_)
            evidence = trust.combine_evidence(p, votes, mass)
            confident = evidence.max(axis=1) >= trust.CONFIDENT
            agree = (confident & (evidence.argmax(axis=1) == ds.labels)) | ds.approved
            disagree = confident & (evidence.argmax(axis=1) != ds.labels) & ~ds.approved
            for u in scores:
                mine = ds.users == u
                a, d = agree[mine].sum(), disagree[mine].sum() + rejected.get(u, 0)
                scores[u] = (trust.PRIOR_AGREE + a) / (trust.PRIOR_AGREE + trust.PRIOR_DISAGREE + a + d)
        s = trust.suspicion(evidence, ds.labels, np.array([scores[int(u)] for u in ds.users]))
        feedback.find_label_issues(ds.labels, p)
        return (s >= settings.RECOGNIZER_SUSPICION_THRESHOLD) & ~ds.approved

    results = []
    used = 0
    for size in sizes:
        Drawing.objects.all().delete()
        User.objects.all().delete()
        n_new = max(1, round(size * args.new_share))
        if used + size + n_new > len(pool):
            used = 0
        rows = pool[used: used + size + n_new]
        used += size + n_new
        users = np.array(accounts(max(1, size // args.per_account), f"s{size}-"))
        bad = set(rng.choice(users, max(1, len(users) // 50), replace=False).tolist())
        owners = rng.choice(users, size)
        add_drawings(rows[:size], owners, bad)
        t = time.perf_counter()
        first = feedback.flag_suspicious_labels(est)
        t_first = time.perf_counter() - t

        newcomers = np.array(accounts(max(1, n_new // 10), f"n{size}-"))
        new_owners = np.where(rng.random(n_new) < 0.5, rng.choice(users, n_new), rng.choice(newcomers, n_new))
        add_drawings(rows[size:], new_owners, bad)
        t = time.perf_counter()
        inc = feedback.flag_suspicious_labels(est)
        t_inc = time.perf_counter() - t
        a = snapshot()
        LabelEvidence.objects.all().delete()
        t = time.perf_counter()
        full = feedback.flag_suspicious_labels(est)
        t_full = time.perf_counter() - t
        b = snapshot()
        t_old, old_agree = None, None
        if args.old:
            t = time.perf_counter()
            old_flags = old_ranking()
            t_old = time.perf_counter() - t
            old_agree = int((old_flags == b["flags"]).sum())
        assert (a["ids"] == b["ids"]).all()
        res = {"size": size, "new": n_new, "accounts": len(users) + len(newcomers), "first": t_first, "inc": t_inc,
               "full": t_full, "old": t_old, "searched": inc["searched"], "entered": inc["lists_entered"],
               "flagged": int(b["flags"].sum()), "agree": int((a["flags"] == b["flags"]).sum()), "n": len(a["ids"]),
               "dscore": float(np.abs(a["scores"] - b["scores"]).max()),
               "dtrust": max(abs(a["trust"][u] - b["trust"][u]) for u in b["trust"]), "old_agree": old_agree,
               "db_mb": (tmp / "db.sqlite3").stat().st_size / 2**20}
        assert first["searched"] == size and full["reused"] == 0
        log(f"{size}: first {t_first:.1f} s, incremental {t_inc:.1f} s, full {t_full:.1f} s"
            + (f", old {t_old:.1f} s" if t_old is not None else ""))
        results.append(res)

    print(f"\nLabel ranking, k-NN (gradients, PCA 50) on {args.model_train} MNIST digits; synthetic site of MNIST "
          f"training digits, ~{args.per_account} drawings an account, 2% of the accounts labelling digit + 3; "
          f"then {args.new_share:.0%} new drawings (half by new accounts). Times are wall seconds on this machine.")
    header = (f"{'drawings':>9}{'new':>6}{'accounts':>9}{'full s':>8}{'incr. s':>8}{'speed-up':>9}"
              + (f"{'old s':>7}" if args.old else "")
              + f"{'searched':>9}{'lists entered':>14}{'flagged':>8}{'flags agree':>13}{'max Δ susp.':>12}"
              f"{'max Δ trust':>12}" + (f"{'old agree':>11}" if args.old else ""))
    print(header)
    print("-" * len(header))
    for r in results:
        print(f"{r['n']:>9}{r['new']:>6}{r['accounts']:>9}{r['full']:>8.1f}{r['inc']:>8.1f}{r['full'] / r['inc']:>8.1f}x"
              + (f"{r['old']:>7.1f}" if args.old else "")
              + f"{r['searched']:>9}{r['entered']:>14}{r['flagged']:>8}{r['agree']:>7}/{r['n']:<5}"
              f"{r['dscore']:>12.1e}{r['dtrust']:>12.1e}"
              + (f"{r['old_agree']:>6}/{r['n']:<5}" if args.old else ""))
    print("\nfull: every drawing decoded and searched (the evidence deleted first), the same code path; incr.: "
          "the same data after a ranking of all but the new drawings. flags agree / max Δ: incremental against "
          "full." + (" old: the ranking before evidence was kept (no writes), its flags against full's." if args.old
                      else ""))
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.exit(main())
