"""Numbers benchmark: whole numbers of 2-6 digits written by writers left out of training, read by the
site's reader (recognizer.ml.numbers) with their pen strokes and from the image alone.

Leave-writers-out over the 30 pendigits writers (the folds of bench/unseen_writers.py): each fold's model
is the default recipe (MNIST plus the other writers' trajectories replayed as canvas drawings, image k-NN
fused with the stroke k-NN) and reads numbers made only of the fold's test writers' digits. A number takes
its digits from one writer, one pen width and one digit height (as a person writes a number), its strokes
placed left to right as people write numbers:

- spaced:      ink gaps of 10-40 % of the digit height;
- tight:       ink gaps of -5 to +10 %;
- touching:    the ink of neighbours touches or overlaps by up to a pen width;
- overlapping: the next digit starts over the end of the last (its pen line 8-25 % of the height back);
- late stroke: tight or spaced, and the last stroke of a two-stroke 4, 5 or 7 (its bar) drawn after the
               next digit.

The image is drawn from those strokes like a browser canvas (transparent, black, round pen). Reported per
placement: whole numbers read right, numbers split into the right count of digits, digits read right at
their place (a number split wrong counts all its digits wrong), the same among the numbers split right, and
the same digits each drawn alone on their own canvas (the ceiling), with strokes and from
the image alone. Then the median decode-to-answer time of a 4-digit number next to a single digit's, both
with strokes, one BLAS thread, measured side by side.

Usage (data dirs from the environment):
    MNIST_DIR=... PENDIGITS_DIR=... .venv/bin/python -m bench.numbers [--folds 5] [--per-cell 40]
        [--mnist-limit N] [--tune]

--tune reads numbers made with another seed once per fold and chooses the lattice's weights
(recognizer.ml.numbers.ReadingParams) by coordinate ascent over all folds' numbers together.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import itertools
import statistics
import time

import numpy as np
from PIL import Image

from bench._common import log
from bench.unseen_writers import fit, training_data, writer_folds
from digitsite.settings.groups import ServingSettings
from recognizer.ml import decode_image, preprocess_drawing
from recognizer.ml.common import is_unsure
from recognizer.ml.numbers import DEFAULT_PARAMS, pen_candidates, read_number
from recognizer.ml.preprocess import DrawingError, ink_array
from recognizer.ml.strokes import draw_strokes

HEIGHT = 280  # the canvas is as tall as the page's number pad
LENGTHS = (2, 3, 4, 5, 6)
# ink gap between neighbours, in digit heights (None: set by the pen, see place_digits)
PLACEMENTS = {"spaced": (0.10, 0.40), "tight": (-0.05, 0.10), "touching": None, "overlapping": None,
              "late stroke": (-0.05, 0.40)}
LATE = {4, 5, 7}
def unsure_digit(prediction) -> bool:
    """Unsure as the site says it with its default settings (recognizer.serving.is_uncertain)."""
    return is_unsure(prediction.probabilities, prediction.unfamiliar, ServingSettings.unsure_confidence,
                     ServingSettings.unsure_margin)


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def scaled(digit, height: float):
    """The digit's strokes scaled to ``height`` (aspect kept), its box's top-left at 0."""
    pts = np.concatenate(digit.strokes)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    scale = height / max(hi[1] - lo[1], 1e-6)
    if (hi[0] - lo[0]) * scale > 1.5 * height:  # a very flat scribble: keep it a digit's width
        scale = 1.5 * height / (hi[0] - lo[0])
    return [(s - lo) * scale for s in digit.strokes]


def place_digits(digits, placement: str, rng: np.random.Generator):
    """One writer's digits as a number: (strokes in time order, image, labels, each digit alone as
    (png, strokes), the digit each stroke belongs to)."""
    pen = float(rng.uniform(0.06, 0.09)) * HEIGHT
    h = float(rng.uniform(0.45, 0.70)) * HEIGHT
    margin = 0.15 * HEIGHT
    placed, x = [], margin
    for d in digits:
        strokes = scaled(d, h * float(rng.uniform(0.95, 1.05)))
        width = max(float(np.concatenate(strokes)[:, 0].max()), 1.0)
        dy = HEIGHT / 2 - h / 2 + float(rng.uniform(-0.08, 0.08)) * h
        placed.append([s + (x, dy) for s in strokes])
        if placement == "touching":
            gap = float(rng.uniform(0.2, 1.0)) * pen  # pen lines this close: the inks touch
        elif placement == "overlapping":
            gap = -float(rng.uniform(0.08, 0.25)) * h
        else:
            gap = float(rng.uniform(*PLACEMENTS[placement])) * h + pen
        x = x + width + gap
    order = [[(k, s) for s in p] for k, p in enumerate(placed)]
    if placement == "late stroke":
        order = late_strokes(order, [d.label for d in digits])
    strokes = [s for digit in order for _k, s in digit]
    digit_of = [k for digit in order for k, _s in digit]
    right = max(float(s[:, 0].max()) for s in strokes)
    width = int(np.ceil(right + margin))
    image = draw_strokes(strokes, width, HEIGHT, pen)
    alone = []
    for p in placed:
        lo = np.concatenate(p).min(axis=0) - (margin, margin)
        shifted = [s - lo for s in p]
        size = int(np.ceil(max(float(np.concatenate(shifted).max()) + margin, HEIGHT)))
        alone.append((png(draw_strokes(shifted, size, size, pen)), shifted))
    return strokes, image, [d.label for d in digits], alone, digit_of


def late_strokes(order, labels):
    """The strokes of each digit in the order drawn, a two-stroke 4, 5 or 7's last stroke after the next digit."""
    for k in range(len(order) - 2, -1, -1):
        if labels[k] in LATE and len(order[k]) >= 2:
            order[k + 1] = order[k + 1] + [order[k].pop()]
    return order


def make_numbers(digits, writers, placement: str, per_cell: int, rng: np.random.Generator):
    by_writer = {w: [d for d in digits if d.writer == w] for w in writers}
    late = {w: [d for d in ds if d.label in LATE and len(d.strokes) >= 2] for w, ds in by_writer.items()}
    late_ids = {w: {id(d) for d in ds} for w, ds in late.items()}
    out = []
    for n in LENGTHS:
        for _ in range(per_cell):
            pool = [w for w in writers if late[w]] if placement == "late stroke" else list(writers)
            w = int(rng.choice(pool))
            picks = [by_writer[w][i] for i in rng.choice(len(by_writer[w]), size=n, replace=False)]
            if placement == "late stroke" and not any(id(d) in late_ids[w] for d in picks[:-1]):
                picks[int(rng.integers(n - 1))] = late[w][int(rng.integers(len(late[w])))]
            out.append(place_digits(picks, placement, rng))
    return out


def read(estimator, image, strokes, params):
    try:
        return read_number(image, strokes, estimator, params)
    except DrawingError:
        return None


def score_numbers(estimator, numbers, params=DEFAULT_PARAMS, image_only: bool = True) -> dict:
    """Counts over ``numbers``: with strokes, and (``image_only``) from the image alone. With strokes also how
    the doubt is placed: right numbers called unsure, wrong ones called unsure, wrong ones whose second
    reading is right."""
    c = dict.fromkeys(["numbers", "digits", "s_whole", "s_split", "s_digit", "s_split_digits", "s_alone", "i_whole",
                       "i_split", "i_digit", "i_split_digits", "i_alone", "s_unsure_right", "s_unsure_wrong",
                       "s_alternative_right"], 0)
    for strokes, image, labels, _alone, _digit_of in numbers:
        c["numbers"] += 1
        c["digits"] += len(labels)
        for key, s in (("s", strokes), ("i", None)):
            if key == "i" and not image_only:
                continue
            r = read(estimator, image, s, params)
            got = [d.prediction.digit for d in r.digits] if r is not None else []
            right = len(got) == len(labels) and got == list(labels)
            if len(got) == len(labels):
                c[f"{key}_split"] += 1
                c[f"{key}_digit"] += sum(int(g == t) for g, t in zip(got, labels))
                c[f"{key}_split_digits"] += len(labels)
                c[f"{key}_whole"] += int(right)
            if key == "s" and r is not None:
                unsure = r.segmentation_uncertain or any(unsure_digit(d.prediction) for d in r.digits)
                c["s_unsure_right" if right else "s_unsure_wrong"] += int(unsure)
                c["s_alternative_right"] += int(not right and r.alternative == "".join(map(str, labels)))
    return c


def score_alone(estimator, numbers) -> tuple[int, int]:
    """Digits right each drawn alone: (with strokes, image only)."""
    images, strokes, labels = [], [], []
    for _s, _img, ys, alone, _digit_of in numbers:
        for (b, s), y in zip(alone, ys):
            images.append(preprocess_drawing(b))
            strokes.append(s)
            labels.append(y)
    X, y = np.stack(images), np.array(labels)
    with_strokes = int((estimator.predict(X, strokes=strokes) == y).sum())
    return with_strokes, int((estimator.predict(X) == y).sum())


def latency(estimator, numbers, singles, n: int = 200) -> dict:
    """Median ms from PNG bytes to an answer: a 4-digit number and a single digit, both with strokes."""
    from threadpoolctl import threadpool_limits

    fours = [(png(img), s) for s, img, labels, _a, _d in numbers if len(labels) == 4][:n]
    ones = singles[:n]
    times = {"single digit": [], "4-digit number": []}
    with threadpool_limits(limits=1):
        for (b1, s1), (b4, s4) in zip(itertools.cycle(ones), fours * 3):
            t = time.perf_counter()
            estimator.predict_one(preprocess_drawing(b1), strokes=s1)
            times["single digit"].append(time.perf_counter() - t)
            t = time.perf_counter()
            read_number(decode_image(b4), s4, estimator)
            times["4-digit number"].append(time.perf_counter() - t)
    return {k: 1000 * statistics.median(v[20:]) for k, v in times.items()}


def table(rows: dict[str, dict]) -> str:
    cols = [("whole, strokes", "s_whole"), ("split, strokes", "s_split"), ("digit, strokes", "s_digit"),
            ("digit|split, strokes", "s_digit/split"), ("alone, strokes", "s_alone"), ("whole, image", "i_whole"),
            ("split, image", "i_split"), ("digit, image", "i_digit"), ("alone, image", "i_alone")]
    lines = [["placement", "numbers"] + [c for c, _k in cols]]
    for name, c in rows.items():
        vals = [name, str(c["numbers"])]
        for _label, k in cols:
            if k.endswith("/split"):  # digits right among the numbers split right
                share = c[k.split("/")[0]] / max(c[k.replace("digit/split", "split_digits")], 1)
            else:
                share = c[k] / max(c["digits"] if k.endswith(("digit", "alone")) else c["numbers"], 1)
            vals.append(f"{100 * share:.2f}%")
        lines.append(vals)
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    text = ["  ".join(v.ljust(widths[i]) if i == 0 else v.rjust(widths[i]) for i, v in enumerate(line))
            for line in lines]
    text.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(text)


def add(total: dict, c: dict) -> None:
    for k, v in c.items():
        total[k] = total.get(k, 0) + v


# Bounds wide enough that --tune can try any setting of TUNE_GRID on the candidates read once.
WIDE = dataclasses.replace(DEFAULT_PARAMS, sure_gap=0.4, max_pieces=4, max_tall_pieces=4, max_group_width=2.0,
                           max_shape_penalty=float("inf"))
TUNE_GRID = {
    "gap_centre": [-0.1, -0.05, 0.0, 0.05], "gap_scale": [0.1, 0.15, 0.2, 0.3], "sure_gap": [0.2, 0.3, 0.4],
    "distance_weight": [0.0, 1.0, 2.0, 4.0, 8.0], "stroke_distance_weight": [0.0, 1.0, 2.0, 4.0, 8.0],
    "max_width": [0.7, 0.8, 0.9, 1.0], "width_weight": [0.0, 1.0, 2.0, 4.0], "min_size": [0.5, 0.6, 0.7],
    "size_weight": [6.0, 12.0, 24.0], "max_pieces": [3, 4], "max_tall_pieces": [2, 3],
    "max_group_width": [1.4, 1.6, 2.0], "max_shape_penalty": [2.0, 3.0, 5.0, float("inf")],
}


def tune(read_numbers: list, rounds: int = 2) -> None:
    """Coordinate ascent over TUNE_GRID: each weight in turn set to the value that reads the most whole numbers
    right, the others kept, ``rounds`` times over. ``read_numbers``: (PenCandidates read with WIDE, the truth)."""

    def whole(params) -> float:
        right = 0
        for candidates, truth in read_numbers:
            paths = candidates.paths(params) if candidates is not None else []
            right += int(bool(paths) and paths[0].number == truth)
        return 100 * right / len(read_numbers)

    params = DEFAULT_PARAMS
    print(f"\n{len(read_numbers)} numbers, whole numbers read right with strokes: defaults {whole(params):.2f}%")
    for r in range(rounds):
        for name, values in TUNE_GRID.items():
            scored = [(whole(dataclasses.replace(params, **{name: v})), v) for v in values]
            best = max(scored, key=lambda sv: (sv[0], sv[1] == getattr(params, name)))  # ties keep the current value
            params = dataclasses.replace(params, **{name: best[1]})
            print(f"round {r + 1}  {name:24s} " + "  ".join(f"{v}: {a:.2f}%" for a, v in scored) + f"  -> {best[1]}")
    print(f"\nchosen: {params}\nwhole numbers read right: {whole(params):.2f}%")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--per-cell", type=int, default=40, help="numbers per placement, length and fold")
    ap.add_argument("--mnist-limit", type=int, default=0, help="train on the first N MNIST digits (quick runs)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tune", action="store_true",
                    help="choose the lattice's weights by coordinate ascent on numbers of another seed (no table)")
    ap.add_argument("--latency-only", action="store_true",
                    help="train the first fold's model and time decode-to-answer only (on a quiet machine)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    _data, (Xm, ym), digits, pen = training_data(args.mnist_limit)
    folds = writer_folds({d.writer for d in digits}, args.folds, args.seed)
    rng = np.random.default_rng(args.seed + 1000 if args.tune else args.seed)  # tune on other numbers
    if args.latency_only:
        estimator = fit((Xm, ym), pen, np.flatnonzero(~np.isin(pen.writers, folds[0]))).estimator
        print_latency(estimator, [d for d in digits if d.writer in set(folds[0])], folds[0], rng)
        return 0
    rows: dict[str, dict] = {}
    read_numbers: list = []  # --tune: each number's candidates read once, and its truth
    estimator = None
    for fi, test_w in enumerate(folds):
        log(f"fold {fi + 1}/{len(folds)}: training without writers {test_w}")
        estimator = fit((Xm, ym), pen, np.flatnonzero(~np.isin(pen.writers, test_w))).estimator
        test_digits = [d for d in digits if d.writer in set(test_w)]
        for placement in PLACEMENTS:
            numbers = make_numbers(test_digits, test_w, placement, args.per_cell, rng)
            if args.tune:
                read_numbers += [(pen_candidates(ink_array(image), strokes, estimator, WIDE),
                                  "".join(map(str, labels))) for strokes, image, labels, _a, _d in numbers]
                continue
            c = score_numbers(estimator, numbers)
            c["s_alone"], c["i_alone"] = score_alone(estimator, numbers)
            add(rows.setdefault(placement, {}), c)
        log(f"  {time.perf_counter() - t0:.0f} s so far")
    if args.tune:
        tune(read_numbers)
        return 0
    total: dict = {}
    touch: dict = {}
    for name, c in rows.items():
        add(total, c)
        if name in ("touching", "overlapping"):
            add(touch, c)
    rows["touching or overlapping"] = touch
    rows["all"] = total
    print(f"\nNumbers of {LENGTHS[0]}-{LENGTHS[-1]} digits by unseen writers: leave-writers-out, {len(folds)} folds, "
          f"{args.per_cell} numbers per placement, length and fold\n")
    print(table(rows))
    wrong = total["numbers"] - total["s_whole"]
    print(f"\nWith strokes, the doubt: right numbers called unsure {100 * total['s_unsure_right'] / total['s_whole']:.1f}%, "
          f"wrong ones called unsure {100 * total['s_unsure_wrong'] / max(wrong, 1):.1f}% ({wrong} wrong), "
          f"wrong ones whose second reading is right {100 * total['s_alternative_right'] / max(wrong, 1):.1f}%")
    print_latency(estimator, [d for d in digits if d.writer in set(folds[-1])], folds[-1], rng)
    log(f"done in {time.perf_counter() - t0:.0f} s")
    return 0


def print_latency(estimator, digits, writers, rng) -> None:
    """The median decode-to-answer time of a 4-digit number next to a single digit's (the digits of numbers drawn
    alone), the same writers', interleaved."""
    singles = [a for n in make_numbers(digits, writers, "spaced", 20, rng) for a in n[3]]  # (png, strokes)
    lat = latency(estimator, make_numbers(digits, writers, "tight", 60, rng), singles)
    print("\nDecode to answer (PNG bytes and strokes to an answer), median, one BLAS thread: "
          f"single digit {lat['single digit']:.2f} ms, 4-digit number {lat['4-digit number']:.2f} ms "
          f"({lat['4-digit number'] / lat['single digit']:.2f}x)")


if __name__ == "__main__":
    raise SystemExit(main())
