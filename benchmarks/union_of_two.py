"""Two segmentation models as one: the union of what each reports, on the real val photos. Box
recall and false blobs per photo (eval-model's rules) for each model alone and for pairs of
thresholds; the best pair within 0.5 false blobs per photo.

    python benchmarks/union_of_two.py ../shared/datasets/leather-defects-yolo builtin:default builtin:attention-unet

docs/models.md ("builtin:default", tried and not adopted) has the figures.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from edge_inspector.config import ModelCfg
from edge_inspector.evaluation.datasets import find_dataset, ground_truth, read_image
from edge_inspector.evaluation.metrics import BoxStats
from edge_inspector.evaluation.model_eval import _channels, _tile_for, score_image
from edge_inspector.inference import Model

T1 = (0.78, 0.80, 0.82, 0.84, 0.86, 0.88, 0.90)
T2 = (0.75, 0.80, 0.85, 0.90, 0.93, 0.96)


def main() -> None:
    root, names = Path(sys.argv[1]), sys.argv[2:4]
    ds = find_dataset(root, "auto", "val")
    models = [Model.load(ModelCfg(path=n, providers=["CPUExecutionProvider"])) for n in names]
    scores: list[list[np.ndarray]] = [[], []]
    truth = []
    for s in ds.samples:
        for k, m in enumerate(models):
            img = read_image(s.image, _channels(m))
            t, o = _tile_for(m, img.shape[:2], None, None)
            scores[k].append(score_image(m, img, t, o)[0])
        truth.append(ground_truth(s, img.shape[:2], len(ds.names)))

    def run(ths: tuple[float | None, float | None]) -> tuple[float, float]:
        st = BoxStats(ds.names, [], models[0].min_area_px)
        for i, (gt, cls, px) in enumerate(truth):
            pred = np.zeros(gt.shape, bool)
            for k, t in enumerate(ths):
                if t is not None:
                    models[k].decoder.score_threshold = t
                    pred |= models[k].decoder.reported(scores[k][i])
            st.add(pred, gt, None, cls, px)
        r = st.report()
        return r["recall"], r["false_blobs_per_image"]

    for k, ts in ((0, T1), (1, T2)):
        print(names[k], "alone:", "  ".join(f"{t}: {r:.3f} @ {f:.2f}" for t in ts
                                           for r, f in [run((t, None) if k == 0 else (None, t))]))
    rows = [(t1, t2, *run((t1, t2))) for t1 in T1 for t2 in T2]
    for t1, t2, r, f in rows:
        print(f"{names[0]} {t1} + {names[1]} {t2}: recall {r:.3f}, false blobs per photo {f:.2f}")
    ok = [row for row in rows if row[3] <= 0.5]
    if ok:
        t1, t2, r, f = max(ok, key=lambda row: row[2])
        print(f"best within 0.5 false blobs per photo: {t1} + {t2}: recall {r:.3f} at {f:.2f}")


if __name__ == "__main__":
    main()
