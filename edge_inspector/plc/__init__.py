"""The PLC transport: everything between a planned Mark and the line PLC's marker.

- ``regmap``: the register map (``firmware_io/register_map.toml``), encoding and decoding.
- ``regmap_doc``: the files generated from the map (docs/register-map.md, the ST register block).
- ``outbox``: the persistent outbox (SQLite) where marks wait until the PLC acknowledges them.
- ``link``: ``PlcLink``, the Modbus TCP client thread (heartbeat, ring, resend, reconnect).
- ``softplc``: ``SoftPlc``, a real Modbus TCP server with a simulated belt and marker.
- ``launch``: which PLC a run talks to (``--plc``), and ``SoftPlcProcess``, a soft-PLC child process.
"""
