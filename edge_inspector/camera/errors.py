"""CameraError: a camera problem the user can fix, reported like any bad input (exit code 2)."""

from __future__ import annotations

from ..errors import InputError


class CameraError(InputError):
    """The producer, device or a node value the station file asks for cannot be used.

    The message names the producer file, the device or the node and value, and says what the
    camera allows; ``where`` names the station field to change.
    """
