#!/usr/bin/env bash
# Builds heartline's Debian package with cargo-deb (`cargo install
# cargo-deb`): the manual pages and shell completions are generated from the
# binary into target/deb-assets first. Usage:
#   packaging/deb.sh [PROFILE [OUTPUT]]
# PROFILE is a cargo profile (default: release, built here; `dev` packages
# the debug binary that `cargo build` left, as the package test does);
# OUTPUT is a .deb file or a directory (default: target/debian).
set -euo pipefail
cd "$(dirname "$0")/.."

profile=${1:-release}
output=${2:-target/debian}
case "$profile" in
  dev) dir=debug ;;
  *) dir=$profile ;;
esac
command -v cargo-deb >/dev/null || {
  echo "cargo-deb is not installed: cargo install cargo-deb --locked" >&2
  exit 2
}
if [ "$profile" != dev ]; then
  cargo build --profile "$profile" --locked -p heartline
fi
target=${CARGO_TARGET_DIR:-target}
bin=$target/$dir/heartline
[ -x "$bin" ] || { echo "no $bin: build it first (cargo build -p heartline)" >&2; exit 2; }

# Where the package's metadata (host/Cargo.toml) looks for them.
assets=target/deb-assets
rm -rf "$assets"
mkdir -p "$assets/man" "$assets/completions"
"$bin" manpage --dir "$assets/man"
gzip -9n "$assets"/man/*.1
"$bin" completions bash >"$assets/completions/heartline"
"$bin" completions zsh >"$assets/completions/_heartline"
"$bin" completions fish >"$assets/completions/heartline.fish"

# cargo-deb takes target/release/ in the assets to mean this profile's
# directory.
# The dev package is for tests: compressed fast.
fast=()
[ "$profile" = dev ] && fast=(--fast)
cargo deb -p heartline --no-build --profile "$profile" --output "$output" "${fast[@]}"
