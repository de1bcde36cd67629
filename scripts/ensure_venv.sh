#!/usr/bin/env bash
# Create .venv if needed and install a requirements file into it:
#     scripts/ensure_venv.sh requirements.txt | requirements-test.txt
#
# A stamp file stores the hash of the requirements files last installed, so a run
# with unchanged requirements only checks the hash and returns.
set -euo pipefail

requirements=${1:?usage: scripts/ensure_venv.sh REQUIREMENTS_FILE}
venv=.venv
python=${PYTHON:-python3}

if [[ ! -f $requirements ]]; then
    echo "error: $requirements not found; run this from the repository root" >&2
    exit 1
fi

# A virtualenv copied from another machine can point at a Python that is not here.
if [[ -e $venv ]] && ! "$venv/bin/python" -c "import sys" >/dev/null 2>&1; then
    echo "The virtualenv in $venv does not run on this machine; recreating it."
    rm -rf "$venv"
fi

if [[ ! -x $venv/bin/python ]]; then
    if ! command -v "$python" >/dev/null 2>&1; then
        echo "error: $python not found; install Python 3.11 or newer (Debian: apt-get install python3 python3-venv)" >&2
        exit 1
    fi
    if ! "$python" -c "import sys; sys.exit(sys.version_info < (3, 11))"; then
        echo "error: $($python --version) is too old; Behavemail needs Python 3.11 or newer" >&2
        exit 1
    fi
    if ! "$python" -m venv "$venv"; then
        rm -rf "$venv"
        # Debian and Ubuntu ship the venv module (with ensurepip) as a separate package.
        if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
            DEBIAN_FRONTEND=noninteractive apt-get update
            DEBIAN_FRONTEND=noninteractive apt-get install -y python3-venv
            "$python" -m venv "$venv"
        else
            echo "error: '$python -m venv' failed; on Debian or Ubuntu run: sudo apt-get install -y python3-venv" >&2
            exit 1
        fi
    fi
fi

stamp=$venv/.installed-$(basename "$requirements").sha256
# requirements-test.txt includes requirements.txt, so a change in either one counts.
wanted=$(cat requirements*.txt "$requirements" | sha256sum | cut -d' ' -f1)
if [[ -f $stamp && $(cat "$stamp") == "$wanted" ]]; then
    exit 0
fi

echo "Installing $requirements into $venv ..."
"$venv/bin/python" -m pip install --disable-pip-version-check --quiet --upgrade pip
"$venv/bin/python" -m pip install --disable-pip-version-check --quiet -r "$requirements"
echo "$wanted" > "$stamp"
