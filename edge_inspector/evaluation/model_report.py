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
                                                  if m["anomaly_scaling"] != "-" else "")
        + (f", each defect drawn down to {m['peak_extent']:g} of its peak (peak_extent)" if m.get("peak_extent") else ""),
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
    if "patch" in r:
        q = r["patch"]
        (tn, fp), (fn, tp) = q["confusion"]
        L += ["", f"Patches accuracy {_f(q['accuracy'])}   precision {_f(q['precision'])}   recall {_f(q['recall'])}"
                  f"   AUROC {_f(q['auroc'])}   ({q['patches']} patches, {q['defective']} defective; stride"
                  f" {q['stride']} px, squares of {q['report_px']} px)",
              f"        confusion (truth \\ predicted)   good: {tn} good, {fp} defect   defect: {fn} good, {tp} defect"]
    if "detection" in r:
        L += [""] + detection_lines(r["detection"])
    if "per_type" in r:
        L += ["", f"  {'type':<20}{'images':>7}{'flagged':>8}{'Dice mean':>11}"]
        for name, g in r["per_type"].items():
            L.append(f"  {name:<20}{g['images']:>7}{g['flagged']:>8}{_f(g['dice_mean']):>11}")
    L += ["", f"Timing  {_f(tm['images_per_s'], '.1f')} images/s, {_f(tm['ms_per_tile'], '.1f')} ms per tile"
              f" in the model ({tm['wall_s']:.1f} s)"]
    return "\n".join(L) + "\n"


def detection_lines(d: dict[str, Any]) -> list[str]:
    """The ``detection`` part (COCO-style box AP, ``boxmap``) as text lines."""
    L = [f"Detection ({d['boxes_from']}; ranked from score {d['ranking_threshold']:g}, {d['ap']})",
         f"  mAP50 {_f(d['map50'])}   mAP50-95 {_f(d['map50_95'])}   class-agnostic mAP50 {_f(d['map50_agnostic'])}"
         f"   mAP50-95 {_f(d['map50_95_agnostic'])}",
         f"  at threshold {d['threshold']:g}, IoU 0.5: precision {_f(d['precision'])}   recall {_f(d['recall'])}"
         f"   F1 {_f(d['f1'])}   (TP {d['tp']}  FP {d['fp']}  FN {d['fn']}; {d['n_gt']} boxes)"]
    if d["per_class"]:
        L.append(f"  {'class':<20}{'boxes':>6}{'AP50':>7}{'AP50-95':>9}{'P':>7}{'R':>7}{'F1':>7}  model class")
        for name, c in d["per_class"].items():
            L.append(f"  {name:<20}{c['n']:>6}{_f(c['ap50']):>7}{_f(c['ap50_95']):>9}{_f(c['precision']):>7}"
                     f"{_f(c['recall']):>7}{_f(c['f1']):>7}  {', '.join(c['model_classes']) or '-'}")
    return L
