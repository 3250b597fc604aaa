"""Defect classes of the synthetic hides and the station's default vocabulary."""

from __future__ import annotations

# Ground-truth classes the synthetic generator draws, with a colour (BGR) for hide maps.
DEFECT_CLASSES: tuple[str, ...] = (
    "hole",
    "cut",
    "scratch",
    "black_dot",
    "white_dot",
    "color_streak",
    "wrinkle",
    "tick_bite",
    "brand",
)

# Names of real data sets that mean one of the classes above (case-insensitive): the default
# model folds them into that class (train/data.py) and eval-model matches them (evaluation/boxmap.py).
SYNONYMS: dict[str, str] = {"hole": "hole", "scratch": "scratch", "crease": "wrinkle", "cut": "cut",
                            "wrinkle": "wrinkle", "brand": "brand", "tick bite": "tick_bite",
                            "tick_bite": "tick_bite"}


def canonical_class(name: str) -> str:
    """The class a name stands for: its synonym (``SYNONYMS``), else the name in lower case with
    spaces for underscores ("Growth Marks" and "growth_marks" are one class)."""
    key = name.strip().lower()
    return SYNONYMS.get(key) or key.replace("_", " ")


CLASS_COLORS_BGR: dict[str, tuple[int, int, int]] = {
    "hole": (0, 0, 255),
    "cut": (0, 128, 255),
    "scratch": (0, 255, 255),
    "black_dot": (255, 0, 255),
    "white_dot": (255, 255, 0),
    "color_streak": (255, 0, 0),
    "wrinkle": (0, 255, 0),
    "tick_bite": (128, 0, 255),
    "brand": (255, 128, 0),
    "dark": (255, 0, 255),
    "bright": (255, 255, 0),
    "defect": (0, 0, 255),
}


def class_color(name: str) -> tuple[int, int, int]:
    """Colour used on hide maps; unknown class names get a stable colour from their hash."""
    if name in CLASS_COLORS_BGR:
        return CLASS_COLORS_BGR[name]
    h = sum(ord(c) * 31**i for i, c in enumerate(name)) & 0xFFFFFF
    return (h & 0xFF, (h >> 8) & 0xFF, (h >> 16) & 0xFF)
