"""Fault injection, the formats a line-scan camera really sends and models that do not fit
(issue "marks never land in the wrong place and nothing is lost silently", cases 7, 8 and 10).

- 7: a mono recording replays without a station file and runs through the models (grey repeated
  into a 3-channel model; a 1-channel model gets it as is).
- 8: uint16 recordings (Mono12, RGB16, `--dtype uint16` dumps) are mapped to the model's input
  by their bit depth and give what their 8-bit originals give.
- 10: models whose outputs, input or classes do not fit their metadata or decoder are refused at
  load or warm-up with one line naming the model file and the key or output.

No mocks: real recordings (synth, recording writer), real ONNX graphs built with onnx.helper.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge_inspector.cli import main
from edge_inspector.config import ModelCfg, Station, load_station
from edge_inspector.errors import InputError, ModelError
from edge_inspector.inference import BUILTIN_MODELS, Model
from edge_inspector.inference.feed import InputFeed, sample_bits
from edge_inspector.lines import LineBlock
from edge_inspector.recording import RecordingHeader, RecordingWriter, open_recording
from edge_inspector.replay import replay, station_for_recording
from edge_inspector.synth import SynthConfig, write_recording

from conftest import SMALL_STATION

CPU = ["CPUExecutionProvider"]


# ------------------------------------------------------------------ helpers


@pytest.fixture(scope="module")
def mono(tmp_path_factory) -> Path:
    """A 512 px mono recording of one synthetic hide (what `synth --channels 1` writes)."""
    rec = tmp_path_factory.mktemp("mono") / "mono.raw"
    write_recording(rec, SynthConfig(hides=1, seed=3, width=512, channels=1, mm_per_px=1.5, mm_per_line=1.5,
                                     line_rate_hz=20000))
    return rec


def to_16bit(src: Path, dst: Path, bits: int, pixel_format: str, headerless: bool = False) -> Path:
    """The recording at ``src`` as ``bits``-bit samples in uint16 (8-bit value << (bits - 8), the low
    bits filled with the value's top bits, as a camera's finer samples would be); a .raw file with
    ``pixel_format`` in its header, or a headerless dump of the payload."""
    r = open_recording(src)
    h = r.header
    shift = bits - 8

    def widen(lines: np.ndarray) -> np.ndarray:
        x = lines.astype(np.uint16)
        return (x << shift) | (x >> (8 - shift)) if shift < 8 else (x << 8) | x

    if headerless:
        with open(dst, "wb") as f:
            for b in r.blocks():
                f.write(widen(b.lines).astype("<u2").tobytes())
    else:
        header = RecordingHeader(h.width, h.channels, "uint16", line_rate_hz=h.line_rate_hz, mm_per_px=h.mm_per_px,
                                 mm_per_line=h.mm_per_line, pixel_format=pixel_format)
        with RecordingWriter(dst, header) as w:
            for b in r.blocks():
                w.write(LineBlock(widen(b.lines), b.first_line, b.encoder, b.timestamp_ns, b.lost_before))
    r.close()
    return dst


def hides_of(out: Path) -> list[tuple[int, int, float, list[tuple[str, list[float]]]]]:
    """(first line, last line, area, defects as (class, belt box)) of each hide of a run folder."""
    res = []
    for f in sorted((out / "hides").glob("hide-*.json")):
        h = json.loads(f.read_text())
        res.append((h["first_line"], h["last_line"], round(h["area_m2"], 4),
                    sorted((d["class"], [round(v, 1) for v in d["bbox_belt_mm"]]) for d in h["defects"])))
    return res


def save(tmp_path: Path, name: str, nodes, inputs, outputs, inits=(), props=None) -> Path:
    g = helper.make_graph(nodes, name, inputs, outputs, list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    if props is not None:
        helper.set_model_props(m, props)
    p = tmp_path / f"{name}.onnx"
    onnx.save(m, str(p))
    return p


def seg_props(**over: object) -> dict[str, str]:
    p: dict[str, object] = {
        "edge_inspector.kind": "segmentation",
        "edge_inspector.classes": ["defect"],
        "edge_inspector.input": {"layout": "NHWC", "dtype": "uint8", "channels": 3, "size": [None, None]},
        "edge_inspector.output": {"class_map": "class_map", "score_map": "score_map", "stride": 1},
    }
    p.update(over)
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in p.items() if v is not None}


def seg_model(tmp_path: Path, props: dict[str, str], *, channels: int = 3, names=("class_map", "score_map"),
              name: str = "seg") -> Path:
    """class_map = channel 0 > 128 (uint8), score_map = channel 0: a model with the baseline's interface."""
    cm, sm = names
    nodes = [
        helper.make_node("Slice", ["image", "s0", "s1", "ax"], ["c0"]),
        helper.make_node("Squeeze", ["c0", "ax"], ["sq"]),
        helper.make_node("Identity", ["sq"], [sm]),
        helper.make_node("Greater", ["sq", "thr"], ["hi"]),
        helper.make_node("Cast", ["hi"], [cm], to=TensorProto.UINT8),
    ]
    inits = [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in
             (("s0", [0]), ("s1", [1]), ("ax", [3]))] + [numpy_helper.from_array(np.array(128, np.uint8), "thr")]
    return save(tmp_path, name, nodes,
                [helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", "H", "W", channels])],
                [helper.make_tensor_value_info(cm, TensorProto.UINT8, None),
                 helper.make_tensor_value_info(sm, TensorProto.UINT8, None)], inits, props)


def pixel_class_map_model(tmp_path: Path) -> Path:
    """Outputs the input's channel 0 as 'class_map' (pixel values) and a score map of ones,
    metadata naming no outputs."""
    nodes = [
        helper.make_node("Slice", ["image", "s0", "s1", "ax"], ["c0"]),
        helper.make_node("Squeeze", ["c0", "ax"], ["class_map"]),
        helper.make_node("Cast", ["class_map"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["f", "zero"], ["z"]),
        helper.make_node("Add", ["z", "one"], ["score_map"]),
    ]
    inits = [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in (("s0", [0]), ("s1", [1]), ("ax", [3]))]
    inits += [numpy_helper.from_array(np.array(v, np.float32), n) for n, v in (("zero", 0), ("one", 1))]
    return save(tmp_path, "pixels", nodes,
                [helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", "H", "W", 3])],
                [helper.make_tensor_value_info("class_map", TensorProto.UINT8, None),
                 helper.make_tensor_value_info("score_map", TensorProto.FLOAT, None)], inits,
                seg_props(**{"edge_inspector.classes": ["a", "b"], "edge_inspector.output": {"stride": 1}}))


def const_model(tmp_path: Path, name: str, value: np.ndarray, out_name: str, props: dict[str, str], *,
                in_type: int = TensorProto.UINT8, in_shape=("N", "H", "W", 3)) -> Path:
    """A model whose one output is the constant ``value`` (+ 0 x mean(input)): outputs of any shape."""
    nodes = [
        helper.make_node("Cast", ["image"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["f"], ["m"], keepdims=0),
        helper.make_node("Mul", ["m", "zero"], ["z"]),
        helper.make_node("Cast", ["z"], ["zc"], to=helper.np_dtype_to_tensor_dtype(value.dtype)),
        helper.make_node("Add", ["const", "zc"], [out_name]),
    ]
    inits = [numpy_helper.from_array(value, "const"), numpy_helper.from_array(np.array(0, np.float32), "zero")]
    return save(tmp_path, name, nodes, [helper.make_tensor_value_info("image", in_type, list(in_shape))],
                [helper.make_tensor_value_info(out_name, helper.np_dtype_to_tensor_dtype(value.dtype), None)],
                inits, props)


def small_station(tmp_path: Path, model: str, extra: str = "") -> Station:
    f = tmp_path / "s.toml"
    f.write_text(SMALL_STATION.replace('path = "builtin:baseline"', f'path = "{model}"') + extra)
    return load_station(f)


def one_line_error(capsys) -> str:
    text = capsys.readouterr().err
    err = [ln for ln in text.splitlines() if "error:" in ln]
    assert len(err) == 1 and "Traceback" not in text, text
    return err[0]


# ------------------------------------------------------------------ case 7: mono


def test_a_mono_recording_replays_without_a_station_file(mono: Path, tmp_path: Path, capsys) -> None:
    """Was: pydantic traceback (belt_level has 3 values for 1 channel, tile wider than the line)
    from station_for_recording. Now the adopted station is built in one validation and the mono
    lines run through the default (3-channel) model."""
    out = tmp_path / "run"
    assert main(["replay", str(mono), "--out", str(out)]) == 0
    assert "Traceback" not in capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    truth = json.loads(Path(str(mono) + ".gt.json").read_text())
    assert summary["hides"] == len(truth["hides"]) == 1
    st = station_for_recording(Station(), open_recording(mono), False, mono)
    assert st.camera.channels == 1 and st.camera.width == 512 and st.camera.pixel_format == "Mono8"
    assert st.tiling.tile == 512 and len(st.hide_detection.belt_level) == 1


@pytest.mark.parametrize("name", sorted(BUILTIN_MODELS))
def test_every_builtin_model_takes_mono_tiles_as_grey_in_all_three_channels(name: str) -> None:
    m = Model.load(ModelCfg(path=f"builtin:{name}", providers=CPU))
    m.check_fits(256, 1)
    assert m.feed is not None and m.feed.model_channels == 3 and "grey repeated" in m.feed.describe()
    rng = np.random.default_rng(1)
    grey = rng.integers(60, 200, (1, 256, 256, 1), np.uint8)
    grey[0, 100:120, 100:130] = 10  # a dark blot
    mono_dets = m.infer(grey)
    m.feed = None  # plain 3-channel feed
    rgb_dets = m.infer(np.repeat(grey, 3, axis=3))
    assert len(mono_dets[0]) == len(rgb_dets[0])
    np.testing.assert_array_equal(mono_dets[0].xyxy, rgb_dets[0].xyxy)


def test_a_one_channel_model_gets_mono_as_is_and_refuses_colour(tmp_path: Path) -> None:
    p = seg_model(tmp_path, seg_props(**{"edge_inspector.input": {"layout": "NHWC", "dtype": "uint8", "channels": 1,
                                                                  "size": [None, None]}}), channels=1)
    m = Model.load(ModelCfg(path=str(p), providers=CPU, min_area_px=0))
    m.check_fits(64, 1)
    assert m.feed is not None and m.feed.describe().endswith("as is")
    tiles = np.zeros((1, 64, 64, 1), np.uint8)
    tiles[0, 10:20, 30:40] = 220
    np.testing.assert_allclose(m.infer(tiles)[0].xyxy, [[30, 10, 40, 20]])
    with pytest.raises(ModelError) as e:
        m.check_fits(64, 3, "station.toml")
    msg = str(e.value)
    assert str(p) in msg and "takes 1 channel(s), the camera gives 3" in msg and "\n" not in msg


def test_a_recording_with_four_channels_is_refused_in_one_line(tmp_path: Path) -> None:
    rec = tmp_path / "rgba.raw"
    with RecordingWriter(rec, RecordingHeader(64, 4, "uint8", line_rate_hz=1000)) as w:
        w.write(LineBlock(np.zeros((8, 64, 4), np.uint8), 0))
    with pytest.raises(InputError) as e:
        station_for_recording(Station(), open_recording(rec), False, rec)
    msg = str(e.value)
    assert str(rec) in msg and "'channels'" in msg and "1 (mono) or 3 (RGB)" in msg and "\n" not in msg


# ------------------------------------------------------------------ case 8: 12- and 16-bit samples


def test_bit_depth_comes_from_the_pixel_format() -> None:
    assert [sample_bits(f, d) for f, d in (("Mono8", "uint8"), ("Mono10", "uint16"), ("Mono12", "uint16"),
                                           ("Mono16", "uint16"), ("RGB16", "uint16"), ("BayerRG8", "uint8"))] == \
        [8, 10, 12, 16, 16, 8]
    # a name that does not fit the sample type says nothing: the type's full width
    assert sample_bits("RGB8", "uint16") == 16 and sample_bits("", "uint16") == 16 and sample_bits("Mono12", "uint8") == 8


def test_12_and_16_bit_samples_map_to_uint8_and_float_inputs() -> None:
    mono12 = InputFeed.plan(model_channels=3, model_dtype="uint8", layout="NHWC", channels=1, dtype="uint16", bits=12)
    x = np.array([0, 16, 4095, 5000], np.uint16).reshape(1, 1, 4, 1)  # 5000: a flat-field gain above 4095
    y = mono12(x)
    assert y.dtype == np.uint8 and y.shape == (1, 1, 4, 3)
    assert y[0, 0, :, 0].tolist() == [0, 1, 255, 255] and (y[..., 0] == y[..., 2]).all()  # clipped, not wrapped
    rgb16 = InputFeed.plan(model_channels=3, model_dtype="uint8", layout="NHWC", channels=3, dtype="uint16", bits=16)
    assert rgb16(np.full((1, 1, 1, 3), 0xABCD, np.uint16)).ravel().tolist() == [0xAB] * 3
    fl = InputFeed.plan(model_channels=3, model_dtype="float16", layout="NCHW", channels=3, dtype="uint16", bits=16)
    z = fl(np.full((1, 2, 2, 3), 65535, np.uint16))
    assert z.dtype == np.float16 and z.shape == (1, 3, 2, 2) and np.isfinite(z).all() and float(z.max()) == 1.0
    with pytest.raises(ModelError, match="uint16 samples, the camera gives uint8"):
        InputFeed.plan(model_channels=3, model_dtype="uint16", layout="NHWC", channels=3, dtype="uint8")
    with pytest.raises(ModelError, match="int64 is not supported"):
        InputFeed.plan(model_channels=3, model_dtype="int64", layout="NHWC", channels=3, dtype="uint8")


@pytest.mark.parametrize("name", sorted(BUILTIN_MODELS))
def test_every_builtin_model_gives_the_same_on_mono12_as_on_mono8(name: str) -> None:
    m = Model.load(ModelCfg(path=f"builtin:{name}", providers=CPU))
    rng = np.random.default_rng(2)
    grey = rng.integers(60, 200, (1, 256, 256, 1), np.uint8)
    grey[0, 50:70, 60:90] = 250
    m.check_fits(256, 1)
    want = m.infer(grey)[0]
    m.check_fits(256, 1, dtype="uint16", bits=12)
    got = m.infer((grey.astype(np.uint16) << 4) | 0xF)[0]  # 12-bit samples, low bits set
    np.testing.assert_array_equal(got.xyxy, want.xyxy)
    np.testing.assert_array_equal(got.class_id, want.class_id)


def test_a_mono12_recording_replays_as_its_mono8_original(mono: Path, tmp_path: Path) -> None:
    """Was: onnxruntime type error traceback (uint16 fed to a uint8 model). Now >> 4 by the header's
    Mono12, and the adopted station's hide detection levels x 16 (they read the raw samples)."""
    rec12 = to_16bit(mono, tmp_path / "mono12.raw", 12, "Mono12")
    st = station_for_recording(Station(), open_recording(rec12), False, rec12)
    assert st.camera.dtype == "uint16" and st.camera.pixel_format == "Mono12"
    assert st.hide_detection.belt_level == [40.0 * 16] and st.hide_detection.threshold == 28.0 * 16
    replay(mono, Station(), tmp_path / "r8", station_given=False, model_path="builtin:baseline")
    replay(rec12, Station(), tmp_path / "r12", station_given=False, model_path="builtin:baseline")
    h8, h12 = hides_of(tmp_path / "r8"), hides_of(tmp_path / "r12")
    assert len(h8) == 1 and h12 == h8


def test_a_uint16_headerless_dump_replays_as_its_8_bit_original(recording, tmp_path: Path, capsys) -> None:
    """`replay dump.bin --width --channels 3 --dtype uint16` with a 16-bit station (hide levels in
    16-bit units): the same hides and defects as the 8-bit recording with the 8-bit station."""
    rec, st8, _ = recording
    dump = to_16bit(rec, tmp_path / "dump.bin", 16, "RGB16", headerless=True)
    st16 = tmp_path / "s16.toml"
    st16.write_text(SMALL_STATION.replace("channels = 3", 'channels = 3\ndtype = "uint16"\npixel_format = "RGB16"')
                    .replace("subsample = 4", "subsample = 4\nbelt_level = [9728, 10240, 10752]\nthreshold = 7168"))
    assert main(["replay", str(rec), "--station", str(st8), "--out", str(tmp_path / "r8")]) == 0
    assert main(["replay", str(dump), "--station", str(st16), "--out", str(tmp_path / "r16"),
                 "--width", "1024", "--channels", "3", "--dtype", "uint16"]) == 0
    assert "Traceback" not in capsys.readouterr().err
    h8, h16 = hides_of(tmp_path / "r8"), hides_of(tmp_path / "r16")
    assert len(h8) == 2 and h16 == h8


def test_a_station_of_another_bit_depth_is_refused_in_one_line(mono: Path, tmp_path: Path) -> None:
    rec12 = to_16bit(mono, tmp_path / "mono12.raw", 12, "Mono12")
    st = Station.model_validate({"camera": {"width": 512, "channels": 1, "dtype": "uint16", "pixel_format": "Mono16"},
                                 "tiling": {"tile": 512}, "hide_detection": {"belt_level": [10240]}})
    with pytest.raises(InputError) as e:
        station_for_recording(st, open_recording(rec12), True, rec12)
    msg = str(e.value)
    assert str(rec12) in msg and "Mono12 (12-bit)" in msg and "'Mono16' (16-bit)" in msg and "\n" not in msg
    ok = station_for_recording(st.model_copy(update={"camera": st.camera.model_copy(update={"pixel_format": "RGB8"})}),
                               open_recording(rec12), True, rec12)
    assert ok.camera.pixel_format == "Mono12"  # the recording says what its lines are
    # a headerless dump says nothing: the station's Mono12 counts
    dump = to_16bit(mono, tmp_path / "mono12.bin", 12, "Mono12", headerless=True)
    st12 = st.model_copy(update={"camera": st.camera.model_copy(update={"pixel_format": "Mono12"})})
    used = station_for_recording(st12, open_recording(dump, width=512, channels=1, dtype="uint16"), True, dump)
    assert used.camera.pixel_format == "Mono12"


# ------------------------------------------------------------------ case 10: models that do not fit


def test_outputs_named_other_than_the_metadata_says_are_refused_at_load(tmp_path: Path, mono, capsys) -> None:
    """Was: exit 0 with 'defects' of classes "10", "100" (another output read in their place)."""
    p = seg_model(tmp_path, seg_props(), names=("labels", "scores"))
    with pytest.raises(ModelError) as e:
        Model.load(ModelCfg(path=str(p), providers=CPU))
    msg = str(e.value)
    assert str(p) in msg and "edge_inspector.output" in msg and "'class_map'" in msg and "'labels'" in msg
    assert main(["replay", str(mono), "--out", str(tmp_path / "run"), "--model", str(p)]) == 2
    line = one_line_error(capsys)
    assert str(p) in line and "'class_map' names output 'class_map'" in line
    assert not (tmp_path / "run" / "summary.json").exists()


def test_pixel_values_read_as_class_ids_are_refused_at_warm_up(tmp_path: Path) -> None:
    p = pixel_class_map_model(tmp_path)
    st = small_station(tmp_path, str(p))
    with pytest.raises(ModelError) as e:
        Model.for_station(st)
    msg = str(e.value)
    assert str(p) in msg and "'class_map' holds value" in msg and "1..2" in msg and "\n" not in msg


@pytest.mark.parametrize("case,value,out_name,props,needle", [
    ("seg_batch", np.zeros((3, 5, 7), np.uint8), "class_map",
     seg_props(**{"edge_inspector.output": {"class_map": "class_map"}}), "output 'class_map' has shape (3, 5, 7)"),
    ("seg_float_map", np.zeros((1, 5, 7), np.float32), "class_map",
     seg_props(**{"edge_inspector.output": {"class_map": "class_map"}}), "a class map holds class indices"),
    ("seg_logits", np.zeros((1, 5, 8, 8), np.float32), "logits", seg_props(**{"edge_inspector.output": {}}),
     "5 channels (background + 4 classes), but the model names 1 class"),
    ("yolo", np.zeros((1, 7, 4), np.float32), "output0",
     seg_props(**{"edge_inspector.kind": "detection", "edge_inspector.classes": ["hole", "cut"],
                  "edge_inspector.output": {}}), "output 'output0' is float32 of shape (1, 7, 4)"),
    ("classification", np.zeros((1, 5), np.float32), "logits",
     seg_props(**{"edge_inspector.kind": "classification", "edge_inspector.classes": ["good", "bad"],
                  "edge_inspector.output": {}}), "(N, 2) scores"),
    ("anomaly", np.zeros((4, 5, 7), np.float32), "anomaly_map",
     seg_props(**{"edge_inspector.kind": "anomaly", "edge_inspector.classes": ["anomaly"],
                  "edge_inspector.output": {}}), "output 'anomaly_map' has shape (4, 5, 7)"),
])
def test_outputs_the_decoder_cannot_read_are_refused_at_warm_up(tmp_path, case, value, out_name, props, needle):
    """Was: reshape / IndexError tracebacks from the decoders (or class ids no class names)."""
    p = const_model(tmp_path, case, value, out_name, props)
    m = Model.load(ModelCfg(path=str(p), providers=CPU))
    with pytest.raises(ModelError) as e:
        m.warmup(64, 1)
    msg = str(e.value)
    assert str(p) in msg and "edge_inspector.output" in msg and needle in msg and "\n" not in msg


def test_float_nchw_input_while_the_metadata_says_uint8_is_refused_at_load(tmp_path: Path, mono, capsys) -> None:
    """Was: onnxruntime traceback on the first strip."""
    p = const_model(tmp_path, "nchw", np.zeros((1, 8, 8), np.uint8), "class_map", seg_props(),
                    in_type=TensorProto.FLOAT, in_shape=("N", 3, "H", "W"))
    with pytest.raises(ModelError) as e:
        Model.load(ModelCfg(path=str(p), providers=CPU))
    msg = str(e.value)
    assert str(p) in msg and "edge_inspector.input says dtype uint8" in msg and "is float32" in msg
    # the right type, but NHWC said for an NCHW graph
    p2 = const_model(tmp_path, "nchw8", np.zeros((1, 8, 8), np.uint8), "class_map",
                     seg_props(**{"edge_inspector.output": {"class_map": "class_map"}}), in_shape=("N", 3, 64, 64))
    with pytest.raises(ModelError, match=r"says NHWC with 3 channel\(s\), but the graph input 'image' has shape"):
        Model.load(ModelCfg(path=str(p2), providers=CPU))
    assert main(["replay", str(mono), "--out", str(tmp_path / "run"), "--model", str(p)]) == 2
    assert str(p) in one_line_error(capsys)


@pytest.mark.parametrize("classes,needle", [([], "is empty"), (["hole", "hole"], "'hole' more than once")])
def test_an_empty_or_repeated_class_list_is_refused(tmp_path: Path, classes, needle) -> None:
    p = seg_model(tmp_path, seg_props(**{"edge_inspector.classes": classes}))
    with pytest.raises(ModelError) as e:
        Model.load(ModelCfg(path=str(p), providers=CPU))
    assert str(p) in str(e.value) and "edge_inspector.classes" in str(e.value) and needle in str(e.value)


def test_a_class_id_beyond_the_class_list_is_refused_at_warm_up(tmp_path: Path) -> None:
    """An end-to-end YOLO export whose class column says 5 for a model with two classes."""
    boxes = np.zeros((1, 3, 6), np.float32)
    boxes[0, 0] = [4, 4, 20, 20, 0.9, 5]
    props = seg_props(**{"edge_inspector.kind": "detection", "edge_inspector.classes": ["hole", "cut"],
                         "edge_inspector.output": {"format": "end2end"}})
    m = Model.load(ModelCfg(path=str(const_model(tmp_path, "e2e", boxes, "output0", props)), providers=CPU))
    with pytest.raises(ModelError) as e:
        m.warmup(64, 1)
    assert str(m.path) in str(e.value) and "class id 5" in str(e.value) and "names 2 class(es)" in str(e.value)


def colour_difference_model(tmp_path: Path) -> Path:
    """class_map = 100 where |R - G| > 2: clean on the grey warm-up batches, not on real colour tiles."""
    nodes = [
        helper.make_node("Cast", ["image"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("Slice", ["f", "s0", "s1", "ax"], ["c0"]),
        helper.make_node("Slice", ["f", "s1", "s2", "ax"], ["c1"]),
        helper.make_node("Sub", ["c0", "c1"], ["d"]),
        helper.make_node("Abs", ["d"], ["ad"]),
        helper.make_node("Greater", ["ad", "thr"], ["g"]),
        helper.make_node("Squeeze", ["g", "ax"], ["gs"]),
        helper.make_node("Cast", ["gs"], ["gu"], to=TensorProto.UINT8),
        helper.make_node("Mul", ["gu", "hundred"], ["class_map"]),
    ]
    inits = [numpy_helper.from_array(np.array(v, np.int64), n)
             for n, v in (("s0", [0]), ("s1", [1]), ("s2", [2]), ("ax", [3]))]
    inits += [numpy_helper.from_array(np.array(2, np.float32), "thr"),
              numpy_helper.from_array(np.array(100, np.uint8), "hundred")]
    return save(tmp_path, "colour", nodes, [helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", "H", "W", 3])],
                [helper.make_tensor_value_info("class_map", TensorProto.UINT8, None)], inits,
                seg_props(**{"edge_inspector.output": {"class_map": "class_map", "stride": 1}}))


def test_a_class_map_that_goes_wrong_on_real_tiles_stops_the_run_in_one_line(recording, tmp_path: Path,
                                                                             capsys) -> None:
    """Past the warm-up: value 100 in a one-class map is no defect of class "100" (nor dropped
    silently); the run stops with exit 2 and one line naming the model file."""
    rec, st, _ = recording
    p = colour_difference_model(tmp_path)
    assert main(["replay", str(rec), "--station", str(st), "--out", str(tmp_path / "run"), "--model", str(p)]) == 2
    line = one_line_error(capsys)
    assert str(p) in line and "holds value 100" in line and "1..1" in line
