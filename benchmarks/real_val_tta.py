"""A segmentation model on the real val photos under test-time flips and rescaling: box recall at
<= 0.5 false blobs per photo (eval-model's rules), per transform, over thresholds 0.50..0.96.

    python benchmarks/real_val_tta.py ../shared/datasets/leather-defects-yolo [MODEL] [id,h,hv,s0.75,s1.5,s0.5]

id = as eval-model runs it; h = the mean of the photo's map and the map of its mirror image
(mirrored back); hv = the mean over four flips; sX = the photo resized by X (a multiple of 32),
its map resized back. docs/models.md ("builtin:default", tried and not adopted) has the figures.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import cv2
import numpy as np

from edge_inspector.evaluation.datasets import find_dataset, ground_truth, read_image
from edge_inspector.evaluation.metrics import BoxStats
from edge_inspector.evaluation.model_eval import load_model, score_image


def main() -> None:
    root = Path(sys.argv[1])
    model_path = sys.argv[2] if len(sys.argv) > 2 and sys.argv[2] != "-" else None
    modes = sys.argv[3].split(",") if len(sys.argv) > 3 else ["id", "h", "hv", "s0.75", "s1.5", "s0.5"]
    m = load_model(model_path, None)
    ds = find_dataset(root, "auto", "val")
    imgs = [read_image(s.image, 3) for s in ds.samples]
    gts = [ground_truth(s, im.shape[:2], len(ds.names)) for s, im in zip(ds.samples, imgs)]

    def smap(img: np.ndarray) -> np.ndarray:
        t = min(2048, -(-max(img.shape[:2]) // 32) * 32)
        return score_image(m, img, t, min(128, t // 4), batch=1)[0]

    def run(mode: str, img: np.ndarray) -> np.ndarray:
        if mode == "id":
            return smap(img)
        if mode == "h":
            return (smap(img) + smap(img[:, ::-1].copy())[:, ::-1]) / 2
        if mode == "hv":
            return (smap(img) + smap(img[:, ::-1].copy())[:, ::-1] + smap(img[::-1].copy())[::-1]
                    + smap(img[::-1, ::-1].copy())[::-1, ::-1]) / 4
        if mode.startswith("s"):
            f = float(mode[1:])
            h, w = img.shape[:2]
            size = (int(round(w * f / 32) * 32), int(round(h * f / 32) * 32))
            r = cv2.resize(img, size, interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR)
            return cv2.resize(smap(r), (w, h), interpolation=cv2.INTER_LINEAR)
        raise SystemExit(f"unknown transform {mode!r}")

    thresholds = np.round(np.arange(0.50, 0.97, 0.01), 2)
    for mode in modes:
        t0 = time.time()
        maps = [run(mode, im) for im in imgs]
        rows = []
        for thr in thresholds:
            m.decoder.score_threshold = float(thr)
            bs = BoxStats(ds.names, m.class_names, m.min_area_px)
            for sc, (gt, cls, px) in zip(maps, gts):
                bs.add(m.decoder.reported(sc), gt, None, cls, px)
            r = bs.report()
            rows.append((float(thr), r["recall"], r["false_blobs_per_image"]))
        ok = [r for r in rows if r[2] <= 0.5]
        best = max(ok, key=lambda r: r[1]) if ok else None
        line = " ".join(f"{t:.2f}:{rc:.3f}/{fb:.2f}" for t, rc, fb in rows[::3])
        print(f"{mode} ({time.time() - t0:.0f} s): best recall at <= 0.5 false blobs per photo"
              f" {best[1]:.3f} at {best[0]:.2f} ({best[2]:.2f})" if best else f"{mode}: none", flush=True)
        print(f"   threshold:recall/false blobs {line}", flush=True)


if __name__ == "__main__":
    main()
