#!/usr/bin/env bash
# R CMD build + R CMD check --no-manual of the R package ConvNetVAE, in test-output/rcheck.
# Fails on any ERROR or WARNING (R CMD check itself only fails on ERROR); NOTEs are printed.
# By default the vignette is neither built nor re-run here, because scripts/run_tests.sh renders
# it on its own; CONVNETVAE_CHECK_FULL=1 builds and checks it too (adds ~2-4 min).
# Needs R_LIBS / CONVNETVAE_PYTHON as exported by the Makefile (the tests use the Python core).
set -euo pipefail
cd "$(dirname "$0")/.."
out="$(pwd)/test-output/rcheck"
rm -rf "$out"
mkdir -p "$out/src/ConvNetVAE"
# Stage only the R package's files: R CMD build copies the whole directory before applying
# .Rbuildignore, and the repository holds .venv (gigabytes).
cp -R DESCRIPTION NAMESPACE LICENSE .Rbuildignore R man inst "$out/src/ConvNetVAE/"
mkdir -p "$out/src/ConvNetVAE/tests" "$out/src/ConvNetVAE/vignettes"
cp -R tests/testthat tests/testthat.R "$out/src/ConvNetVAE/tests/"
cp vignettes/*.Rmd "$out/src/ConvNetVAE/vignettes/"
rm -rf "$out/src/ConvNetVAE/tests/testthat/_snaps"
src="$out/src/ConvNetVAE"
cd "$out"
export _R_CHECK_FORCE_SUGGESTS_=false
export _R_CHECK_CRAN_INCOMING_=false
if [ "${CONVNETVAE_CHECK_FULL:-0}" = "1" ]; then
  R CMD build "$src" >build.log 2>&1 || { cat build.log; exit 1; }
  check_args=(--no-manual)
else
  R CMD build --no-build-vignettes "$src" >build.log 2>&1 || { cat build.log; exit 1; }
  check_args=(--no-manual --ignore-vignettes)
fi
tarball=$(ls ConvNetVAE_*.tar.gz)
rc=0
R CMD check "${check_args[@]}" "$tarball" >check.log 2>&1 || rc=$?
log=ConvNetVAE.Rcheck/00check.log
grep -E "^\* checking .*(NOTE|WARNING|ERROR)$" -A6 "$log" || true
status=$(grep -E "^Status:" "$log" || echo "Status: unknown")
echo "R CMD check ${check_args[*]}: $status"
if [ "$rc" -ne 0 ] || grep -qE "WARNING|ERROR|unknown" <<<"$status"; then
  tail -40 check.log
  testlog=ConvNetVAE.Rcheck/tests/testthat.Rout.fail
  [ -f "$testlog" ] && tail -60 "$testlog"
  exit 1
fi
