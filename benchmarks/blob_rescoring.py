"""Can a second stage on the decoded blobs cut false blobs on real photos? Collects every candidate
blob of a segmentation model (extent components whose 32nd-highest score is >= 0.6) on the train
and val photos with 36 features (scores, areas, shape, colour contrast to a 15 px ring, class
votes, photo statistics), fits a classifier "touches a labelled box" on train, and prints box
recall at <= 0.3 / 0.5 / 1.0 / 1.5 false blobs per val photo, kept blobs ranked by the classifier
against ranked by the decoder's own score. Needs scikit-learn (not a dependency of the package).

    pip install scikit-learn
    python benchmarks/blob_rescoring.py ../shared/datasets/leather-defects-yolo [MODEL]
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

from edge_inspector.evaluation.datasets import find_dataset, ground_truth, read_image
from edge_inspector.evaluation.model_eval import load_model, score_image

EXTENT, MIN_AREA, FLOOR = 0.4, 32, 0.6


def collect(m, root: Path, split: str) -> list[dict]:
    ds = find_dataset(root, "auto", split)
    recs = []
    for s in ds.samples:
        img = read_image(s.image, 3)
        h, w = img.shape[:2]
        t = min(2048, -(-max(h, w) // 32) * 32)
        sc, cm, _, _ = score_image(m, img, t, min(128, t // 4), batch=1)
        gt, cls, px = ground_truth(s, (h, w), len(ds.names))
        n, lab, st, cen = cv2.connectedComponentsWithStats((sc >= EXTENT).view(np.uint8), connectivity=8,
                                                           ltype=cv2.CV_32S)
        lab_img = cv2.cvtColor(img, cv2.COLOR_RGB2LAB).astype(np.float32)
        gray = lab_img[..., 0]
        photo = [float(np.median(sc)), float(np.percentile(sc, 99)), float(np.log1p(gray.std())), float(gray.mean() / 255)]
        blobs = []
        for k in range(1, n):
            inside = lab == k
            v = np.sort(sc[inside])[::-1]
            if len(v) < MIN_AREA or v[MIN_AREA - 1] < FLOOR:
                continue
            x, y, bw, bh, area = st[k]
            ring = cv2.dilate(inside.view(np.uint8), np.ones((15, 15), np.uint8)).astype(bool) & ~inside
            ci, co = lab_img[inside].mean(0), lab_img[ring].mean(0) if ring.any() else lab_img[inside].mean(0)
            votes = np.bincount(cm[inside], minlength=16)[1:16] / max(int(inside.sum()), 1) if cm is not None else np.zeros(15)
            f = [v[MIN_AREA - 1], v[0], v.mean(), np.log(area), np.log1p((v >= 0.8).sum()), np.log1p((v >= 0.9).sum()),
                 area / (bw * bh), np.log((bw + 1) / (bh + 1)) ** 2, ci[0] - co[0], abs(ci[0] - co[0]), ci[1] - co[1],
                 ci[2] - co[2], np.hypot(ci[1] - co[1], ci[2] - co[2]), np.log1p(gray[inside].std()),
                 np.log1p(gray[ring].std() if ring.any() else 0.0), np.log1p(min(x, y, w - x - bw, h - y - bh)), *photo]
            cover = [(j, int(inside[y0:y1, x0:x1].sum())) for j, (x0, y0, x1, y1) in enumerate(px)]
            blobs.append({"f": [*f, *votes], "area": int(area), "cover": [c for c in cover if c[1]],
                          "touches": bool(gt[inside].any())})
        for b in blobs:
            b["f"].append(len(blobs))
        recs.append({"blobs": blobs, "boxes": [int((x1 - x0) * (y1 - y0)) for x0, y0, x1, y1 in px]})
    return recs


def recall_fp(recs: list[dict], scores: list[np.ndarray], thr: float) -> tuple[float, float]:
    """eval-model's box rule on the blobs kept at ``thr``: found when kept blobs cover >= 10 % of the
    box or >= 50 % of one kept blob lies in it; false blobs touch no box."""
    found = n = fp = 0
    for r, s in zip(recs, scores):
        cov, hit = np.zeros(len(r["boxes"])), np.zeros(len(r["boxes"]), bool)
        for b, keep in zip(r["blobs"], s >= thr):
            if not keep:
                continue
            fp += not b["touches"]
            for j, c in b["cover"]:
                cov[j] += c
                hit[j] |= c >= 0.5 * b["area"]
        n += len(r["boxes"])
        found += int((hit | (cov >= 0.1 * np.array(r["boxes"]))).sum())
    return found / max(n, 1), fp / len(recs)


def table(recs: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    rows = [(b["f"], b["touches"]) for r in recs for b in r["blobs"]]
    return np.array([x for x, _ in rows], float), np.array([y for _, y in rows], float)


def split_scores(recs: list[dict], flat: np.ndarray) -> list[np.ndarray]:
    out, k = [], 0
    for r in recs:
        out.append(flat[k : k + len(r["blobs"])])
        k += len(r["blobs"])
    return out


def main() -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score

    root = Path(sys.argv[1])
    m = load_model(sys.argv[2] if len(sys.argv) > 2 else None, None)
    train, val = collect(m, root, "train"), collect(m, root, "val")
    xt, yt = table(train)
    xv, yv = table(val)
    clf = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.05, max_leaf_nodes=15, l2_regularization=1.0)
    p = clf.fit(xt, yt).predict_proba(xv)[:, 1]
    print(f"blobs: train {len(yt)} ({int(yt.sum())} touch a box), val {len(yv)} ({int(yv.sum())})")
    for name, flat in (("decoder score (32nd-highest px)", xv[:, 0]), ("classifier", p)):
        per = split_scores(val, flat)
        grid = np.unique(np.quantile(flat, np.linspace(0.5, 0.999, 200)))
        rows = [(t, *recall_fp(val, per, t)) for t in grid]
        best = {b: max((r for r in rows if r[2] <= b), key=lambda r: r[1], default=None) for b in (0.3, 0.5, 1.0, 1.5)}
        print(f"{name}: blob AUROC {roc_auc_score(yv, flat):.3f}; box recall at <= 0.3 / 0.5 / 1.0 / 1.5 false"
              " blobs per photo: " + " / ".join(f"{r[1]:.3f}" if r else "-" for r in best.values()))


if __name__ == "__main__":
    main()
