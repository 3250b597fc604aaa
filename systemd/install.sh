#!/usr/bin/env bash
# Install edge-inspector as a systemd service on a station (docs/service.md).
#
#   sudo systemd/install.sh --station configs/stations/viky-sim.toml --instance line-1
#   sudo systemd/install.sh --station my-line.toml --instance line-1 --dry-run   # print, change nothing
#
# Creates the system user edge-inspector (the unit adds the group video), a virtual environment
# in /opt/edge-inspector/.venv with this checkout installed, the unit
# /etc/systemd/system/edge-inspector@.service, the station file /etc/edge-inspector/INSTANCE.toml
# (kept when it exists, unless --force), then enables and starts edge-inspector@INSTANCE.
set -euo pipefail

PREFIX=/opt/edge-inspector
CONF_DIR=/etc/edge-inspector
UNIT_DIR=/etc/systemd/system
SERVICE_USER=edge-inspector
PYTHON=${PYTHON:-python3}
SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

station=""
instance=""
dry_run=0
force=0
start=1

usage() {
    cat <<EOF
usage: $0 --station FILE --instance NAME [--dry-run] [--force] [--no-start]

  --station FILE    station TOML to install as $CONF_DIR/NAME.toml
  --instance NAME   service instance (the line's name): edge-inspector@NAME
  --dry-run         print the commands, change nothing
  --force           overwrite an existing $CONF_DIR/NAME.toml
  --no-start        install and enable, but do not start now
EOF
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --station) station=${2:?--station needs a file}; shift 2 ;;
        --instance) instance=${2:?--instance needs a name}; shift 2 ;;
        --dry-run) dry_run=1; shift ;;
        --force) force=1; shift ;;
        --no-start) start=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "$0: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done

if [[ -z "$station" || -z "$instance" ]]; then
    usage >&2
    exit 2
fi
if [[ ! -f "$station" ]]; then
    echo "$0: station file not found: $station" >&2
    exit 2
fi
if [[ ! "$instance" =~ ^[A-Za-z0-9][A-Za-z0-9_.-]*$ ]]; then
    echo "$0: instance name '$instance': use letters, digits, '-', '_' and '.' (it names files and the unit)" >&2
    exit 2
fi
if [[ $dry_run -eq 0 && $EUID -ne 0 ]]; then
    echo "$0: run as root (or with --dry-run to see what it would do)" >&2
    exit 2
fi

# Print a command; run it unless --dry-run.
run() {
    printf '+ %s\n' "$*"
    if [[ $dry_run -eq 0 ]]; then
        "$@"
    fi
}

if ! getent group video >/dev/null; then
    run groupadd --system video
fi
if ! getent passwd "$SERVICE_USER" >/dev/null; then
    run useradd --system --user-group --home-dir /var/lib/edge-inspector \
        --no-create-home --shell /usr/sbin/nologin "$SERVICE_USER"
fi

run install -d -m 0755 "$PREFIX" "$PREFIX/docs"
if [[ ! -x "$PREFIX/.venv/bin/python" ]]; then
    run "$PYTHON" -m venv "$PREFIX/.venv"
fi
run "$PREFIX/.venv/bin/python" -m pip install --quiet --upgrade pip
run "$PREFIX/.venv/bin/python" -m pip install --quiet "$SRC"
run install -m 0644 "$SRC/docs/service.md" "$PREFIX/docs/service.md"
# The station must be valid before it is installed (the unit would only restart on it).
run "$PREFIX/.venv/bin/edge-inspector" check-config "$station"

run install -d -m 0750 -o root -g "$SERVICE_USER" "$CONF_DIR"
target="$CONF_DIR/$instance.toml"
if [[ -e "$target" && $force -eq 0 ]]; then
    echo "keeping $target (use --force to replace it)"
else
    run install -m 0640 -o root -g "$SERVICE_USER" "$station" "$target"
fi

run install -m 0644 "$SRC/systemd/edge-inspector@.service" "$UNIT_DIR/edge-inspector@.service"
run systemctl daemon-reload
if [[ $start -eq 1 ]]; then
    run systemctl enable --now "edge-inspector@$instance.service"
    echo "check: systemctl status edge-inspector@$instance; logs: journalctl -u edge-inspector@$instance -o cat"
else
    run systemctl enable "edge-inspector@$instance.service"
fi
