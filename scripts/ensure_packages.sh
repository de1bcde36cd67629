#!/usr/bin/env bash
# Make sure commands exist: scripts/ensure_packages.sh COMMAND=DEBIAN_PACKAGE ...
#
# Missing commands are installed from their Debian packages with apt-get when this
# runs as root on a system that has apt-get. Otherwise the script prints the exact
# packages to install and exits with status 1.
set -euo pipefail

missing=()
packages=()
for pair in "$@"; do
    command_name=${pair%%=*}
    package=${pair#*=}
    if ! command -v "$command_name" >/dev/null 2>&1; then
        missing+=("$command_name")
        if [[ " ${packages[*]-} " != *" $package "* ]]; then
            packages+=("$package")
        fi
    fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
    exit 0
fi

if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "Installing ${packages[*]} for the missing commands ${missing[*]} ..."
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y "${packages[@]}"
    for command_name in "${missing[@]}"; do
        if ! command -v "$command_name" >/dev/null 2>&1; then
            echo "error: $command_name is still missing after installing ${packages[*]}" >&2
            exit 1
        fi
    done
    exit 0
fi

echo "error: missing commands: ${missing[*]}." >&2
echo "Install them, then run the command again. On Debian or Ubuntu:" >&2
echo "    sudo apt-get update && sudo apt-get install -y ${packages[*]}" >&2
if [[ " ${packages[*]} " == *" prometheus "* ]]; then
    echo "Elsewhere, put the prometheus and promtool binaries from" >&2
    echo "https://prometheus.io/download/ on your PATH." >&2
fi
exit 1
