"""Hide grading: the defect-area share and the grade rules, one formula for results and marking.

The defect area share is the sum of the defects' ``area_mm2`` over the hide area. Grades:
A below ``grading.grade_a``, B below ``grade_b``, C below ``grade_c``, else D; "U" (ungraded) when
less than ``grading.min_inspected`` of the hide was inspected or its area is unknown.
``marking.MarkPlanner.reject_reason`` uses ``defect_area_share`` for its reject rule.
"""

from __future__ import annotations

from .config import Grading
from .hide import Hide


def defect_area_share(hide: Hide) -> float:
    """Sum of defect areas (mm²) over the hide area (mm²); inf when the hide has no area."""
    hide_mm2 = float(hide.area_m2) * 1e6
    defect_mm2 = float(sum(max(0.0, float(d.area_mm2)) for d in hide.defects))
    if hide_mm2 <= 0.0:
        return float("inf") if defect_mm2 > 0 else 0.0
    return defect_mm2 / hide_mm2


def grade_hide(hide: Hide, grading: Grading) -> str:
    """Grade A/B/C/D by defect area share, "U" when too little of the hide was inspected."""
    if float(hide.inspected_fraction) < grading.min_inspected or float(hide.area_m2) <= 0.0:
        return "U"
    share = defect_area_share(hide)
    if share < grading.grade_a:
        return "A"
    if share < grading.grade_b:
        return "B"
    if share < grading.grade_c:
        return "C"
    return "D"
