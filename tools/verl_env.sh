#!/usr/bin/env bash
# A venv for tests/export_verl.rs: verl from PyPI (pinned, CPU only) for its trainer config,
# its RLHFDataset and its reward plumbing; and verl 0.4.0's config folder (the base of the
# FlowRL authors' fork) for composing FlowRL exports. torch, transformers and numpy come from
# BASE_PYTHON (a python that has them) through a .pth file, so they are not installed twice;
# verl itself goes in with --no-deps (its full requirements pull vLLM-era pins and wandb) plus
# the few packages the checks import. About 150 MB, mostly ray.
#
# usage: tools/verl_env.sh VENV_DIR BASE_PYTHON
set -euo pipefail
VENV="$1"
BASE="$2"
VERL_VERSION=0.9.1
FLOWRL_VERL_BASE=0.4.0
if [ -f "$VENV/.retort-verl-$VERL_VERSION" ]; then
  exit 0
fi
rm -rf "$VENV"
"$BASE" -m venv "$VENV"
PIP=("$VENV/bin/pip" install --quiet --disable-pip-version-check)
SHARED="$("$BASE" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
OWN="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
# Appended after the venv's own site-packages: the venv's packages win.
echo "$SHARED" > "$OWN/zz_retort_base.pth"
"${PIP[@]}" --no-deps "verl==$VERL_VERSION"
"${PIP[@]}" "tensordict==0.10.0" ray codetiming dill hydra-core pandas pyarrow datasets pillow
"$VENV/bin/pip" download --quiet --disable-pip-version-check --no-deps "verl==$FLOWRL_VERL_BASE" -d "$VENV/dl"
"$VENV/bin/python" - "$VENV" "$FLOWRL_VERL_BASE" <<'PY'
import glob, os, sys, zipfile
venv, version = sys.argv[1], sys.argv[2]
wheel = glob.glob(os.path.join(venv, "dl", f"verl-{version}-*.whl"))[0]
out = os.path.join(venv, f"verl-{version}-config")
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.startswith("verl/trainer/config/") and name.endswith(".yaml"):
            target = os.path.join(out, name[len("verl/trainer/config/"):])
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "wb") as f:
                f.write(z.read(name))
PY
rm -rf "$VENV/dl"
"$VENV/bin/python" -c "import verl, hydra, ray; from verl.utils.dataset.rl_dataset import RLHFDataset; from verl.utils.config import validate_config"
touch "$VENV/.retort-verl-$VERL_VERSION"
