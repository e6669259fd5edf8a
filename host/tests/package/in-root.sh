# Run by clean-root.sh inside the clean root: installs the package, checks
# what it put where, starts the daemon from it with its default
# configuration path, then removes and purges it. Each check prints a line
# the test looks for. Usage: in-root.sh EXAMPLE-CONFIG
set -euo pipefail
example=$1
dpkg -i /tmp/heartline.deb >/dev/null
echo "GROUP $(getent group heartline | cut -d: -f1)"
cmp /etc/heartline/heartline.toml "$example" && echo "CONFIG example"
echo "CONFMODE $(stat -c '%a %U %G' /etc/heartline/heartline.toml)"
grep '^ExecStart=' /usr/lib/systemd/system/heartline.service
systemd-analyze verify /usr/lib/systemd/system/heartline.service && echo "UNIT verified" || echo "UNIT not verified"
echo "MAN $(man -w heartline-status)"
ls /usr/share/bash-completion/completions/heartline /usr/share/heartline/kits/gen/app/actions/restore
heartline keygen /etc/heartline/cluster.key
cat > /etc/heartline/heartline.toml <<'TOML'
[cluster]
name = "packaged"
id = 9
key_file = "cluster.key"
[node]
id = 1
name = "alpha"
TOML
heartline check-config
heartline daemon 2>/tmp/daemon.log &
pid=$!
for _ in $(seq 200); do heartline status >/tmp/status 2>/dev/null && break; sleep 0.05; done
head -3 /tmp/status
echo "SOCKET $(stat -c '%G' /run/heartline/heartline.sock)"
kill $pid; wait $pid || true
dpkg -r heartline >/dev/null
[ ! -e /usr/bin/heartline ] && [ -e /etc/heartline/heartline.toml ] && echo "REMOVED config kept"
dpkg -P heartline >/dev/null
[ ! -e /etc/heartline/heartline.toml ] && echo "PURGED"
