# Source this file to use semloc_ros from a shell:  source scripts/env.sh
# Puts the project virtualenv first on PATH and sets the environment every ROS 2 process needs here.
_semloc_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
_semloc_venv=${SEMLOC_VENV:-$_semloc_root/.venv}
export PATH="$_semloc_venv/bin:$PATH"
export VIRTUAL_ENV="$_semloc_venv"
export AMENT_PREFIX_PATH="$_semloc_venv${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
# DDS discovery stays on this machine (Kilted ignores ROS_LOCALHOST_ONLY).
export ROS_AUTOMATIC_DISCOVERY_RANGE=${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}
export ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-42}
unset _semloc_root _semloc_venv
