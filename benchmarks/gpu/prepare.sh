#!/usr/bin/env bash
# Run HERE (the development machine), before a GPU session: what check.sh needs there, in
# two folders at the repository root that git ignores and the device tool carries
# (run(carry=[".whl", ".data"], ...)):
#   .whl/   the wheels of what `pelletseg bench --device cuda` needs and the lent GPU
#           machine's image lacks (requirements.txt), for that machine's Python;
#   .data/  NASA EBC (MIT: it may be copied with its LICENSE.txt) from ../shared/data, the
#           real images of `pelletseg agreement` there. LumenStone S2 stays here (its source
#           states no licence: never copied).
#
#   bash benchmarks/gpu/prepare.sh                  # Python 3.12 (the H200 image's)
#   PY_VERSION=3.11 bash benchmarks/gpu/prepare.sh  # to rehearse check.sh on this machine
set -euo pipefail
cd "$(dirname "$0")/../.."
py=${PY_VERSION:-3.12}
out=.whl
rm -rf "$out"
mkdir -p "$out"
platforms=()
for p in manylinux_2_28 manylinux_2_27 manylinux_2_24 manylinux_2_17 manylinux2014 manylinux1; do
  platforms+=(--platform "${p}_x86_64")
done
quiet() { grep -v "is ignored: it is neither a file nor a directory" || true; }
python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
  --python-version "$py" --implementation cp "${platforms[@]}" -d "$out" \
  -r benchmarks/gpu/requirements.txt 2>&1 | quiet
# pyvips 3 is published as a source distribution only: built here into a pure-Python wheel
# (it loads libvips from pyvips-binary at run time, ABI mode: nothing to compile there).
python3 -m pip wheel --quiet --disable-pip-version-check --no-deps -w "$out" "pyvips==3.2.0" 2>&1 | quiet
n=$(ls "$out"/*.whl | wc -l)
rm -rf .data
mkdir -p .data
if [ -d ../shared/data/nasa-ebc ]; then
  cp -r ../shared/data/nasa-ebc .data/
else
  echo "../shared/data/nasa-ebc is absent: the agreement stage will have no images"
fi
echo "$n wheels for Python $py in $out ($(du -sh "$out" | cut -f1)), .data $(du -sh .data | cut -f1);" \
  "the device tool carries 64 MiB with the tree"
