"""The PLC a run talks to (``--plc``) and the soft-PLC child process (edge_inspector.plc.launch)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pymodbus.client import ModbusTcpClient

from edge_inspector.config import Plc, load_station
from edge_inspector.errors import InputError
from edge_inspector.plc.launch import SIM, SoftPlcProcess, parse_plc_address, plc_address, plc_target
from edge_inspector.plc.link import UNIT_KW
from edge_inspector.plc.regmap import default_map

ROOT = Path(__file__).resolve().parents[1]


def test_parse_plc_address() -> None:
    assert parse_plc_address("192.168.0.10:1502") == ("192.168.0.10", 1502)
    assert parse_plc_address("plc-1") == ("plc-1", 502)
    assert parse_plc_address("plc-1", 5020) == ("plc-1", 5020)
    for bad in ("no-port-here:x", ":502", "plc:0", "plc:65536"):
        with pytest.raises(InputError, match="HOST:PORT"):
            parse_plc_address(bad)


def test_plc_target_and_address_fall_back_to_the_station() -> None:
    none, station = Plc(), Plc(host="10.0.0.5", port=1502)
    assert plc_target(None, none) is None and plc_address(None, none) is None
    assert plc_target(None, station) == "10.0.0.5:1502" and plc_address(None, station) == ("10.0.0.5", 1502)
    assert plc_target(SIM, station) == "sim" and plc_address(SIM, station) is None
    assert plc_target("10.0.0.6:502", station) == "10.0.0.6:502"
    assert plc_address("10.0.0.6", station) == ("10.0.0.6", 1502)  # the station's port
    with pytest.raises(InputError, match="HOST:PORT"):
        plc_address("10.0.0.6:x", station)


def test_soft_plc_process_listens_logs_and_stops(tmp_path: Path) -> None:
    st = load_station(ROOT / "configs" / "stations" / "viky-sim.toml")
    log, state = tmp_path / "plc.jsonl", tmp_path / "plc-state.json"
    sim = SoftPlcProcess.for_station(st, log_path=log, state_path=state)
    try:
        assert "listening on 127.0.0.1:" in sim.banner
        host, port = sim.address
        assert host == "127.0.0.1" and sim.where == f"{host}:{port}"
        assert sim.speed_mm_s == pytest.approx(st.belt.speed_m_per_min * 1000.0 / 60.0)
        m = default_map()
        c = ModbusTcpClient(host, port=port, timeout=1.0, retries=0)
        assert c.connect()
        try:
            rr = c.read_holding_registers(m.reg("PLC_MAP_VERSION").address, count=1, **{UNIT_KW: st.plc.unit_id})
            assert not rr.isError() and rr.registers == [m.version]
        finally:
            c.close()
        assert [e["event"] for e in sim.events("start")] == ["start"]
    finally:
        out = sim.stop()
    assert sim.returncode == 0 and "soft-plc stopped: fired 0" in out
    assert state.is_file() and json.loads(log.read_text().splitlines()[-1])["event"] == "stop"
    assert sim.stop() == ""  # stopped once


def test_a_soft_plc_that_does_not_start_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="did not start"):
        SoftPlcProcess(1000.0, ["--no-such-option"], log_path=tmp_path / "plc.jsonl")
