"""Good leather for the trained novelty families (``draem``, ``ssim_ae``): patches, synthetic
anomalies, the threshold from held-out good leather and the ONNX export with the model contract.

- *Good leather*: the units of ``edge-inspector learn-good`` (``novelty.learn.iter_units``): each
  2048 lines of a ``.raw`` recording (leather = the station's hide detection, edge margin eroded)
  or each image of a folder of good photos. Without sources, synthetic good hides are rendered
  (``synth``, no defects) into ``OUT/good-SEED.raw``. Every 4th unit is held out for the threshold.
- *Synthetic anomalies* (DRAEM's recipe): a Perlin-like mask (Gaussian-smoothed noise at two
  scales, cut at a random quantile) filled with another good patch colour-shifted, a flat colour
  or the catalogue's dark/bright blends, at an opacity of 0.5-1.
- *Threshold, no labels*: the trained network scores the held-out units; as in ``calibrate`` and
  ``learn-good``, the lowest threshold with at most ``budget`` false blobs per m² of leather wins.
  The exported map is raw / raw-threshold x 0.5 clipped to 0..1, so ``score_threshold`` = 0.5.
- *Export*: input ``image`` uint8 NHWC (any multiple of 32, normalisation inside), outputs
  ``anomaly_map`` (B, 1, H/8, W/8) and ``pred_score`` (B,); contract kind ``anomaly``.
Torch is imported by the caller (the ``train`` extra); this module needs it only in functions.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from ..calibrate import DEFAULT_BUDGET_PER_M2, POOL, THRESHOLDS, GoodLeather, choose_threshold, pool_max
from ..config import Station
from ..novelty.learn import LearnOptions, Unit, iter_units

THRESHOLD = 0.5  # the exported map's threshold (raw / raw threshold x 0.5)
MAP_STRIDE = 8  # tile px per anomaly_map cell
MIN_AREA_PX = 64  # one map cell
HOLDOUT_EVERY = 4


@dataclass
class GoodData:
    """Good-leather units in memory: ``train`` to learn from, ``held`` for the threshold."""

    train: list[Unit]
    held: list[Unit]
    sources: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, sources: list[Path], station: Station, channels: int = 3) -> "GoodData":
        units = list(iter_units(sources, station, LearnOptions(), channels))
        units = [u for u in units if u.leather.mean() > 0.05]
        if not units:
            raise ValueError("no good leather in " + ", ".join(map(str, sources)))
        n = len(units)  # every 4th unit, and with 2 or 3 units the last one
        is_held = [n > 1 and (i % HOLDOUT_EVERY == HOLDOUT_EVERY - 1 or (n < HOLDOUT_EVERY and i == n - 1))
                   for i in range(n)]
        held = [u for u, h in zip(units, is_held) if h]
        train = [u for u, h in zip(units, is_held) if not h]
        return cls(train, held, [str(s) for s in sources])

    def patches(self, rng: np.random.Generator, n: int, size: int) -> np.ndarray:
        """(n, size, size, 3) uint8 patches lying on leather (>= 95 % of their px)."""
        out = np.empty((n, size, size, 3), np.uint8)
        k = 0
        tries = 0
        while k < n:
            u = self.train[int(rng.integers(len(self.train)))]
            h, w = u.leather.shape
            if h < size or w < size:
                raise ValueError(f"good unit {u.name} is {w}x{h} px, smaller than the {size} px patches")
            y, x = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
            tries += 1
            if u.leather[y:y + size, x:x + size].mean() < 0.95 and tries < 50 * n:
                continue
            img = u.image[y:y + size, x:x + size]
            out[k] = img if img.shape[-1] == 3 else np.repeat(img[..., :1], 3, -1)
            k += 1
        return out


def synth_good_recordings(out: Path, seeds: list[int], width: int = 2048) -> list[Path]:
    """Render good synthetic hides (no defects) at the demo scale (0.37 mm/px), narrower hides."""
    from ..synth import SynthConfig, write_recording

    paths = []
    belt_mm = width * 0.37 - 100
    for s in seeds:
        p = out / f"good-{s}.raw"
        if not p.is_file():
            write_recording(p, SynthConfig(hides=2, seed=s, width=width, defects_per_hide=(0, 0),
                                           hide_width_mm=(min(1000.0, 0.6 * belt_mm), belt_mm), gap_lines=(200, 300),
                                           hide_length_mm=(min(1600.0, 2 * belt_mm), min(2600.0, 3 * belt_mm))))
        paths.append(p)
    return paths


# -- synthetic anomalies -------------------------------------------------------------------------


def perlin_mask(rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size) float32 0/1 blobs: smoothed noise at two scales above a random quantile."""
    for _ in range(8):
        f = np.zeros((size, size), np.float32)
        for sigma in rng.choice([2.0, 4.0, 8.0, 16.0], 2, replace=False):
            f += cv2.GaussianBlur(rng.standard_normal((size, size)).astype(np.float32), (0, 0), float(sigma)) * sigma
        m = (f > np.quantile(f, rng.uniform(0.9, 0.99))).astype(np.float32)
        if m.sum() >= 16:
            return m
    return m


def add_anomalies(batch: np.ndarray, rng: np.random.Generator, p: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """(aug, mask): about half the patches get one synthetic anomaly (float32 0..1, NHWC / NHW)."""
    x = batch.astype(np.float32) / 255
    n, s = x.shape[:2]
    aug, mask = x.copy(), np.zeros((n, s, s), np.float32)
    for i in range(n):
        if rng.random() > p:
            continue
        m = perlin_mask(rng, s)
        kind = rng.integers(3)
        if kind == 0:  # another patch, colour-shifted and flipped
            src = x[int(rng.integers(n))][::-1, ::-1] * rng.uniform(0.4, 1.6, 3).astype(np.float32)
        elif kind == 1:  # a dark or a bright blend (the catalogue's dots and stains)
            src = np.broadcast_to(np.float32(rng.choice([rng.uniform(0.02, 0.2), rng.uniform(0.75, 1.0)]))
                                  * rng.uniform(0.8, 1.0, 3).astype(np.float32), x[i].shape)
        else:  # the patch itself, shifted in brightness with fine noise (a stain, a scar)
            src = x[i] * rng.uniform(0.3, 1.8) + rng.normal(0, 0.08, x[i].shape).astype(np.float32)
        beta = np.float32(rng.uniform(0.5, 1.0))
        aug[i] = np.clip(x[i] * (1 - beta * m[..., None]) + beta * m[..., None] * src, 0, 1)
        mask[i] = m
    return aug, mask


# -- torch pieces (the caller imported torch) ----------------------------------------------------


def ssim_map(a: Any, b: Any, win: int = 7) -> Any:
    """Local SSIM of two (N, C, H, W) float 0..1 tensors, channels averaged: (N, 1, H, W)."""
    import torch.nn.functional as F

    def mean(t: Any) -> Any:
        return F.avg_pool2d(t, win, 1, win // 2, count_include_pad=False)

    c1, c2 = 0.01 ** 2, 0.03 ** 2
    ma, mb = mean(a), mean(b)
    va, vb, cov = mean(a * a) - ma * ma, mean(b * b) - mb * mb, mean(a * b) - ma * mb
    s = ((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma * ma + mb * mb + c1) * (va + vb + c2))
    return s.mean(1, keepdim=True)


def to_nchw(x: np.ndarray, device: str = "cpu") -> Any:
    import torch

    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(device)


def raw_maps(net: Any, images: list[np.ndarray], tile: int = 512) -> list[np.ndarray]:
    """The network's raw anomaly map of whole images, tile by tile, at image px (nearest)."""
    import torch

    out = []
    net.eval()
    with torch.no_grad():
        for img in images:
            h, w = img.shape[:2]
            hp, wp = -(-h // tile) * tile, -(-w // tile) * tile
            pad = np.zeros((hp, wp, 3), np.uint8)
            pad[:h, :w] = img if img.shape[-1] == 3 else np.repeat(img[..., :1], 3, -1)
            full = np.zeros((hp // MAP_STRIDE, wp // MAP_STRIDE), np.float32)
            for y in range(0, hp, tile):
                row = np.stack([pad[y:y + tile, x:x + tile] for x in range(0, wp, tile)])
                m = net.raw(torch.from_numpy(row)).numpy()[:, 0]
                for j, x in enumerate(range(0, wp, tile)):
                    full[y // MAP_STRIDE:(y + tile) // MAP_STRIDE, x // MAP_STRIDE:(x + tile) // MAP_STRIDE] = m[j]
            out.append(np.repeat(np.repeat(full, MAP_STRIDE, 0), MAP_STRIDE, 1)[:h, :w])
    return out


@dataclass
class Threshold:
    raw: float
    source: str
    holdout_m2: float = 0.0
    false_per_m2: float | None = None
    within_budget: bool | None = None


def threshold_from_good(net: Any, data: GoodData, budget: float = DEFAULT_BUDGET_PER_M2) -> Threshold:
    """The raw map value at the lowest threshold with <= ``budget`` false blobs per m² of held-out
    good leather (``calibrate``'s rule); without held-out units the 0.999 quantile of training maps."""
    units = data.held or data.train[:1]
    maps = raw_maps(net, [u.image for u in units])
    if not data.held:
        q = float(np.quantile(np.concatenate([m[u.leather] for m, u in zip(maps, units)]), 0.999))
        return Threshold(q, "fallback: quantile 0.999 of a training unit's map (no held-out data)")
    top = max(float(m[u.leather].max()) if u.leather.any() else 0.0 for m, u in zip(maps, units))
    scale = max(top, 1e-6) * 1.05  # provisional: the held-out maximum just under 1
    good = GoodLeather()
    for m, u in zip(maps, units):
        leather = ~pool_max(~u.leather)
        good.add(pool_max(np.clip(m / scale, 0, 1)), leather, u.mm_per_px * u.mm_per_line * POOL * POOL,
                 MIN_AREA_PX / (POOL * POOL))
    per_m2 = good.per_m2()
    t, within = choose_threshold(per_m2, budget)
    k = int(np.nonzero(THRESHOLDS == t)[0][0])
    return Threshold(t * scale, f"held-out good leather: lowest threshold with <= {budget:g} false blobs per m2",
                     round(good.leather_mm2 / 1e6, 4), round(float(per_m2[k]), 4), within)


def export_anomaly(net: Any, path: Path, *, name: str, description: str, thr: Threshold,
                   info: dict[str, Any], mm_per_px: float = 0.37) -> None:
    """ONNX with the contract: ``net.raw(uint8 NHWC) -> (N, 1, H/8, W/8)`` scaled so that 0.5 is
    the learned threshold; ``pred_score`` its maximum."""
    import onnx
    import torch

    class Deployed(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net
            self.register_buffer("k", torch.tensor(THRESHOLD / max(thr.raw, 1e-9)))

        def forward(self, image: Any) -> tuple[Any, Any]:
            a = torch.clamp(self.net.raw(image) * self.k, 0, 1)
            return a, a.amax(dim=(1, 2, 3))

    net.eval()
    dep = Deployed().eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    x = torch.zeros((1, 64, 64, 3), dtype=torch.uint8)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter: stable output
        torch.onnx.export(dep, (x,), str(path), input_names=["image"], output_names=["anomaly_map", "pred_score"],
                          dynamic_axes={"image": {0: "batch", 1: "height", 2: "width"},
                                        "anomaly_map": {0: "batch", 2: "h8", 3: "w8"}, "pred_score": {0: "batch"}},
                          opset_version=17, dynamo=False)
    m = onnx.load(str(path))
    meta = {
        "edge_inspector.kind": "anomaly",
        "edge_inspector.classes": json.dumps(["anomaly"]),
        "edge_inspector.input": json.dumps({"layout": "NHWC", "dtype": "uint8", "channels": 3, "size": [None, None],
                                            "color": "RGB", "multiple": 32}),
        "edge_inspector.output": json.dumps({"anomaly_map": "anomaly_map", "pred_score": "pred_score",
                                             "stride": MAP_STRIDE, name.replace("-", "_"): {
                                                 "threshold_source": thr.source, "raw_threshold": thr.raw,
                                                 "holdout_m2": thr.holdout_m2, "false_per_m2": thr.false_per_m2,
                                                 "within_budget": thr.within_budget}}),
        "edge_inspector.score_threshold": str(THRESHOLD),
        "edge_inspector.min_area_px": str(MIN_AREA_PX),
        "edge_inspector.mm_per_px": str(mm_per_px),
        "edge_inspector.name": name,
        "edge_inspector.description": description,
        "edge_inspector.version": "1",
        "edge_inspector.cpu_precision": "f32",  # SSIM's variances and the maps' scale need it (runtime.py)
        "edge_inspector.training": json.dumps(info),
    }
    del m.metadata_props[:]
    for k, v in meta.items():
        m.metadata_props.add(key=k, value=v)
    onnx.save(m, str(path))


def train_loop(step: Callable[[int], dict[str, float]], steps: int, log_every: int = 50,
               log: Callable[[str], None] = print) -> dict[str, float]:
    """Run ``step(i)`` ``steps`` times, printing the mean losses every ``log_every`` steps."""
    t0, acc, last = time.time(), {}, {}
    for i in range(steps):
        for k, v in step(i).items():
            acc[k] = acc.get(k, 0.0) + v
        if (i + 1) % log_every == 0 or i + 1 == steps:
            n = log_every if (i + 1) % log_every == 0 else (i + 1) % log_every
            last = {k: round(v / n, 5) for k, v in acc.items()}
            log(json.dumps({"step": i + 1, **last, "s": round(time.time() - t0, 1)}))
            acc = {}
    return last
