#!/bin/sh
# LAYOUT STAND-IN for the test images only: this is NOT k3s and NOT RKE2 (their binaries cannot be fetched here).
# It reproduces what a remediation sees of them on a node, with Debian's containerd:
#   - `k3s agent` / `rke2 agent` (their systemd unit's ExecStart) runs the embedded containerd as a CHILD process
#       containerd -c DATA/agent/etc/containerd/config.toml -a /run/k3s/containerd/containerd.sock \
#         --state /run/k3s/containerd --root DATA/agent/containerd
#     (DATA = /var/lib/rancher/k3s or /var/lib/rancher/rke2; RKE2 uses /run/k3s too), logs containerd's output to
#     DATA/agent/containerd/containerd.log (not to the journal), writes the config only when it is missing, and exits
#     non-zero when containerd exits, so that systemd restarts the unit. Stopping the unit stops containerd; the shims
#     and their containers survive (KillMode=process), as with the real ones.
#   - `k3s ctr ARGS`: ctr on k3s's socket, namespace k8s.io by default. RKE2 has no `rke2 ctr`: its ctr, containerd,
#     shim and runc are in /var/lib/rancher/rke2/bin, not on PATH.
#   - `k3s-killall.sh` / `rke2-killall.sh`: stop the units, kill the shims of /run/k3s/containerd and their
#     containers, the units' remaining processes, and unmount what is below /run/k3s, the data dir and
#     /var/lib/kubelet/pods (deepest first). Safe when nothing runs.
# Installed by test/harness/rootfs.sh (one file, four names: what it does depends on the name it is called by).
set -u
me=${0##*/}
case $me in
  k3s | k3s-killall.sh) dist=k3s version=v1.31.0+k3s1 ;;
  rke2 | rke2-killall.sh) dist=rke2 version=v1.31.0+rke2r1 ;;
  *) echo "$me: called by an unknown name (k3s, rke2, k3s-killall.sh, rke2-killall.sh)" >&2; exit 2 ;;
esac
data=/var/lib/rancher/$dist
state=/run/k3s/containerd
sock=$state/containerd.sock
root=$data/agent/containerd
config=$data/agent/etc/containerd/config.toml
bin='' # k3s: Debian's containerd from PATH; rke2: its own bin dir
[ $dist = rke2 ] && bin=$data/bin/

log() { printf 'time="%s" level=%s msg="%s"\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$1" "$2" >&2; }

write_config() {
  mkdir -p "${config%/*}" "$data/agent/etc/cni/net.d"
  cat >"$config.tmp" <<EOF
# Written by $me agent (layout stand-in) because it was missing, like k3s's own. version 2: 1.6, 1.7 and 2.x read it.
version = 2

[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "10010"
  sandbox_image = "rancher/mirrored-pause:3.6"

[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = "overlayfs"

[plugins."io.containerd.grpc.v1.cri".cni]
  conf_dir = "$data/agent/etc/cni/net.d"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
EOF
  mv "$config.tmp" "$config"
}

agent() {
  [ -e "$config" ] || write_config
  mkdir -p "$root" "$state"
  # RKE2 puts its bin dir first on the PATH of containerd (which finds the shim there, and the shim finds runc).
  [ $dist = rke2 ] && PATH=$data/bin:$PATH && export PATH
  log info "Logging containerd to $root/containerd.log"
  log info "Running containerd -c $config -a $sock --state $state --root $root"
  # A child, not exec; SIGKILLed if we die (as k3s does with Pdeathsig). The unit has NotifyAccess=all: containerd's
  # own READY=1 makes the unit active, exactly when a containerd.service would be.
  setpriv --pdeathsig KILL -- "${bin}containerd" -c "$config" -a "$sock" --state "$state" --root "$root" \
    >>"$root/containerd.log" 2>&1 &
  child=$!
  trap 'log info "Received SIGTERM, shutting down"; kill -TERM $child 2>/dev/null; wait $child; exit 0' TERM INT
  # Stand-in for the embedded kubelet: nothing to do but wait for containerd.
  rc=0
  wait $child || rc=$?
  log fatal "containerd exited: exit status $rc"
  exit 1
}

pschildren() { ps -e -o ppid= -o pid= | awk -v p="$1" '$1 == p { print $2 }'; }
pstree() { for p in "$@"; do echo "$p"; pstree $(pschildren "$p"); done; }

unmount_below() { # PREFIX [remove]: every mount below PREFIX, deepest first
  awk -v p="$1/" 'index($2, p) == 1 { print $2 }' /proc/self/mounts | sort -r | while read -r m; do
    echo "+ umount $m" >&2
    umount -f "$m" 2>/dev/null || umount -l "$m" || continue
    [ -z "${2:-}" ] || rm -rf -- "$m"
  done
}

killall() {
  [ "$(id -u)" -eq 0 ] || exec sudo "$0" "$@"
  for u in /etc/systemd/system/$dist*.service; do
    [ -s "$u" ] || continue
    echo "+ systemctl stop ${u##*/}" >&2
    systemctl stop "${u##*/}"
  done
  # The shims of this containerd (their command line names its socket) and their children: the containers.
  shims=$(ps -e -o pid= -o args= | awk -v s="$state/" '$2 ~ /containerd-shim/ && index($0, s) { print $1 }')
  if [ -n "$shims" ]; then
    tree=$(pstree $shims)
    echo "+ kill -9" $tree >&2
    kill -9 $tree 2>/dev/null
  fi
  # What is left in the units' cgroups.
  for u in /etc/systemd/system/$dist*.service; do
    [ -s "$u" ] || continue
    cg=$(systemctl show -p ControlGroup --value "${u##*/}" 2>/dev/null)
    [ -n "$cg" ] && [ -d "/sys/fs/cgroup$cg" ] || continue
    left=$(find "/sys/fs/cgroup$cg" -name cgroup.procs -exec cat {} + 2>/dev/null)
    [ -z "$left" ] || { echo "+ kill -9" $left >&2; kill -9 $left 2>/dev/null; }
  done
  unmount_below /run/k3s remove
  unmount_below /var/lib/kubelet/pods remove
  unmount_below "$data"
  exit 0
}

case $me in *-killall.sh) killall "$@" ;; esac
case ${1:-} in
  agent) agent ;;
  ctr)
    [ $dist = k3s ] || { echo "$me: no such command ctr (RKE2's ctr is $data/bin/ctr)" >&2; exit 1; }
    shift
    CONTAINERD_NAMESPACE=${CONTAINERD_NAMESPACE:-k8s.io} exec ctr --address "$sock" "$@"
    ;;
  --version | -v | version)
    echo "$dist version $version (layout stand-in: $("${bin}containerd" --version 2>/dev/null | awk '{print $1, $3}'))"
    ;;
  *)
    echo "usage: $me agent | $([ $dist = k3s ] && echo 'ctr ARGS | ')--version   (layout stand-in for tests, not $dist)" >&2
    exit 1
    ;;
esac
