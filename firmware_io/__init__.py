"""The PLC register map and the PLC-side program: the single source of truth for the Modbus
contract (docs/architecture.md section 8).

Installed as the data package ``edge_inspector.firmware_io`` (a package-dir mapping in
pyproject.toml), so the map is read from here by the installed program as well as from the
source tree. ``edge_inspector.plc.regmap`` loads and validates ``register_map.toml`` and
generates docs/register-map.md and the register block of ``edge_inspector_marks.st``.
"""
