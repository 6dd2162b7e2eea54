#!/usr/bin/env bash
# Builds (once) the Debian 12 test image the containerd tests and the demo boot with systemd-nspawn.
#
#   bash test/harness/rootfs.sh            # build if missing; prints the image directory on stdout
#
# The image directory (cached OUTSIDE the repo, keyed by a hash of this script = the recipe):
#   $RUNBOOK_TEST_CACHE/image-<hash>/rootfs/            the Debian root filesystem (read-only use: booted with --volatile)
#   $RUNBOOK_TEST_CACHE/image-<hash>/client_key(.pub)   test SSH client key, authorized for root in the image
#   $RUNBOOK_TEST_CACHE/image-<hash>/host_key.pub       the image's only SSH host key (for known_hosts)
#   $RUNBOOK_TEST_CACHE/image-<hash>/build-seconds      how long the build took
# RUNBOOK_TEST_CACHE defaults to /var/cache/runbook-test. Concurrent callers wait on a lock; a
# half-built image is never used (built in a temp dir, renamed into place at the end).
# Needs root, debootstrap and network access to the Debian mirror this machine's apt uses.
set -euo pipefail

SELF="$(readlink -f "${BASH_SOURCE[0]}")"
CACHE="${RUNBOOK_TEST_CACHE:-/var/cache/runbook-test}"
SUITE=bookworm
PACKAGES=systemd,systemd-sysv,dbus,openssh-server,containerd,runc,iproute2,procps,kmod,sudo,util-linux,mount,psmisc,libnss-myhostname

if [[ $(id -u) -ne 0 ]]; then echo "rootfs.sh: must run as root (debootstrap, chroot)" >&2; exit 1; fi
command -v debootstrap >/dev/null || { echo "rootfs.sh: debootstrap is missing: apt-get install debootstrap" >&2; exit 1; }

# The mirror apt uses here (deb822 or one-line sources), else deb.debian.org.
mirror() {
  local m
  m=$(grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -E '/debian/?$' | head -1 || true)
  [[ -z $m ]] && m=$(grep -hsE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | awk '{print $2}' | grep -E '/debian/?$' | head -1 || true)
  echo "${m:-http://deb.debian.org/debian}"
}

HASH=$(sha256sum "$SELF" | cut -c1-12)
OUT="$CACHE/image-$HASH"
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock-$HASH"
flock 9
if [[ -f $OUT/ready ]]; then echo "$OUT"; exit 0; fi

START=$(date +%s)
TMP=$(mktemp -d "$CACHE/.build-$HASH.XXXXXX")
trap 'rm -rf --one-file-system "$TMP"' EXIT
R="$TMP/rootfs"
MIRROR=$(mirror)
echo "rootfs.sh: debootstrap $SUITE from $MIRROR into $R (takes about a minute)" >&2
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$R" "$MIRROR" >"$TMP/debootstrap.log" 2>&1 || {
  tail -30 "$TMP/debootstrap.log" >&2; echo "rootfs.sh: debootstrap failed (log above)" >&2; exit 1; }

# --- keys: one client key (root may log in with it), one fixed host key for every host of this image
ssh-keygen -q -t ed25519 -N '' -C runbook-test-client -f "$TMP/client_key"
rm -f "$R"/etc/ssh/ssh_host_*
ssh-keygen -q -t ed25519 -N '' -C runbook-test-host -f "$R/etc/ssh/ssh_host_ed25519_key"
cp "$R/etc/ssh/ssh_host_ed25519_key.pub" "$TMP/host_key.pub"
install -d -m 700 "$R/root/.ssh"
install -m 600 "$TMP/client_key.pub" "$R/root/.ssh/authorized_keys"

# --- sshd: key only, fast (no DNS, no motd), only the ed25519 host key
cat >"$R/etc/ssh/sshd_config.d/runbook-test.conf" <<'EOF'
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
PrintMotd no
PrintLastLog no
MaxSessions 64
MaxStartups 64:30:128
EOF
: >"$R/etc/motd"
sed -i '/pam_motd/d; /pam_mail/d' "$R/etc/pam.d/sshd"

# --- hostname comes from nspawn's -M NAME (an /etc/hostname in the image would override it)
rm -f "$R/etc/hostname"
# ...and resolves without DNS (sudo looks its own hostname up; the node networks have no DNS)
sed -i 's/^hosts:.*/hosts:          files myhostname/' "$R/etc/nsswitch.conf"
: >"$R/etc/resolv.conf"
echo "127.0.1.1 localhost.localdomain" >>"$R/etc/hosts"

# --- a dummy kubelet, ordered after containerd like the real one
cat >"$R/etc/systemd/system/kubelet.service" <<'EOF'
[Unit]
Description=Dummy kubelet for runbook tests
After=containerd.service
Wants=containerd.service

[Service]
ExecStart=/bin/sleep infinity
Restart=always

[Install]
WantedBy=multi-user.target
EOF
ln -sf /etc/systemd/system/kubelet.service "$R/etc/systemd/system/multi-user.target.wants/kubelet.service"
ln -sf /lib/systemd/system/containerd.service "$R/etc/systemd/system/multi-user.target.wants/containerd.service"
ln -sf /lib/systemd/system/ssh.service "$R/etc/systemd/system/multi-user.target.wants/ssh.service"

# --- a quiet, quick boot: nothing the tests do not need
for u in getty@.service console-getty.service serial-getty@.service systemd-networkd.service \
         systemd-networkd-wait-online.service systemd-resolved.service systemd-timesyncd.service \
         apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer fstrim.timer \
         man-db.timer systemd-tmpfiles-clean.timer systemd-journald-audit.socket; do
  ln -sf /dev/null "$R/etc/systemd/system/$u"
done
# journald: keep the journal in memory (volatile boots anyway), no rate limit hiding containerd's lines
mkdir -p "$R/etc/systemd/journald.conf.d"
printf '[Journal]\nStorage=volatile\nRateLimitBurst=0\n' >"$R/etc/systemd/journald.conf.d/runbook-test.conf"

# --- a clean, fast shell for the tests
printf 'export LANG=C.UTF-8\nexport PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n' >"$R/root/.profile"
: >"$R/root/.bashrc"
echo "root:*" | chroot "$R" chpasswd -e

# --- test-only workload: a one-layer image (/bin/sleep + libc) and a helper that runs it as a real
#     container (a containerd-shim-runc-v2 that survives `systemctl stop containerd` because of
#     KillMode=process, and an overlay rootfs mount under containerd's state dir), like a node with pods.
W="$TMP/workload"; mkdir -p "$W/l/bin" "$W/l/lib/x86_64-linux-gnu" "$W/l/lib64"
cp "$R/bin/sleep" "$W/l/bin/"; cp -L "$R/lib/x86_64-linux-gnu/libc.so.6" "$W/l/lib/x86_64-linux-gnu/"
cp -L "$R/lib64/ld-linux-x86-64.so.2" "$W/l/lib64/"
tar --owner=0 --group=0 --mtime=@0 -C "$W/l" -cf "$W/layer.tar" .
LAYER=$(sha256sum "$W/layer.tar" | cut -d' ' -f1)
printf '{"architecture":"amd64","os":"linux","config":{"Cmd":["/bin/sleep","infinity"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' "$LAYER" >"$W/config.json"
printf '[{"Config":"config.json","RepoTags":["local/sleep:1"],"Layers":["layer.tar"]}]' >"$W/manifest.json"
install -d "$R/usr/local/share/runbook-test"
tar -C "$W" -cf "$R/usr/local/share/runbook-test/sleep.tar" manifest.json config.json layer.tar
echo "sha256:$LAYER" >"$R/usr/local/share/runbook-test/sleep.chainid"
rm -rf "$W"
cat >"$R/usr/local/sbin/rb-test-container" <<'EOF2'
#!/bin/sh
# Test image only: rb-test-container ID -> runs /bin/sleep in a container of namespace k8s.io.
set -eu
id=${1:?usage: rb-test-container ID}
ns=k8s.io
share=/usr/local/share/runbook-test
ctr -n $ns image ls -q | grep -q 'local/sleep:1' || ctr -n $ns image import $share/sleep.tar >/dev/null
dir=/run/containerd/runbook-test/$id/rootfs
mkdir -p "$dir"
ctr -n $ns snapshot prepare "$id" "$(cat $share/sleep.chainid)" >/dev/null
ctr -n $ns snapshot mounts "$dir" "$id" | sh
ctr oci spec | sed -e "s#\"cwd\": \"/\",#\"cwd\": \"/\", \"args\": [\"/bin/sleep\", \"infinity\"],#" \
  -e "s#\"path\": \"rootfs\"#\"path\": \"$dir\"#" -e 's#"terminal": true#"terminal": false#' >"/run/containerd/runbook-test/$id/spec.json"
ctr -n $ns run -d --config "/run/containerd/runbook-test/$id/spec.json" "$id" >/dev/null
EOF2
chmod 755 "$R/usr/local/sbin/rb-test-container"

# --- clean the apt caches (smaller image)
rm -rf "$R"/var/cache/apt/archives/*.deb "$R"/var/lib/apt/lists/*

cp "$TMP/debootstrap.log" "$R/root/debootstrap.log" 2>/dev/null || true
echo $(( $(date +%s) - START )) >"$TMP/build-seconds"
touch "$TMP/ready"
rm -rf --one-file-system "$OUT"
mv "$TMP" "$OUT"
trap - EXIT
echo "rootfs.sh: built $OUT in $(cat "$OUT/build-seconds")s" >&2
echo "$OUT"
