"""Hand-made pen trajectories of the ten digits (unit box, y down), and jittered copies of them:
enough to train and test a stroke k-NN without any downloaded data."""

from __future__ import annotations

import numpy as np


def _arc(cx, cy, rx, ry, a0, a1, n=12):
    a = np.linspace(np.radians(a0), np.radians(a1), n)
    return np.stack([cx + rx * np.cos(a), cy + ry * np.sin(a)], axis=1)


def digit_template(digit: int) -> list[np.ndarray]:
    """Strokes of one digit, as a person draws it (angles in degrees, clockwise as y points down)."""
    def line(*pts):
        return np.array(pts, dtype=float)

    templates = {
        0: [_arc(0.5, 0.5, 0.3, 0.45, 270, -90, 24)],  # from the top, leftwards, as most people do
        1: [line((0.4, 0.15), (0.5, 0.05), (0.5, 0.95))],
        2: [np.concatenate([_arc(0.5, 0.3, 0.3, 0.25, 200, 370), line((0.78, 0.4), (0.2, 0.95), (0.85, 0.95))])],
        3: [np.concatenate([_arc(0.5, 0.28, 0.3, 0.23, 210, 450), _arc(0.5, 0.72, 0.32, 0.23, -90, 150)])],
        4: [line((0.6, 0.05), (0.15, 0.65), (0.85, 0.65)), line((0.65, 0.35), (0.65, 0.95))],
        5: [line((0.3, 0.05), (0.25, 0.45)), np.concatenate([_arc(0.48, 0.68, 0.3, 0.26, 220, 480)]),
            line((0.3, 0.05), (0.8, 0.05))],
        6: [np.concatenate([line((0.7, 0.05), (0.3, 0.5)), _arc(0.5, 0.72, 0.25, 0.22, 180, 540)])],
        7: [line((0.15, 0.05), (0.85, 0.05), (0.4, 0.95))],
        8: [np.concatenate([_arc(0.5, 0.27, 0.25, 0.22, 90, -270), _arc(0.5, 0.72, 0.3, 0.23, -90, 270)])],
        9: [np.concatenate([_arc(0.5, 0.3, 0.28, 0.24, 0, -360), line((0.78, 0.3), (0.7, 0.95))])],
    }
    return [np.asarray(s, dtype=float) for s in templates[digit]]


def jittered(digit: int, rng: np.random.Generator, scale: float = 200.0) -> list[np.ndarray]:
    """A template drawn again: moved, resized, slightly sheared, each point a little off, with times."""
    shear = rng.uniform(-0.15, 0.15)
    size = scale * rng.uniform(0.6, 1.4)
    offset = rng.uniform(0, 100, size=2)
    out, t = [], 0.0
    for s in digit_template(digit):
        p = s.copy()
        p[:, 0] += shear * (p[:, 1] - 0.5)
        p = p * size + offset + rng.normal(0, 0.01 * size, p.shape)
        times = t + np.arange(len(p)) * 16.0
        t = times[-1] + 120.0
        out.append(np.column_stack([p, times]))
    return out


def stroke_dataset(per_digit: int, seed: int = 0):
    """(list of stroke lists, labels) with ``per_digit`` jittered drawings of each digit."""
    rng = np.random.default_rng(seed)
    drawings, labels = [], []
    for d in range(10):
        for _ in range(per_digit):
            drawings.append(jittered(d, rng))
            labels.append(d)
    return drawings, np.array(labels)


def unipen_text(per_digit: int, writers=(1, 2, 3), seed: int = 0) -> str:
    """A tiny pendigits-orig.tra: ``per_digit`` jittered drawings of each digit for each writer."""
    rng = np.random.default_rng(seed)
    lines = [".INCLUDE dene.doc", '.LEXICON "0" "1" "2" "3" "4" "5" "6" "7" "8" "9"', ".HIERARCHY DIGIT", ""]
    n = 0
    for w in writers:
        for d in range(10):
            for _ in range(per_digit):
                lines += [f'.SEGMENT DIGIT {n} ? "{d}"', f".COMMENT {d} {w} {n}"]
                for s in jittered(d, rng):
                    lines.append(".PEN_DOWN")
                    # UNIPEN's y points up: flip, as the real file is
                    lines += [f" {round(x)} {round(500 - y)}" for x, y, _t in s]
                    lines.append(".PEN_UP")
                lines.append("")
                n += 1
    return "\n".join(lines) + "\n"
