"""Synthetic hides on a conveyor belt: a seeded generator of line-scan recordings with ground truth.

The generator draws what an 8K line-scan camera at a leather station sees: a dark grey conveyor
belt (close to the station's belt level, with noise and a faint weave), and hides passing under
the camera with gaps of belt between them.  Every hide has an irregular cowhide-like outline, its
own colour, leather grain at several scales and the camera's across-the-belt illumination
fall-off.  Defects are drawn at station scale with their true sizes in mm, each with an exact
pixel mask from which the ground truth (bounding boxes, outlines, areas in px and mm) is taken.

    cfg = SynthConfig(hides=3, seed=7)
    stream = generate_blocks(cfg)      # iterator of LineBlock; stream.truth is the ground truth
    for block in stream: ...
    truth = write_recording("hides.raw", cfg)   # hides.raw + hides.raw.gt.json (+ masks)
    d = make_defect("hole", rng, 0.37, 0.37, base)  # one defect of the catalogue (training)

Same config -> bit-identical lines and truth.  Lines are rendered in chunks of ``RENDER_LINES``
aligned to the global line index, with random streams keyed by (seed, chunk), so the pixels do not
depend on ``block_lines`` either.

Modules: ``config`` (SynthConfig, RENDER_LINES), ``catalogue`` (the defect classes, ``make_defect``),
``hide`` (outline, colour and defect placement of one hide), ``texture`` (leather tone and grain,
illumination fall-off, the belt), ``truth`` (ground truth JSON and masks), ``stream`` (hides on a
belt -> LineBlocks, ``generate_blocks``, ``write_recording``).
"""

from .catalogue import Defect, make_defect
from .config import RENDER_LINES, SynthConfig
from .stream import SynthStream, generate_blocks, ground_truth, write_recording

__all__ = [
    "RENDER_LINES",
    "Defect",
    "SynthConfig",
    "SynthStream",
    "generate_blocks",
    "ground_truth",
    "make_defect",
    "write_recording",
]
