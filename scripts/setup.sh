#!/usr/bin/env bash
# Set up semloc_ros in a project virtualenv (idempotent), then optionally run the demo or the tests.
#
#   scripts/setup.sh            set up only
#   scripts/setup.sh --demo     set up, then run the demo on the embedded drive (README, command 1)
#   scripts/setup.sh --test     set up, then run ruff and the test suite (README, command 2; CI runs this)
#
# What it installs: ROS 2 Kilted wheels (rclpy over Fast DDS and the message packages) from PyPI,
# torch/torchvision, faiss-cpu, pyproj, rosbags, ...  (requirements.txt), the geographic_msgs, tf2_msgs
# and semloc_msgs message packages generated from interfaces/, and semloc_ros itself (editable).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${SEMLOC_VENV:-$root/.venv}
python=${SEMLOC_PYTHON:-python3.11}
action=${1:-}

log() { echo "[setup] $*"; }

if [[ ! -x "$venv/bin/python" ]]; then
  log "creating virtualenv $venv"
  "$python" -m venv "$venv"
fi

stamp_of() { cat "$@" | sha256sum | cut -d' ' -f1; }

req_stamp="$venv/.semloc_requirements"
req_hash=$(stamp_of "$root/requirements.txt")
if [[ ! -f "$req_stamp" || "$(cat "$req_stamp")" != "$req_hash" ]]; then
  log "installing requirements (about 2 minutes the first time)"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$root/requirements.txt" 2>&1 |
    grep -v "^WARNING: Location" || true
  "$venv/bin/python" -c "import rclpy, torch, torchvision, faiss, pyproj, rosbags, cv2" >/dev/null
  echo "$req_hash" >"$req_stamp"
fi

"$root/scripts/build_interfaces.sh" "$venv"

pkg_stamp="$venv/.semloc_package"
pkg_hash=$(stamp_of "$root/setup.py" "$root/setup.cfg" "$root/package.xml")
if [[ ! -f "$pkg_stamp" || "$(cat "$pkg_stamp")" != "$pkg_hash" ]] ||
  ! "$venv/bin/python" -c "import semloc_ros" 2>/dev/null; then
  log "installing semloc_ros (editable)"
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e "$root" 2>&1 |
    grep -v "^WARNING: Location" || true
  echo "$pkg_hash" >"$pkg_stamp"
fi
# An editable pip install skips data_files: register the package with the ament index and expose its
# share/ files (package.xml, launch/, config/, rviz/) the way an ament_python install lays them out.
share="$venv/share/semloc_ros"
mkdir -p "$share" "$venv/share/ament_index/resource_index/packages"
touch "$venv/share/ament_index/resource_index/packages/semloc_ros"
for item in package.xml launch config rviz; do ln -sfn "$root/$item" "$share/$item"; done

# shellcheck source=scripts/env.sh
source "$root/scripts/env.sh"
log "ready: source scripts/env.sh to use semloc and the nodes from a shell"

case "$action" in
  "") ;;
  --demo) shift; exec semloc demo "$@" ;;
  --test) shift; cd "$root"; ruff check semloc_ros test scripts launch; exec python -m pytest "$@" ;;
  *) echo "unknown option: $action (use --demo or --test)" >&2; exit 2 ;;
esac
