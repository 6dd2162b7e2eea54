#!/usr/bin/env bash
# Builds (once per suite) the Debian test images the containerd tests and the demo boot with systemd-nspawn.
#
#   bash test/harness/rootfs.sh [bookworm|trixie|sid]   # default bookworm; builds if missing; prints the image dir
#
# One recipe for every suite: bookworm has containerd 1.6, trixie 1.7 (with the experimental CRI sandbox server
# switched on: ENABLE_CRI_SANDBOXES=1), sid 2.x. Every image also has the k3s and RKE2 layouts (stand-ins from
# test/harness/rancher-layout.sh using Debian's containerd, units disabled; nspawn.ts converts a node to one) and a
# user `ops` with passwordless sudo besides root.
#
# The image directory (cached OUTSIDE the repo, keyed by the suite and a hash of this script, the stand-ins and the
# suite = the recipe):
#   $RUNBOOK_TEST_CACHE/image-<suite>-<hash>/rootfs/            the root filesystem (read-only use: booted with --volatile)
#   $RUNBOOK_TEST_CACHE/image-<suite>-<hash>/client_key(.pub)   test SSH client key, authorized for root and ops
#   $RUNBOOK_TEST_CACHE/image-<suite>-<hash>/host_key.pub       the image's only SSH host key (for known_hosts)
#   $RUNBOOK_TEST_CACHE/image-<suite>-<hash>/build-seconds      how long the build took
# The keys are made once in $RUNBOOK_TEST_CACHE/keys/ and shared by every image (one client key, one host key).
# RUNBOOK_TEST_CACHE defaults to /var/cache/runbook-test. Concurrent callers wait on a lock; a half-built image is
# never used (built in a temp dir, renamed into place at the end).
# Needs root, debootstrap and network access to the Debian mirror this machine's apt uses.
set -euo pipefail

SELF="$(readlink -f "${BASH_SOURCE[0]}")"
LAYOUT="$(dirname "$SELF")/rancher-layout.sh"
CACHE="${RUNBOOK_TEST_CACHE:-/var/cache/runbook-test}"
SUITE=${1:-bookworm}
case $SUITE in bookworm | trixie | sid) ;; *) echo "rootfs.sh: unknown suite '$SUITE' (bookworm, trixie or sid)" >&2; exit 2 ;; esac
PACKAGES=systemd,systemd-sysv,dbus,openssh-server,containerd,runc,iproute2,procps,kmod,sudo,util-linux,mount,psmisc,libnss-myhostname,busybox-static

if [[ $(id -u) -ne 0 ]]; then echo "rootfs.sh: must run as root (debootstrap, chroot)" >&2; exit 1; fi
command -v debootstrap >/dev/null || { echo "rootfs.sh: debootstrap is missing: apt-get install debootstrap" >&2; exit 1; }

# The mirror apt uses here (deb822 or one-line sources), else deb.debian.org.
mirror() {
  local m
  m=$(grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -E '/debian/?$' | head -1 || true)
  [[ -z $m ]] && m=$(grep -hsE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | awk '{print $2}' | grep -E '/debian/?$' | head -1 || true)
  echo "${m:-http://deb.debian.org/debian}"
}

HASH=$({ cat "$SELF" "$LAYOUT"; echo "$SUITE"; } | sha256sum | cut -c1-12)
OUT="$CACHE/image-$SUITE-$HASH"
mkdir -p "$CACHE"
# --- the keys every image shares: made once, under their own lock
KEYS="$CACHE/keys"
(
  flock 8
  if [[ ! -s $KEYS/host_key.pub ]]; then
    K=$(mktemp -d "$CACHE/.keys.XXXXXX")
    ssh-keygen -q -t ed25519 -N '' -C runbook-test-client -f "$K/client_key"
    ssh-keygen -q -t ed25519 -N '' -C runbook-test-host -f "$K/host_key"
    rm -rf "$KEYS"; mv "$K" "$KEYS"
  fi
) 8>"$CACHE/.lock-keys"
exec 9>"$CACHE/.lock-$HASH"
flock 9
if [[ -f $OUT/ready ]]; then echo "$OUT"; exit 0; fi

START=$(date +%s)
TMP=$(mktemp -d "$CACHE/.build-$HASH.XXXXXX")
trap 'rm -rf --one-file-system "$TMP"' EXIT
R="$TMP/rootfs"
MIRROR=$(mirror)
echo "rootfs.sh: debootstrap $SUITE from $MIRROR into $R (takes about a minute)" >&2
# The .debs are kept between builds ($CACHE/debs/SUITE): a rebuild after a recipe change downloads only what changed.
mkdir -p "$CACHE/debs/$SUITE"
debootstrap --variant=minbase --cache-dir="$CACHE/debs/$SUITE" --include="$PACKAGES" "$SUITE" "$R" "$MIRROR" \
  >"$TMP/debootstrap.log" 2>&1 || {
  tail -30 "$TMP/debootstrap.log" >&2; echo "rootfs.sh: debootstrap failed (log above)" >&2; exit 1; }

# --- keys: one client key (root and ops may log in with it), one fixed host key for every host
install -m 600 "$KEYS/client_key" "$TMP/client_key"
install -m 644 "$KEYS/client_key.pub" "$TMP/client_key.pub"
rm -f "$R"/etc/ssh/ssh_host_*
install -m 600 "$KEYS/host_key" "$R/etc/ssh/ssh_host_ed25519_key"
install -m 644 "$KEYS/host_key.pub" "$R/etc/ssh/ssh_host_ed25519_key.pub"
cp "$KEYS/host_key.pub" "$TMP/host_key.pub"
install -d -m 700 "$R/root/.ssh"
install -m 600 "$TMP/client_key.pub" "$R/root/.ssh/authorized_keys"
# ops: a plain user with passwordless sudo (a test reaches a node as ops with become)
chroot "$R" useradd -m -s /bin/bash ops
chroot "$R" usermod -p '*' ops
install -d -m 700 "$R/home/ops/.ssh"
install -m 600 "$TMP/client_key.pub" "$R/home/ops/.ssh/authorized_keys"
chroot "$R" chown -R ops:ops /home/ops/.ssh
printf 'ops ALL=(ALL:ALL) NOPASSWD: ALL\n' >"$R/etc/sudoers.d/ops"; chmod 440 "$R/etc/sudoers.d/ops"

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
for h in root home/ops; do
  printf 'export LANG=C.UTF-8\nexport PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n' >"$R/$h/.profile"
  : >"$R/$h/.bashrc"
done
echo "root:*" | chroot "$R" chpasswd -e

# --- test-only workload: small real images, built here from files of the image (docker-archive tarballs, no
#     registry), and a helper that runs one as a real container (a containerd-shim-runc-v2 that survives
#     `systemctl stop containerd` because of KillMode=process, and an overlay rootfs mount under containerd's
#     state dir), like a node with pods:
#       local/sleep:1        one layer: /bin/sleep + libc (the container the helper runs)
#       local/busybox:1      one layer: Debian's static busybox and its applet links
#       local/busybox-web:1  two layers: the busybox layer plus a web root (httpd -f -h /www)
W="$TMP/workload"; S="$R/usr/local/share/runbook-test"; install -d "$S"
layer() { # DIR -> DIR.tar (reproducible); prints its sha256
  tar --owner=0 --group=0 --mtime=@0 --sort=name -C "$1" -cf "$1.tar" .; sha256sum "$1.tar" | cut -d' ' -f1
}
image() { # NAME:TAG CMD-JSON LAYER... -> $S/NAME.tar (the layers: $W/LAYER.tar, bottom first)
  local ref=$1 cmd=$2 ids="" files="" l; shift 2
  for l; do ids="$ids${ids:+,}\"sha256:$(sha256sum "$W/$l.tar" | cut -d' ' -f1)\""; files="$files${files:+,}\"$l.tar\""; done
  printf '{"architecture":"amd64","os":"linux","config":{"Cmd":%s},"rootfs":{"type":"layers","diff_ids":[%s]}}' "$cmd" "$ids" >"$W/config.json"
  printf '[{"Config":"config.json","RepoTags":["local/%s"],"Layers":[%s]}]' "$ref" "$files" >"$W/manifest.json"
  (cd "$W" && tar --owner=0 --group=0 --mtime=@0 -cf "$S/${ref%%:*}.tar" manifest.json config.json "${@/%/.tar}")
}
mkdir -p "$W/sleep/bin" "$W/sleep/lib/x86_64-linux-gnu" "$W/sleep/lib64" "$W/busybox/bin" "$W/www/www"
cp "$R/bin/sleep" "$W/sleep/bin/"; cp -L "$R/lib/x86_64-linux-gnu/libc.so.6" "$W/sleep/lib/x86_64-linux-gnu/"
cp -L "$R/lib64/ld-linux-x86-64.so.2" "$W/sleep/lib64/"
cp "$R/bin/busybox" "$W/busybox/bin/"
for a in sh ls cat echo sleep httpd wget; do ln -s busybox "$W/busybox/bin/$a"; done
echo 'runbook test page' >"$W/www/www/index.html"
SLEEP=$(layer "$W/sleep"); layer "$W/busybox" >/dev/null; layer "$W/www" >/dev/null
image sleep:1 '["/bin/sleep","infinity"]' sleep
image busybox:1 '["/bin/sh"]' busybox
image busybox-web:1 '["/bin/httpd","-f","-h","/www"]' busybox www
echo "sha256:$SLEEP" >"$S/sleep.chainid"
rm -rf "$W"
cat >"$R/usr/local/sbin/rb-test-container" <<'EOF2'
#!/bin/sh
# Test image only: rb-test-container ID -> runs /bin/sleep in a container of namespace k8s.io.
# The containerd to use: CTR (its ctr command line, default `ctr`), STATE (its state dir, default /run/containerd);
# e.g. CTR='k3s ctr' STATE=/run/k3s/containerd rb-test-container web
set -eu
id=${1:?usage: [CTR=...] [STATE=...] rb-test-container ID}
CTR=${CTR:-ctr} STATE=${STATE:-/run/containerd}
c() { $CTR -n k8s.io "$@"; }
share=/usr/local/share/runbook-test
for i in sleep busybox busybox-web; do c image ls -q | grep -q "local/$i:1\$" || c image import $share/$i.tar >/dev/null; done
dir=$STATE/runbook-test/$id/rootfs
mkdir -p "$dir"
c snapshot prepare "$id" "$(cat $share/sleep.chainid)" >/dev/null
c snapshot mounts "$dir" "$id" | sh
$CTR oci spec | sed -e "s#\"cwd\": \"/\",#\"cwd\": \"/\", \"args\": [\"/bin/sleep\", \"infinity\"],#" \
  -e "s#\"path\": \"rootfs\"#\"path\": \"$dir\"#" -e 's#"terminal": true#"terminal": false#' \
  -e "s#\"cgroupsPath\": \"[^\"]*\"#\"cgroupsPath\": \"/runbook-test/$id\"#" >"$STATE/runbook-test/$id/spec.json"
c run -d --config "$STATE/runbook-test/$id/spec.json" "$id" >/dev/null
EOF2
chmod 755 "$R/usr/local/sbin/rb-test-container"

# --- the k3s and RKE2 layouts (stand-ins, see rancher-layout.sh; units disabled: nspawn.ts converts a node)
for n in k3s rke2 k3s-killall.sh rke2-killall.sh; do install -m 755 "$LAYOUT" "$R/usr/local/bin/$n"; done
for n in k3s rke2; do
  cat >"$R/etc/systemd/system/$n-agent.service" <<EOF
[Unit]
Description=$n agent (LAYOUT STAND-IN for tests: Debian's containerd embedded, not $n)
Documentation=file:/usr/local/bin/$n
# An endless restart loop, as the real units' RestartSec=5s gives without a start limit (here RestartSec=2, faster)
StartLimitIntervalSec=0

[Service]
Type=notify
NotifyAccess=all
ExecStart=/usr/local/bin/$n agent
KillMode=process
Delegate=yes
LimitNOFILE=1048576
LimitNPROC=infinity
LimitCORE=infinity
TasksMax=infinity
TimeoutStartSec=0
Restart=always
RestartSec=2

[Install]
WantedBy=multi-user.target
EOF
done
# RKE2's own binaries (not on PATH): links to Debian's
install -d "$R/var/lib/rancher/rke2/bin"
for b in containerd ctr containerd-shim-runc-v2 runc; do
  ln -s "$(chroot "$R" sh -c "command -v $b")" "$R/var/lib/rancher/rke2/bin/$b"
done
install -d "$R/var/lib/rancher/k3s"

# --- trixie: containerd 1.7's experimental CRI sandbox server (the code path of the dangling-sandbox crash), for
#     Debian's unit and for the stand-ins' embedded containerd alike
if [[ $SUITE = trixie ]]; then
  for u in containerd k3s-agent rke2-agent; do
    mkdir -p "$R/etc/systemd/system/$u.service.d"
    printf '[Service]\nEnvironment=ENABLE_CRI_SANDBOXES=1\n' >"$R/etc/systemd/system/$u.service.d/10-cri-sandboxes.conf"
  done
fi

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
