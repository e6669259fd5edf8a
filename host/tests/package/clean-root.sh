# Run by host/tests/package.rs, in a mount namespace of its own (unshare
# --mount): a copy-on-write copy of this machine's root (overlayfs over /,
# its writes in a tmpfs, all gone when the namespace ends), fresh /run and
# /tmp, and in it, chrooted, in-root.sh.
# Usage: clean-root.sh DEB IN-ROOT-SCRIPT EXAMPLE-CONFIG
set -euo pipefail
deb=$1; inroot=$2; example=$3
t=$(mktemp -d)
mount --make-rprivate /
mount -t tmpfs tmpfs "$t"
mkdir "$t/up" "$t/work" "$t/root"
mount -t overlay overlay -o "lowerdir=/,upperdir=$t/up,workdir=$t/work" "$t/root"
r=$t/root
mount --bind /proc "$r/proc"
mount --rbind /dev "$r/dev"
mount -t tmpfs tmpfs "$r/run"
mount -t tmpfs tmpfs "$r/tmp"
# The root's /tmp is a fresh tmpfs: what the script needs is copied in (the
# checkout itself may be under this machine's /tmp, hidden there).
cp "$deb" "$r/tmp/heartline.deb"
cp "$inroot" "$r/tmp/inroot.sh"
cp "$example" "$r/tmp/example.toml"
chroot "$r" /bin/bash /tmp/inroot.sh /tmp/example.toml
