"""An MVTec-leather-like proxy for learn-good, pixel-exact, made from nothing.

    python benchmarks/novelty_proxy.py OUT [SIDE=1024] [SEED=0]
    edge-inspector learn-good OUT/train/good --out m.onnx
    edge-inspector eval-model --model m.onnx OUT

One leather-like texture (brown, grain at two scales; the texture of tests/test_novelty.py), in
MVTec layout: 4 good training images, 12 good test images and 36 test images with one synthetic
defect each (the synthetic catalogue's classes, 0.05-0.4 mm per px, contrast 35-100 %), with
exact masks under ground_truth/. No real leather: it checks rules (the threshold learn-good chooses,
how the map covers a defect), not accuracy on a real hide.
"""
import sys

import cv2
import numpy as np
from pathlib import Path

from edge_inspector.synth import make_defect


def leather(seed: int, hw: int = 256) -> np.ndarray:
    rng = np.random.default_rng(seed)
    big = cv2.GaussianBlur(rng.standard_normal((hw, hw)).astype(np.float32), (0, 0), 6) * 40
    fine = cv2.GaussianBlur(rng.standard_normal((hw, hw)).astype(np.float32), (0, 0), 1.2) * 25
    g = (big + fine)[..., None] * np.array([1.0, 0.8, 0.6], np.float32)
    return np.clip(np.array([150, 105, 70], np.float32) + g, 0, 255).astype(np.uint8)

out = Path(sys.argv[1]); hw = int(sys.argv[2]) if len(sys.argv) > 2 else 1024
seed0 = int(sys.argv[3]) if len(sys.argv) > 3 else 0
rng = np.random.default_rng(seed0)
def w(p, img):
    p.parent.mkdir(parents=True, exist_ok=True); cv2.imwrite(str(p), cv2.cvtColor(img, cv2.COLOR_RGB2BGR) if img.ndim == 3 else img)
S = 1000 * seed0
for i in range(4): w(out/"train/good"/f"{i:03d}.png", leather(S+100+i, hw))
for i in range(12): w(out/"test/good"/f"{i:03d}.png", leather(S+200+i, hw))
CL = ["color_streak", "wrinkle", "brand", "hole", "cut", "scratch", "black_dot", "white_dot", "stain"]
for i in range(36):
    im = leather(S+300+i, hw).astype(np.float32); mask = np.zeros((hw, hw), np.uint8); base = im.reshape(-1,3).mean(0)
    while True:
        cls = CL[int(rng.integers(len(CL)))]
        ppx = float(rng.uniform(0.05, 0.4))
        try: d = make_defect(cls, rng, ppx, ppx, base)
        except ValueError: continue
        if d.h >= hw-4 or d.w >= hw-4 or not d.mask.any() or d.mask.sum() < 40: continue
        break
    k = float(rng.uniform(0.35, 1.0))
    y0, x0 = int(rng.integers(2, hw-d.h-1)), int(rng.integers(2, hw-d.w-1))
    sub = im[y0:y0+d.h, x0:x0+d.w]; s3 = d.s[..., None]
    if d.mode == "blend": sub += (s3*d.alpha*k)*(d.target[None,None,:3]-sub)
    elif d.mode == "mul": sub *= 1.0 + k*d.amp*s3
    else: sub[d.mask] = k*rng.uniform(25, 50, 3) + (1-k)*sub[d.mask]
    mask[y0:y0+d.h, x0:x0+d.w][d.mask] = 255
    w(out/"test"/cls/f"{i:03d}.png", np.clip(im,0,255).astype(np.uint8)); w(out/"ground_truth"/cls/f"{i:03d}_mask.png", mask)
print("ok", out)
