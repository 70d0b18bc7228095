#!/usr/bin/env bash
# Every test: R package (testthat, R CMD check, vignette), then Python (pytest: unit, notebooks,
# browser). Exits non-zero when anything fails. Called by `make test` after setup.
set -uo pipefail
cd "$(dirname "$0")/.."
export R_LIBS="$PWD/.venv/Rlib"
export CONVNETVAE_PYTHON="$PWD/.venv/bin/python"
export RETICULATE_PYTHON="$PWD/.venv/bin/python"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
mkdir -p test-output
status=0
start=$(date +%s)

step() {  # name, command...
  local name=$1; shift
  local t0=$(date +%s)
  echo "=== $name"
  if "$@"; then
    echo "=== $name: ok ($(( $(date +%s) - t0 )) s)"
  else
    echo "=== $name: FAILED ($(( $(date +%s) - t0 )) s)"
    status=1
  fi
}

if [ -f DESCRIPTION ] && [ -d tests/testthat ]; then
  step "R testthat" Rscript -e 'res <- testthat::test_local(".", reporter = c("summary", "fail"), stop_on_failure = TRUE)'
  if [ -f scripts/r_check.sh ]; then step "R CMD check" bash scripts/r_check.sh; fi
  if [ -f vignettes/ConvNetVAE.Rmd ]; then
    step "R vignette" Rscript -e 'rmarkdown::render("vignettes/ConvNetVAE.Rmd", output_dir = "test-output/vignette", quiet = TRUE)'
  fi
fi

step "pytest" .venv/bin/python -m pytest tests/python -p no:cacheprovider --timeout=900 -q

echo "=== all tests finished in $(( $(date +%s) - start )) s, status $status"
exit $status
