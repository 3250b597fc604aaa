"""Command line: ``edge-inspector <command>``. Bad input ends with one clear line and exit code 2."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

from . import __version__
from .errors import ConfigError, InputError

EXIT_BAD_INPUT = 2


def _station(path: str | None):  # type: ignore[no-untyped-def]
    from .config import load_station

    return load_station(path)


def cmd_check_config(a: argparse.Namespace) -> int:
    from .config import file_problems, load_station

    bad = 0
    for f in a.files:
        try:
            st = load_station(f)
            problems = file_problems(st)
        except ConfigError as e:
            problems = e.problems
        if problems:
            bad += 1
            print(f"{f}: {len(problems)} problem(s)")
            for p in problems:
                print(f"  - {p}")
            continue
        print(f"{f}: ok (station {st.station.name}, {st.camera.width} px x {st.camera.channels} ch,"
              f" tile {st.tiling.tile}/{st.tiling.overlap}, strip {st.strip_time_s():.3f} s)")
    return EXIT_BAD_INPUT if bad else 0


def cmd_synth(a: argparse.Namespace) -> int:
    from .progress import Progress
    from .synth import SynthConfig, write_recording

    cfg = SynthConfig(hides=a.hides, seed=a.seed, width=a.width, channels=a.channels, masks=a.masks)
    bar = Progress(1, f"synth {Path(a.output).name}")

    def prog(done: int, total: int | None) -> None:
        if total:
            bar.total = total
        bar.update(done)

    truth = write_recording(Path(a.output), cfg, progress=prog)
    bar.close()
    n_def = sum(len(h["defects"]) for h in truth["hides"])
    print(f"wrote {a.output}: {truth['n_lines']:,} lines x {truth['width']} px, {len(truth['hides'])} hides,"
          f" {n_def} defects; truth in {a.output}.gt.json")
    return 0


def cmd_replay(a: argparse.Namespace) -> int:
    from .progress import Progress
    from .replay import format_summary, replay

    station = _station(a.station)
    out = Path(a.out or station.outputs.dir)
    headerless = {k: v for k, v in (("width", a.width), ("channels", a.channels), ("dtype", a.dtype)) if v is not None}
    bar = Progress(1, f"replay {Path(a.recording).name}")

    def prog(done: int, total: int) -> None:
        bar.total = total
        bar.update(done)

    with contextlib.ExitStack() as stack:
        web = _web_session(stack, a, station, out)  # --web: live view fed by this replay's events
        try:
            stats, summary = replay(
                Path(a.recording), station, out, station_given=a.station is not None, realtime=a.realtime,
                model_path=a.model, verify_crc=not a.no_verify, skip_corrupt=a.skip_corrupt,
                headerless=headerless, progress=prog, plc=a.plc, overwrite=a.overwrite,
                publish=web.publish if web else None, probe=web.probe if web else None,
            )
        finally:
            bar.close()
    print(format_summary(summary, out))
    if web is not None:
        from .web.server import serve_until_stopped

        print(f"edge-inspector replay: done; the web view stays at {web.server.url} until Ctrl-C", flush=True)
        serve_until_stopped(web.server, a.web_linger)
    from .dispatch import exit_status

    return exit_status(summary.get("marks"))  # 4 when marks were not fired (docs/marking.md)


def _web_session(stack: contextlib.ExitStack, a: argparse.Namespace, station, out: Path):  # type: ignore[no-untyped-def]
    """replay --web: events publisher, telemetry and web server for the run (edge_inspector/web/attach.py)."""
    if not a.web:
        return None
    from .web.attach import WebOptions, replay_events

    web = stack.enter_context(replay_events(station, out, WebOptions(a.host, a.port, a.token)))
    print(f"edge-inspector replay: live view at {web.server.url}live", file=sys.stderr, flush=True)
    return web


def cmd_web(a: argparse.Namespace) -> int:
    from .runfiles import DB_NAME
    from .web.attach import folder_feed
    from .web.server import WebServer, serve_until_stopped

    run_dir = Path(a.run_dir)
    if not (run_dir / DB_NAME).is_file() and not a.events:
        raise InputError(f"no {DB_NAME} here", path=run_dir,
                         hint="give the --out folder of a replay or run (with [outputs] sqlite = true)")
    feed = folder_feed(run_dir, a.events) if a.events else None
    server = WebServer(run_dir, host=a.host, port=a.port, token=a.token, feed=feed).start()
    print(f"edge-inspector web: {run_dir} at {server.url} (Ctrl-C stops)", flush=True)
    serve_until_stopped(server, a.seconds)
    return 0


def add_web_arguments(s: argparse.ArgumentParser, *, flag: bool) -> None:
    """--host/--port/--token (and --web for replay/run): docs/operator.md."""
    if flag:
        s.add_argument("--web", action="store_true", help="serve the live view and the run's history in a browser"
                       " (docs/operator.md)")
    s.add_argument("--host", default="127.0.0.1", help="web view address (default 127.0.0.1; any other needs --token)")
    s.add_argument("--port", type=int, default=8080, help="web view port (default 8080; 0: any free port)")
    s.add_argument("--token", help="token the browser must present (needed for a non-loopback --host;"
                   " default $EDGE_INSPECTOR_WEB_TOKEN)")


def cmd_eval(a: argparse.Namespace) -> int:
    from .evaluation.runs import evaluate, format_report

    run_dir = Path(a.run_dir)
    truth = a.truth
    if truth is None:
        summ = run_dir / "summary.json"
        if not summ.is_file():
            raise InputError("no summary.json: give --truth", path=run_dir)
        truth = json.loads(summ.read_text())["recording"] + ".gt.json"
    report = evaluate(run_dir, Path(truth), tol_mm=a.tol_mm, mark_tol_mm=a.mark_tol_mm)
    print(format_report(report))
    if a.json:
        Path(a.json).write_text(json.dumps(report, indent=2))
    return 0


def cmd_calibrate(a: argparse.Namespace) -> int:
    from .calibrate import calibrate, format_calibration, write_calibration
    from .config import load_station
    from .progress import Progress

    station = load_station(a.station)
    bars: dict[str, Progress] = {}

    def prog(name: str, done: int, total: int) -> None:
        bar = bars.setdefault(name, Progress(total, f"calibrate {name}"))
        bar.update(done)

    rec = calibrate(station, Path(a.station), [Path(g) for g in a.good], budget=a.budget,
                    defects=Path(a.defects) if a.defects else None, mm_per_px=a.mm_per_px,
                    model_path=a.model, progress=prog)
    for bar in bars.values():
        bar.close()
    path = write_calibration(rec, Path(a.station))
    print(format_calibration(rec, path))
    return 0


def cmd_learn_good(a: argparse.Namespace) -> int:
    from .novelty import LearnOptions, format_report, learn_good
    from .progress import Progress

    station = _station(a.station)
    bars: dict[str, Progress] = {}

    def prog(stage: str, done: int, total: int) -> None:
        bar = bars.setdefault(stage, Progress(total, f"learn-good {stage}", unit="units" if stage == "features" else "steps"))
        bar.total = max(1, total)
        bar.update(done)

    opts = LearnOptions(method=a.method, bank=a.bank, reservoir=a.reservoir, downscale=a.downscale, budget=a.budget,
                        mm_per_px=a.mm_per_px, min_area_px=a.min_area_px, peak_extent=a.peak_extent,
                        batch=a.batch)
    try:
        rep = learn_good([Path(g) for g in a.good], Path(a.out), station, opts, progress=prog)
    finally:
        for bar in bars.values():
            bar.close()
    print(format_report(rep))
    if a.speed_check:
        from .novelty.learn import format_speed, speed_check

        print(format_speed(*speed_check(Path(a.out), station), opts))
    return 0


def cmd_eval_model(a: argparse.Namespace) -> int:
    from .evaluation.datasets import find_dataset
    from .evaluation.model_eval import evaluate_model, load_model
    from .evaluation.model_report import format_report
    from .progress import Progress

    dataset = find_dataset(Path(a.dataset), a.layout, a.split)
    model = load_model(a.model, a.station)
    bar = Progress(1, "eval-model", unit="images")

    def prog(done: int, total: int) -> None:
        bar.total = total
        bar.update(done)

    try:
        report = evaluate_model(model, dataset, threshold=a.threshold, tile=a.tile, overlap=a.overlap,
                                limit=a.limit, batch=a.batch, progress=prog)
    finally:
        bar.close()
    print(format_report(report), end="")
    if a.json:
        Path(a.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


def cmd_compare_models(a: argparse.Namespace) -> int:
    from .evaluation.compare import compare, format_table

    rep = compare(a.models, Path(a.data), split=a.split, pasted=Path(a.pasted) if a.pasted else None,
                  recording=Path(a.recording) if a.recording else None,
                  station=Path(a.station) if a.station else None, tile_px=a.tile_px, runs=a.runs, limit=a.limit,
                  progress=lambda m: print(f"compare-models: {m}", file=sys.stderr, flush=True))
    print(format_table(rep), end="")
    Path(a.json).write_text(json.dumps(rep, indent=2) + "\n")
    return 0


def cmd_bench(a: argparse.Namespace) -> int:
    from .bench import bench, summary_line

    station = _station(a.station)
    res = bench(station, lines=a.lines, no_model=a.no_model, model_path=a.model)
    print(json.dumps(res, indent=2))
    print(summary_line(res), file=sys.stderr)  # stdout stays JSON
    return 0


def cmd_serve_model(a: argparse.Namespace) -> int:
    from .inference.serving import serve

    serve(a.model, host=a.host, port=a.port, max_batch=a.max_batch, queue_delay_us=a.queue_delay_us)
    return 0


def cmd_soak(a: argparse.Namespace) -> int:
    from .soak import format_report, soak

    if a.seconds <= 0 or a.sample_s <= 0:
        raise InputError(f"--seconds and --sample-s must be greater than 0, got {a.seconds} and {a.sample_s}")
    station = _station(a.station)
    print(format_report(soak(station, Path(a.out), seconds=a.seconds, sample_s=a.sample_s, model_path=a.model)))
    return 0


def cmd_record(a: argparse.Namespace) -> int:
    import threading

    from .live import stop_on_signals
    from .record import record

    station = _station(a.station)
    out = Path(a.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    with stop_on_signals(stop):
        result = record(station, out, seconds=a.seconds, lines=a.lines, stop=stop)
    print(result.summary_line())
    return 0


def cmd_run(a: argparse.Namespace) -> int:
    import os

    from .service import EXIT_DRAIN_TIMEOUT, run_service

    station = _station(a.station)
    out = Path(a.out or station.outputs.dir)
    server = None
    if a.web:  # the live view, fed by the station's [events] endpoint (edge_inspector/web/attach.py)
        from .web.attach import station_feed
        from .web.server import WebServer

        server = WebServer(out, host=a.host, port=a.port, token=a.token, feed=station_feed(station)).start()
    try:
        code = run_service(station, out, seconds=a.seconds, model_path=a.model, plc=a.plc, summary_table=not a.log_json)
    finally:
        if server is not None:
            server.stop()
    if code == EXIT_DRAIN_TIMEOUT:  # the stuck run is still in a thread: exit without waiting for it
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def cmd_monitor(a: argparse.Namespace) -> int:
    from .events import DEFAULT_ENDPOINT
    from .monitor import run_monitor

    endpoint = a.endpoint or (_station(a.station).events.endpoint if a.station else DEFAULT_ENDPOINT)
    if a.seconds is not None and a.seconds <= 0:
        raise InputError(f"--seconds must be greater than 0, got {a.seconds}")
    if a.last < 0:
        raise InputError(f"--last must be 0 or more, got {a.last}")
    try:
        return run_monitor(endpoint, seconds=a.seconds, once=a.once, as_json=a.json, last_n=a.last)
    except KeyboardInterrupt:
        return 0


def cmd_hil(a: argparse.Namespace) -> int:
    from .hil import HilOptions, exit_code, format_report, run_hil

    opts = HilOptions(station=a.station, cti=a.cti, device=a.device, plc=a.plc, seconds=a.seconds,
                      truth=a.truth, out=a.out, hide_timeout_s=a.hide_timeout)
    report = run_hil(opts, on_result=lambda r: print(f"  {r.name}: {r.status}", file=sys.stderr, flush=True))
    print(format_report(report))
    if a.report:
        Path(a.report).parent.mkdir(parents=True, exist_ok=True)
        Path(a.report).write_text(json.dumps(report, indent=2) + "\n")
    return exit_code(report)


def model_arg(text: str) -> str:
    """A --model value: builtin:NAME as given; a file path relative to the current folder, not the station's."""
    if text.startswith("builtin:"):
        return text
    return str(Path(text).expanduser().absolute())


def build_parser() -> argparse.ArgumentParser:
    # allow_abbrev=False: a subcommand option such as plc-sim --log must not be taken for an
    # abbreviation of the global --log-level / --log-json.
    p = argparse.ArgumentParser(prog="edge-inspector", description="Leather-hide inspection station.",
                                allow_abbrev=False)
    p.add_argument("--version", action="version", version=f"edge-inspector {__version__}")
    p.add_argument("--log-level", default="warning", help="debug, info, warning (default), error")
    p.add_argument("--log-json", action="store_true",
                   help="JSON log lines even on a terminal (for journald; `run` then logs its summary as JSON too)")
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("check-config", help="validate station files; list every problem")
    s.add_argument("files", nargs="+")
    s.set_defaults(fn=cmd_check_config)

    s = sub.add_parser("synth", help="write a synthetic 8K recording of hides with ground truth")
    s.add_argument("-o", "--output", required=True, help="output .raw file (truth goes to OUTPUT.gt.json)")
    s.add_argument("--hides", type=int, default=3)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--width", type=int, default=8192)
    s.add_argument("--channels", type=int, choices=(1, 3), default=3)
    s.add_argument("--masks", action="store_true", help="also write per-hide class-index mask PNGs")
    s.set_defaults(fn=cmd_synth)

    s = sub.add_parser("replay", help="inspect a recording offline")
    s.add_argument("recording")
    s.add_argument("--station", help="station TOML (default: built-in defaults, geometry from the recording)")
    s.add_argument("--out", help="results folder (default: outputs.dir of the station); one that holds an earlier"
                   " run's results is refused")
    s.add_argument("--overwrite", action="store_true", help="remove the earlier run's results from --out first")
    s.add_argument("--model", type=model_arg, help="ONNX model, or builtin:default / builtin:baseline (overrides the station)")
    s.add_argument("--realtime", action="store_true", help="replay at the recorded line rate with the live loss policy")
    s.add_argument("--plc", help="send marks to the PLC at HOST:PORT, or 'sim' to start a soft-PLC for the run"
                   " (needs --realtime; default: the station's [plc] host, none when empty)")
    s.add_argument("--no-verify", action="store_true", help="skip CRC checks of blocks")
    s.add_argument("--skip-corrupt", action="store_true", help="treat corrupt blocks as lost lines instead of stopping")
    s.add_argument("--width", type=int, help="headerless dump: pixels per line")
    s.add_argument("--channels", type=int, help="headerless dump: channels")
    s.add_argument("--dtype", choices=("uint8", "uint16"), help="headerless dump: sample type")
    add_web_arguments(s, flag=True)
    s.add_argument("--web-linger", type=float, help="with --web: stop serving this many seconds after the replay"
                   " (default: serve until Ctrl-C)")
    s.set_defaults(fn=cmd_replay)

    s = sub.add_parser("web", help="browse a run folder in a browser: hides, defects, maps, DXF, grading"
                       " (docs/operator.md)")
    s.add_argument("run_dir", help="the --out folder of a replay or run")
    add_web_arguments(s, flag=False)
    s.add_argument("--events", help="also show a running station live: its events endpoint, e.g. tcp://127.0.0.1:5556")
    s.add_argument("--seconds", type=float, help="stop after this many seconds (default: until Ctrl-C)")
    s.set_defaults(fn=cmd_web)

    s = sub.add_parser("eval", help="compare a run's results with synthetic ground truth")
    s.add_argument("run_dir")
    s.add_argument("--truth", help="ground truth JSON (default: the run's recording + .gt.json)")
    s.add_argument("--tol-mm", type=float, default=5.0, help="position tolerance in mm (default 5)")
    s.add_argument("--mark-tol-mm", type=float, default=10.0,
                   help="an ink mark this close to a GT defect box marks it (default 10)")
    s.add_argument("--json", help="also write the report as JSON here")
    s.set_defaults(fn=cmd_eval)

    s = sub.add_parser("eval-model", help="score a model on an image dataset (MVTec AD or YOLO layout), tiled"
                       " as on the station: pixel Dice/IoU/AUROC/AUPRO, image AUROC/F1, box recall (docs/models.md)")
    s.add_argument("dataset", help="dataset folder")
    s.add_argument("--model", type=model_arg, help="ONNX model, or builtin:default / builtin:baseline (default: the station's,"
                   " else builtin:default)")
    s.add_argument("--station", help="station TOML whose [model] settings to use (decoder, providers, thresholds)")
    s.add_argument("--split", help="folder to evaluate (MVTec: default test; YOLO: default val, else test, else the root)")
    s.add_argument("--layout", choices=("auto", "mvtec", "yolo"), default="auto", help="dataset layout (default auto)")
    s.add_argument("--tile", type=int, help="tile px (default: the model's fixed input size, else min(2048, the"
                   " longer image side rounded up to 32))")
    s.add_argument("--overlap", type=int, help="tile overlap px (default min(128, tile / 4))")
    s.add_argument("--threshold", type=float, help="score threshold of the predicted mask (default: the model's)")
    s.add_argument("--limit", type=int, help="evaluate this many images, evenly spaced over the sorted list")
    s.add_argument("--batch", type=int, default=4, help="tiles per model call (default 4)")
    s.add_argument("--json", help="also write the report as JSON here")
    s.set_defaults(fn=cmd_eval_model)

    s = sub.add_parser("compare-models", help="every model family side by side on the same photos, pasted masks and"
                       " synthetic recording: one table (docs/models.md)")
    s.add_argument("models", nargs="+", type=model_arg, help="ONNX files or builtin:NAME")
    s.add_argument("--data", required=True, help="YOLO-layout photos (box recall, false blobs, mAP50, patch accuracy)")
    s.add_argument("--split", default="val", help="split of --data (default val)")
    s.add_argument("--pasted", help="MVTec-layout folder with exact masks (python -m edge_inspector.evaluation.pasted):"
                   " pixel AUROC / Dice")
    s.add_argument("--recording", help="synthetic .raw with its .gt.json: replay + eval per model (needs --station)")
    s.add_argument("--station", help="station TOML for the replay")
    s.add_argument("--tile-px", type=int, default=2048, help="tile for tiles/s and MACs (default 2048)")
    s.add_argument("--runs", type=int, default=3, help="timed runs per model (default 3)")
    s.add_argument("--limit", type=int, help="evaluate this many images per dataset")
    s.add_argument("--json", default="compare-models.json", help="write the report here (default compare-models.json)")
    s.set_defaults(fn=cmd_compare_models)

    s = sub.add_parser("calibrate", help="set the station's score threshold from known-good leather for a budget"
                       " of false defects per m2; writes STATION.calibration.json (docs/models.md)")
    s.add_argument("good", nargs="+", help=".raw recordings of good hides and/or folders of good-leather images")
    s.add_argument("--station", required=True, help="station TOML (its model, camera, hide detection)")
    s.add_argument("--budget", type=float, default=0.2, help="false defects per m2 of good leather (default 0.2)")
    s.add_argument("--defects", help="optional labelled defect images (YOLO or MVTec AD folder): recall per threshold")
    s.add_argument("--mm-per-px", type=float, help="scale of the good-leather images (default: camera.mm_per_px)")
    s.add_argument("--model", type=model_arg, help="calibrate this model instead of the station's")
    s.set_defaults(fn=cmd_calibrate)

    s = sub.add_parser("learn-good", help="a novelty model from good leather alone (images or .raw recordings of good"
                       " hides), torch-free; threshold from held-out good leather (docs/models.md)")
    s.add_argument("good", nargs="+", help="folders of good-leather images and/or .raw recordings of good hides")
    s.add_argument("--out", required=True, help="the ONNX model to write")
    s.add_argument("--station", help="station TOML (camera channels and scale, hide detection, tiling)")
    s.add_argument("--method", choices=("knn", "gauss"), default="knn",
                   help="knn: nearest patch of a coreset memory bank (default); gauss: Mahalanobis to one Gaussian")
    s.add_argument("--bank", type=int, default=512, help="knn: memory bank size in patches (default 512; the"
                   " model's cost grows with it)")
    s.add_argument("--reservoir", type=int, default=100_000, help="knn: patches sampled before the coreset (default 100000)")
    s.add_argument("--downscale", type=int, choices=(1, 2, 4), default=2,
                   help="input px averaged into one before the features (default 2: 16 px map cells)")
    s.add_argument("--budget", type=float, default=0.2, help="false defects per m2 of held-out good leather (default 0.2)")
    s.add_argument("--mm-per-px", type=float, help="scale of the good-leather images (default: camera.mm_per_px)")
    s.add_argument("--min-area-px", type=float, help="smallest reported blob in tile px (default (cell / 2)^2 = 64)")
    s.add_argument("--batch", type=int, default=1, help="tiles per extractor call (default 1: as fast on a CPU as 4,"
                   " a third of the memory)")
    s.add_argument("--no-speed-check", dest="speed_check", action="store_false",
                   help="skip timing the learned model on this machine against the station's line rate")
    s.add_argument("--peak-extent", type=float, default=0.8,
                   help="each defect is reported down to this fraction of its own peak, the threshold decides only"
                   " whether it is there (default 0.8; 0 = down to the threshold; docs/models.md)")
    s.set_defaults(fn=cmd_learn_good)

    from .plc import plcsim
    from .train import __main__ as train_cli

    s = sub.add_parser("train", help="train the default model (needs the 'train' extra: torch); see docs/models.md")
    train_cli.add_arguments(s)
    s.set_defaults(fn=train_cli.run)

    s = sub.add_parser("plc-sim", help="soft-PLC: a Modbus TCP server with a simulated belt and marker")
    plcsim.add_arguments(s)
    s.set_defaults(fn=plcsim.run)

    s = sub.add_parser("bench", help="measure lines/s and tiles/s (JSON)")
    s.add_argument("--station", help="station TOML (default: built-in 8K defaults)")
    s.add_argument("--no-model", action="store_true", help="pipeline alone, no inference")
    s.add_argument("--model", type=model_arg, help="model to bench (overrides the station)")
    s.add_argument("--lines", type=int, default=None, help="lines to push (default 200000, 20000 with a model)")
    s.set_defaults(fn=cmd_bench)

    s = sub.add_parser("serve-model", help="serve a model to several stations: a Triton Inference Server on gRPC,"
                       " for [model] server = \"grpc://HOST:PORT\" (docs/serving.md); runs until SIGTERM")
    s.add_argument("--model", required=True, type=model_arg, help="ONNX model, or builtin:default / builtin:baseline"
                   " (the stations must read the same file)")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    s.add_argument("--port", type=int, default=8001, help="gRPC port (default 8001)")
    s.add_argument("--max-batch", type=int, default=16, help="largest batch the dynamic batcher forms (default 16)")
    s.add_argument("--queue-delay-us", type=int, default=2000,
                   help="how long the batcher waits for more requests to batch (default 2000 us)")
    s.set_defaults(fn=cmd_serve_model)

    s = sub.add_parser("soak", help="benchmark: a long live run with the soft-PLC; marks fired, missed, late,"
                       " placement error and memory over time (docs/performance.md)")
    s.add_argument("--station", required=True, help="station TOML with a camera (e.g. configs/stations/viky-sim.toml)")
    s.add_argument("--seconds", type=float, default=300.0, help="how long to run (default 300)")
    s.add_argument("--sample-s", type=float, default=10.0, help="memory sample period (default 10 s)")
    s.add_argument("--out", required=True, help="results folder (soak.json, summary.json, marks.jsonl, plc.jsonl)")
    s.add_argument("--model", type=model_arg, help="model (overrides the station)")
    s.set_defaults(fn=cmd_soak)

    s = sub.add_parser("run", help="inspect live from the station's camera until SIGTERM/Ctrl-C or --seconds;"
                       " the systemd service's main process (docs/service.md)")
    s.add_argument("--station", required=True, help="station TOML with source.kind = \"genicam\"")
    s.add_argument("--out", help="results folder (default: outputs.dir of the station); the files of the run"
                   " before move to OUT/runs/run-NNNN/, results.sqlite keeps every run")
    s.add_argument("--seconds", type=float, help="stop after this many seconds (drains, writes results)")
    s.add_argument("--model", type=model_arg, help="ONNX model, or builtin:default / builtin:baseline (overrides the station)")
    s.add_argument("--plc", help="send marks to the PLC at HOST:PORT, or 'sim' for a soft-PLC"
                   " (default: the station's [plc] host, none when empty)")
    add_web_arguments(s, flag=True)
    s.set_defaults(fn=cmd_run)

    s = sub.add_parser("monitor", help="live view of a station's events: rates, queues, PLC, hides, defects, alarms")
    s.add_argument("endpoint", nargs="?", help="ZeroMQ endpoint to subscribe to (default: the station's [events]"
                   " endpoint with --station, else tcp://127.0.0.1:5556)")
    s.add_argument("--station", help="station TOML whose [events] endpoint to use")
    s.add_argument("--once", action="store_true", help="wait for one metrics sample, show it, exit (1 when none comes)")
    s.add_argument("--seconds", type=float, help="stop after this many seconds (--once: wait at most this long, default 5)")
    s.add_argument("--json", action="store_true", help="print every decoded event as one JSON line instead of the view")
    s.add_argument("--last", type=int, default=5, help="hides and defects to list (default 5)")
    s.set_defaults(fn=cmd_monitor)

    s = sub.add_parser("hil", help="hardware-in-the-loop checks of a station: camera, encoder, PLC, marks (hil/README.md)")
    s.add_argument("--station", help="station TOML (default: configs/stations/viky-sim.toml, the simulator)")
    s.add_argument("--cti", help="GenTL producer to use instead of the station's source.genicam.cti")
    s.add_argument("--device", help="camera: list index, serial number or user-defined name (overrides the station)")
    s.add_argument("--plc", help="PLC under test at HOST:PORT, or 'sim' for a soft-PLC (default: the station's"
                   " [plc] host; the soft-PLC in simulator mode)")
    s.add_argument("--seconds", type=float, default=5.0, help="how long to stream from the camera (default 5)")
    s.add_argument("--report", help="also write the report as JSON here")
    s.add_argument("--truth", help="physical test hide: its defects in the hide frame (hil/README.md)")
    s.add_argument("--hide-timeout", type=float, default=120.0,
                   help="with --truth: how long to wait for the test hide to pass the camera (default 120 s)")
    s.add_argument("--out", help="keep the work files here (soft-PLC log, marking run); default: a temporary folder")
    s.set_defaults(fn=cmd_hil)

    s = sub.add_parser("record", help="record camera lines into a .raw file")
    s.add_argument("--station", required=True, help="station TOML with source.kind = \"genicam\"")
    s.add_argument("-o", "--output", required=True, help="output .raw file")
    until = s.add_mutually_exclusive_group(required=True)
    until.add_argument("--seconds", type=float, help="record this many seconds")
    until.add_argument("--lines", type=int, help="record this many lines")
    s.set_defaults(fn=cmd_record)
    return p


def main(argv: list[str] | None = None) -> int:
    from .logs import configure

    a = build_parser().parse_args(argv)
    # `run` logs to stdout (journald under the service); elsewhere stdout is the command's output
    configure(a.log_level, json=True if a.log_json else None, stream="stdout" if a.cmd == "run" else "stderr")
    if getattr(a, "cmd", None) == "bench" and a.lines is None:
        a.lines = 200_000 if a.no_model else 20_000
    try:
        return int(a.fn(a) or 0)
    except InputError as e:
        print(f"edge-inspector {a.cmd}: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
