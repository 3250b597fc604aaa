"""The order and values of the node writes a station file asks for (no camera needed)."""

from __future__ import annotations

from edge_inspector.camera.features import planned_settings
from edge_inspector.config import parse_station

STATION = {
    "camera": {"width": 8192, "pixel_format": "RGB8", "line_rate_hz": 2700},
    "source": {"kind": "genicam", "genicam": {
        "lines_per_buffer": 1024,
        "trigger": [{"selector": "FrameStart", "mode": "Off"},
                    {"selector": "LineStart", "source": "EncoderModuleOut", "activation": "RisingEdge"}],
        "encoder": {"selector": "Encoder0", "source_a": "Line1", "divider": 4},
        "flat_field": {"ShadingSelector": "PRNUShading", "ShadingEnable": True},
        "features": {"ExposureTime": 250.0, "UserSetLoad": True},
    }},
}


def test_settings_are_written_in_the_documented_order():
    st = parse_station(STATION)
    got = [(s.node, s.value) for s in planned_settings(st, "AcquisitionLineRate", rate_switch=True)]
    assert got == [
        ("Width", 8192), ("Height", 1024), ("PixelFormat", "RGB8"),
        ("AcquisitionLineRateEnable", True), ("AcquisitionLineRate", 2700.0),
        ("TriggerSelector", "FrameStart"), ("TriggerMode", "Off"),
        ("TriggerSelector", "LineStart"), ("TriggerMode", "On"), ("TriggerSource", "EncoderModuleOut"),
        ("TriggerActivation", "RisingEdge"),
        ("EncoderSelector", "Encoder0"), ("EncoderSourceA", "Line1"), ("EncoderDivider", 4),
        ("ShadingSelector", "PRNUShading"), ("ShadingEnable", True),
        ("ExposureTime", 250.0), ("UserSetLoad", True),
    ]


def test_line_rate_becomes_a_frame_rate_on_area_scan_devices_and_is_left_alone_with_none():
    st = parse_station(STATION)
    frame = [s for s in planned_settings(st, "AcquisitionFrameRate") if s.node == "AcquisitionFrameRate"]
    assert len(frame) == 1 and abs(frame[0].value - 2700 / 1024) < 1e-12
    assert not [s for s in planned_settings(st, None) if s.node.startswith("Acquisition")]
