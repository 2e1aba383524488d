#!/usr/bin/env bash
# Generate and install the ROS 2 message packages kept in interfaces/ (subsets of geographic_msgs and tf2_msgs,
# and semloc_msgs) into a virtualenv that holds the ROS 2 Kilted PyPI wheels, with plain cmake (no colcon needed).
# Usage: scripts/build_interfaces.sh VENV
# Idempotent: a package is rebuilt only when its definition files changed (hash stamp in VENV).
set -euo pipefail
venv=$(cd "${1:?usage: build_interfaces.sh VENV}" && pwd)
root=$(cd "$(dirname "$0")/.." && pwd)
py="$venv/bin/python"
py_include=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
py_purelib=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')

# The wheels' CMake export files hard-code the wheel builder's Python paths; point them at ours.
builder=/opt/python/cp311-cp311
{ grep -rl --include='*.cmake' "$builder" "$venv/share" 2>/dev/null || true; } | while read -r f; do
  sed -i -e "s#${builder}/include/python3.11#${py_include}#g" \
    -e "s#${builder}/lib/python3.11/site-packages#${py_purelib}#g" "$f"
done

export AMENT_PREFIX_PATH="$venv" CMAKE_PREFIX_PATH="$venv"
jobs=$(nproc)
for pkg in geographic_msgs tf2_msgs semloc_msgs; do
  src="$root/interfaces/$pkg"
  stamp="$venv/share/$pkg/.semloc_build_stamp"
  hash=$(cat "$src/CMakeLists.txt" "$src/package.xml" "$src"/msg/*.msg | sha256sum | cut -d' ' -f1)
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$hash" ]] && "$py" -c "import $pkg.msg" 2>/dev/null; then
    echo "[build_interfaces] $pkg up to date"
    continue
  fi
  echo "[build_interfaces] building $pkg (about a minute)"
  build=$(mktemp -d)
  cmake -S "$src" -B "$build" -DCMAKE_INSTALL_PREFIX="$venv" -DCMAKE_BUILD_TYPE=Release \
    -DPython3_EXECUTABLE="$py" -DBUILD_TESTING=OFF \
    -DCMAKE_INSTALL_RPATH="$venv/lib" >"$build/configure.log" 2>&1 ||
    { cat "$build/configure.log"; exit 1; }
  cmake --build "$build" -j "$jobs" >"$build/build.log" 2>&1 || { tail -50 "$build/build.log"; exit 1; }
  cmake --install "$build" >"$build/install.log" 2>&1 || { tail -50 "$build/install.log"; exit 1; }
  rm -rf "$build"
  "$py" -c "import $pkg.msg" || { echo "[build_interfaces] $pkg built but does not import"; exit 1; }
  echo "$hash" >"$stamp"
done
