#!/usr/bin/env bash
# Idempotent setup: Debian packages (R, pandoc, chromium), a .venv with the pinned torch and rpy2,
# the Python package (editable, with test extras) and the R package. Fast when already done.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
# libopenblas0-pthread: R's BLAS. The Python core runs inside R (reticulate), and torch's matrix
# products then resolve to the BLAS R loaded: with Debian's reference BLAS they were ~10-28x
# slower in R than in Python (docs/performance.md, "Training from R").
DEBS="libopenblas0-pthread r-base-core r-cran-seurat r-cran-reticulate r-bioc-singlecellexperiment r-cran-testthat r-cran-knitr r-cran-rmarkdown r-bioc-biocstyle pandoc chromium"
PY=${PYTHON:-python3.11}

missing=""
for p in $DEBS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  if [ "$(id -u)" = "0" ]; then
    echo "[setup] installing Debian packages:$missing"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
  else
    echo "[setup] missing Debian packages:$missing" >&2
    echo "[setup] run as root:  apt-get update && apt-get install -y$missing" >&2
    exit 1
  fi
fi

if ! command -v "$PY" >/dev/null; then
  echo "[setup] $PY not found: install Python 3.11 (apt-get install python3.11 python3.11-venv)" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv"
  "$PY" -m venv .venv
fi
stamp=".venv/.convnetvae-$(cat pyproject.toml | sha1sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  echo "[setup] installing Python packages into .venv"
  .venv/bin/pip install -q --upgrade pip >/dev/null
  # the CPU wheel of torch 2.13.0 lies on this machine's disk; pin it exactly first
  .venv/bin/pip install -q "torch==2.13.0"
  .venv/bin/pip install -q -e ".[test,r]"
  rm -f .venv/.convnetvae-*
  touch "$stamp"
fi

if [ -f DESCRIPTION ]; then
  # The package is built into .venv/Rlib (what `make test` uses, first on R_LIBS), with the path
  # of this .venv's Python recorded in it, then copied where a plain R session finds it.
  rhash=$(cat DESCRIPTION NAMESPACE R/*.R man/*.Rd inst/extdata/* 2>/dev/null | sha1sum | cut -c1-12)
  record="python=$ROOT/.venv/bin/python source=$rhash"
  rstamp=".venv/.rpkg-$rhash"
  if [ ! -f "$rstamp" ]; then
    echo "[setup] installing the R package ConvNetVAE"
    mkdir -p .venv/Rlib
    R CMD INSTALL --no-test-load --library=.venv/Rlib . >/dev/null 2>.venv/r-install.log || { cat .venv/r-install.log >&2; exit 1; }
    printf '%s\n' "$ROOT/.venv/bin/python" > .venv/Rlib/ConvNetVAE/python-path
    printf '%s\n' "$record" > .venv/Rlib/ConvNetVAE/installed-from
    rm -f .venv/.rpkg-*
    touch "$rstamp"
  fi
  bash scripts/install_r_user_library.sh "$ROOT/.venv/Rlib/ConvNetVAE" "$record"
fi
echo "[setup] ready"
