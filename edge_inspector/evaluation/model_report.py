"""The text report of ``edge-inspector eval-model`` (``format_report``)."""

from __future__ import annotations

from typing import Any


def _f(v: Any, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec) if isinstance(v, float) else str(v)


def format_report(r: dict[str, Any]) -> str:
    """A readable text version of an ``evaluate_model`` report."""
    m, d, t, p, im, tm = r["model"], r["dataset"], r["tiling"], r["pixel"], r["image"], r["timing"]
    L = [
        f"Model   {m['path']} ({m['kind']}, classes {', '.join(m['classes'])}) on {m['provider']}",
        f"        threshold {m['threshold']:g}" + (f", anomaly maps scaled {m['anomaly_scaling']}"
                                                  if m["anomaly_scaling"] != "-" else ""),
        f"Dataset {d['root']} ({d['layout']}, split {d['split']}): {d['images']} of {d['images_total']} images,"
        f" {d['defective_images']} with defects",
        f"Tiling  tile {'/'.join(map(str, t['tile']))} px, overlap {'/'.join(map(str, t['overlap']))} px,"
        f" {t['tiles']} tiles",
        "",
        f"Pixel ({p['mask']})      pooled    mean (over {p['images_in_mean']} images;"
        f" {p['images_both_empty']} with neither mask skipped)",
        f"  Dice {_f(p['dice_pooled']):>19}  {_f(p['dice_mean']):>7}",
        f"  IoU  {_f(p['iou_pooled']):>19}  {_f(p['iou_mean']):>7}",
        f"  AUROC {_f(p['auroc'])}   AUPRO (FPR <= 0.3) {_f(p['aupro_30'])}   over {p['gt_regions']} regions",
        "",
        f"Image   AUROC {_f(im['auroc'])}   F1 {_f(im['f1'])}   precision {_f(im['precision'])}"
        f"   recall {_f(im['recall'])}   (TP {im['tp']}  FP {im['fp']}  FN {im['fn']}  TN {im['tn']})",
    ]
    if "boxes" in r:
        b = r["boxes"]
        L += ["", f"Boxes   recall {_f(b['recall'])} ({b['found']} / {b['n']})   false blobs {b['false_blobs']}"
                  f" of {b['blobs']} ({_f(b['false_blobs_per_image'], '.2f')} per image)",
              f"        {b['rule']}",
              f"  {'class':<20}{'boxes':>6}{'found':>7}{'recall':>8}"
              + (f"{'same class':>12}" if b["class_aware"] else "")]
        for name, c in b["per_class"].items():
            L.append(f"  {name:<20}{c['n']:>6}{c['found']:>7}{_f(c['recall']):>8}"
                     + (f"{c['found_same_class']:>12}" if b["class_aware"] else ""))
    if "per_type" in r:
        L += ["", f"  {'type':<20}{'images':>7}{'flagged':>8}{'Dice mean':>11}"]
        for name, g in r["per_type"].items():
            L.append(f"  {name:<20}{g['images']:>7}{g['flagged']:>8}{_f(g['dice_mean']):>11}")
    L += ["", f"Timing  {_f(tm['images_per_s'], '.1f')} images/s, {_f(tm['ms_per_tile'], '.1f')} ms per tile"
              f" in the model ({tm['wall_s']:.1f} s)"]
    return "\n".join(L) + "\n"
