"""Live acquisition from a GenICam camera through a GenTL producer (harvesters); docs/cameras.md.

``GenICamSource(station)`` opens the station's device, writes the camera settings, and yields
LineBlocks; ``CameraError`` reports what the user has to change.

    producer  find the .cti, list devices, select and open one
    features  station settings -> node map writes, read back, errors with the allowed values
    pixels    pixel formats -> (n_lines, width, channels) lines
    source    acquisition thread, line-block ring, loss counting, reconnects
"""

from .errors import CameraError
from .source import AcquisitionStats, GenICamSource

__all__ = ["AcquisitionStats", "CameraError", "GenICamSource"]
