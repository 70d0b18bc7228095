#!/usr/bin/env bash
# Copy the built R package where a plain R session (Rscript, RStudio) finds it: R's site library
# when run as root (e.g. /usr/local/lib/R/site-library), else the user library R_LIBS_USER
# (created if missing). CONVNETVAE_R_LIBRARY=<dir> picks another library, =none skips this.
# Fast when that copy is already this build (same sources, same Python): compares `installed-from`.
#
# Usage: install_r_user_library.sh <built package dir> <record>
set -euo pipefail
built=$1
record=$2
target=${CONVNETVAE_R_LIBRARY:-}
if [ "$target" = "none" ]; then
  exit 0
fi
if [ -z "$target" ]; then
  # ask a plain R (no R_LIBS of the Makefile) where packages go
  if [ "$(id -u)" = "0" ]; then
    target=$(env -u R_LIBS -u R_LIBS_USER Rscript --vanilla -e 'cat(.Library.site[1])')
  else
    target=$(env -u R_LIBS Rscript --vanilla -e 'cat(path.expand(Sys.getenv("R_LIBS_USER")))')
  fi
fi
if [ -z "$target" ]; then
  echo "[setup] R reports no site or user library; set CONVNETVAE_R_LIBRARY=<dir>" >&2
  exit 1
fi
if [ -f "$target/ConvNetVAE/installed-from" ] && \
   [ "$(cat "$target/ConvNetVAE/installed-from")" = "$record" ]; then
  exit 0
fi
mkdir -p "$target"
if [ ! -w "$target" ]; then
  echo "[setup] cannot write the R library $target: set CONVNETVAE_R_LIBRARY=<a writable dir>" \
       "(and add it to R_LIBS_USER), or =none to skip" >&2
  exit 1
fi
echo "[setup] installing the R package ConvNetVAE into $target (library(ConvNetVAE) in any R session)"
tmp=$(mktemp -d "$target/.ConvNetVAE.new.XXXXXX")
cp -R "$built" "$tmp/ConvNetVAE"
old="$target/.ConvNetVAE.old.$$"
if [ -e "$target/ConvNetVAE" ]; then
  mv "$target/ConvNetVAE" "$old"
fi
mv "$tmp/ConvNetVAE" "$target/ConvNetVAE"
rm -rf "$tmp" "$old"
