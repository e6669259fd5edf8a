#!/usr/bin/env bash
# Runs heartline's whole test suite: formatting, lints, the no_std build for
# the dongle's Cortex-M3, unit, property, simulator and integration tests.
# Installs what it needs first, idempotently. Usage: ./test.sh
set -euo pipefail
cd "$(dirname "$0")"

step() { printf '\n== %s\n' "$*"; }

# A CI checkout builds once: incremental caches would only take disk.
if [ "${CI:-}" = true ]; then export CARGO_INCREMENTAL=0; fi

step "toolchain: thumbv7m-none-eabi and x86_64-pc-windows-gnu targets, rustfmt, clippy"
for target in thumbv7m-none-eabi x86_64-pc-windows-gnu; do
  rustup target list --installed | grep -qx "$target" || rustup target add "$target"
done
rustup component list --installed | grep -q '^rustfmt' || rustup component add rustfmt
rustup component list --installed | grep -q '^clippy' || rustup component add clippy

step "cargo-deb (the Debian package test builds the package with it)"
command -v cargo-deb >/dev/null || cargo install cargo-deb --version 3.8.0 --locked

step "system packages: socat (serial path tests), iproute2 and iptables (network namespace tests), qemu-system-arm (dongle tests), qemu-system-x86, busybox-static and cpio (a real watchdog reset in a virtual machine), MinGW (the Windows build), fence-agents, ipmitool and openipmi (fencing against a simulated BMC), systemd (journald for the journal test)"
missing=()
command -v qemu-system-arm >/dev/null || missing+=(qemu-system-arm)
command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
[ -x /bin/busybox ] || missing+=(busybox-static)
command -v cpio >/dev/null || missing+=(cpio)
command -v socat >/dev/null || missing+=(socat)
command -v ip >/dev/null || missing+=(iproute2)
command -v iptables >/dev/null || missing+=(iptables)
# The Windows build compiles SQLite (bundled with rusqlite) with MinGW.
command -v x86_64-w64-mingw32-gcc >/dev/null || missing+=(gcc-mingw-w64-x86-64)
# fence_ipmilan (fence-agents, without the many agents' recommended
# libraries) drives ipmitool against OpenIPMI's ipmi_sim.
lean=()
[ -x /usr/sbin/fence_ipmilan ] || lean+=(fence-agents)
command -v ipmitool >/dev/null || lean+=(ipmitool)
command -v ipmi_sim >/dev/null || lean+=(openipmi)
# journald and journalctl run in a mount namespace by the journal test;
# systemd-analyze checks the package's unit.
[ -x /lib/systemd/systemd-journald ] || lean+=(systemd)
# apt_install [OPTION...] -- PACKAGE...: all at once; if apt's resolver
# refuses the set (seen on a machine with qemu-utils from backports), one at
# a time, naming any that still cannot be installed.
apt_install() {
  local options=()
  while [ "$1" != -- ]; do options+=("$1"); shift; done
  shift
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${options[@]}" "$@" >/dev/null && return
  echo "apt-get refused the set; installing one at a time"
  for package in "$@"; do
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${options[@]}" "$package" >/dev/null ||
      echo "cannot install $package: the tests that need it will fail in CI"
  done
}
if [ $((${#missing[@]} + ${#lean[@]})) -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq
    if [ ${#missing[@]} -gt 0 ]; then
      apt_install -- "${missing[@]}"
    fi
    if [ ${#lean[@]} -gt 0 ]; then
      apt_install --no-install-recommends -- "${lean[@]}"
    fi
  else
    echo "not installed and cannot install (needs root and apt-get): ${missing[*]} ${lean[*]}; the tests that need them will say they were skipped"
  fi
fi

step "a Linux kernel for the watchdog test's virtual machine (Debian's cloud kernel, its softdog module), in target/vm"
# Downloaded, not installed: only the kernel image and two modules are kept.
vm=target/vm
fetch_kernel() {
  local package work
  package=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-/ { print $2; exit }')
  if [ -z "$package" ] && [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    package=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-/ { print $2; exit }')
  fi
  [ -n "$package" ] || return 1
  work=$(mktemp -d)
  (cd "$work" && apt-get download -qq "$package" 2>/dev/null && dpkg-deb -x ./*.deb root) || { rm -rf "$work"; return 1; }
  mkdir -p "$vm"
  cp "$work"/root/boot/vmlinuz-* "$vm/vmlinuz"
  find "$work/root/lib/modules" \( -name softdog.ko -o -name watchdog.ko \) -exec cp {} "$vm/" \;
  rm -rf "$work"
}
if [ ! -s "$vm/vmlinuz" ] || [ ! -s "$vm/softdog.ko" ] || [ ! -s "$vm/watchdog.ko" ]; then
  fetch_kernel || echo "cannot fetch linux-image-cloud-amd64 (needs apt); the watchdog VM test will say it was skipped"
fi

# Crates built on their own: the fuzz target (nightly) and the size probe (thumbv7m).
standalone=(core/fuzz/Cargo.toml core/size-probe/Cargo.toml firmware/Cargo.toml)

step "cargo fmt --check"
cargo fmt --all -- --check
for manifest in "${standalone[@]}"; do cargo fmt --manifest-path "$manifest" -- --check; done

step "cargo clippy -D warnings (workspace, all targets)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "heartline-core on thumbv7m-none-eabi: no std, no alloc (plain and with defmt)"
cargo build -p heartline-core --target thumbv7m-none-eabi --release --locked
cargo build -p heartline-core --target thumbv7m-none-eabi --release --locked --features defmt

step "size probe: the core in a minimal Cortex-M3 program (opt-level z, compact SHA-256)"
# Built from its own directory so its .cargo/config.toml picks the target.
(cd core/size-probe && cargo build --release --locked)
size -A core/size-probe/target/thumbv7m-none-eabi/release/heartline-core-size-probe \
  | awk '$1 == ".text" || $1 == ".rodata" || $1 == ".data" || $1 == ".bss" { printf "  %-8s %6d bytes\n", $1, $2 }'

step "dongle firmware (thumbv7m-none-eabi): clippy, build, size"
# Built from its own directory so its .cargo/config.toml picks the target.
(cd firmware && cargo clippy --release --locked -- -D warnings \
  && cargo clippy --release --locked --no-default-features --features log-rtt -- -D warnings \
  && cargo build --release --locked)
size -A firmware/target/thumbv7m-none-eabi/release/heartline-firmware \
  | awk '$1 == ".text" || $1 == ".rodata" || $1 == ".data" || $1 == ".bss" { printf "  %-8s %6d bytes\n", $1, $2 }'

step "heartline (daemon and CLI) builds for Windows"
cargo clippy -p heartline --target x86_64-pc-windows-gnu --locked -- -D warnings

step "fuzz target compiles"
cargo check --manifest-path core/fuzz/Cargo.toml --locked

step "tests: unit, property, endpoint, the Debian package in a clean root, the resource brain's rules, simulators (400 protocol seeds, 1,000 resource seeds), daemons on loopback, serial, UDP, netns, resources, decisions and failover, quorum and leases, fencing (fence_ipmilan against ipmi_sim), network-namespace partitions with a witness, the IP kit in network namespaces, the admin channel, guest monitoring over TLS, the dongle under QEMU (witness and fence device too), a real watchdog reset in a QEMU virtual machine"
cargo test --workspace --locked
