#!/usr/bin/env bash
# bootstrap.sh: from a bare DGX Spark to a syncing raibid-ci pool, in one command.
#
# The shell does what must happen before Python can run, then hands over to `raibid bootstrap`.
# Phases, in order; each checks before it acts, so a re-run changes nothing:
#
#   preflight  Linux on arm64, root (or sudo), the tools, python3 >= 3.11, free disk. Always runs;
#              it only checks.
#   k3s        k3s at K3S_VERSION: the binary checked against the release's sha256sum file, a
#              systemd unit, the node Ready. Skipped with --kubeconfig, or when it already runs.
#   flux       the flux CLI at FLUX_VERSION (checked against the release's checksums file), then
#              `flux install` of source-, kustomize- and notification-controller.
#   keda       KEDA's release manifest at KEDA_VERSION, checked against the sha256 digest GitHub
#              publishes for that release asset, applied server-side.
#   gitea      Gitea in namespace gitea: OCI registry on ([packages] ENABLED), a persistent volume,
#              an admin user whose generated password and access token live in Secret
#              gitea/gitea-admin (kept across re-runs).
#   raibid     raibid-gitops (pip, into a venv, when `raibid bootstrap` is not on PATH), then
#              `raibid bootstrap` with RAIBID_GITEA_TOKEN from that Secret: the Python phases
#              repo, config, secrets, objects, webhook, sync.
#
# No secret is ever printed or put on a command line of this machine: generated values and the
# token travel through pipes (stdin) and the environment. There is deliberately no `set -x`.
set -euo pipefail

# --- pins: the one place every installed version is named ------------------------------------
# k3s: Kubernetes v1.34.4, the same release as the kube-apiserver the project's stack tests and
# whose schemas `raibid gitops verify` ships (raibid_gitops/devstack/versions.py, K8S_VERSION).
# The Go module proxy refuses github.com/k3s-io/k3s (403), so the tag could not be listed from
# here: k3s releases every Kubernetes patch as vX.Y.Z+k3s1, and public deployment notes run this
# one. The 1.34 line has newer patches (v1.34.9+k3s1 at least); move with the stack.
K3S_VERSION="v1.34.4+k3s1"
# Flux: the controllers the stack tests are source-controller v1.9.0, kustomize-controller v1.9.6
# and notification-controller v1.6.0. Flux v2.9.5, the newest github.com/fluxcd/flux2/v2 the Go
# module proxy lists, ships (its manifests/bases/*/kustomization.yaml) source-controller v1.9.5,
# kustomize-controller v1.9.5 and notification-controller v1.9.4: the same v1.9 line for the two
# that fetch and apply, and the APIs the project renders (GitRepository and Kustomization v1;
# Receiver v1, Provider and Alert v1beta3 with type gitea, as notification-controller/api v1.9.4
# has them). Flux v2.6.4, the only other release listed, carries v1.6.x source and kustomize
# controllers. `flux check --pre` of v2.9.5 requires Kubernetes >= 1.33.
FLUX_VERSION="2.9.5"
FLUX_COMPONENTS="source-controller,kustomize-controller,notification-controller"
# KEDA: 2.16.0 and 2.16.1 refuse the rendered redis-streams trigger (lagCount with
# activationLagCount "0": "activationLagCount required for Redis lag"); the stack runs and tests
# 2.21.0, and the project's KEDA schemas come from it (raibid_gitops/devstack/versions.py).
# KEDA publishes no checksum file: its release workflow uploads keda-<v>.yaml, -core.yaml and
# -crds.yaml only. GitHub computes a sha256 digest for every release asset at upload and
# publishes it in the release's API entry (assets[].digest); that is what the manifest is
# checked against.
KEDA_VERSION="2.21.0"
# Gitea: the release the stack runs and the project's Gitea client is tested against. The
# rootless image runs as uid 1000 and needs no root in the pod. The image is pinned by tag: its
# digest could not be looked up from here (no registry access); the kubelet checks the layers
# against the manifest it pulls.
GITEA_VERSION="1.26.0"
# --- end of pins -------------------------------------------------------------------------------

K3S_TAG_URL="https://github.com/k3s-io/k3s/releases/download/${K3S_VERSION//+/%2B}"
FLUX_RELEASE_URL="https://github.com/fluxcd/flux2/releases/download/v${FLUX_VERSION}"
KEDA_RELEASE_URL="https://github.com/kedacore/keda/releases/download/v${KEDA_VERSION}"
KEDA_RELEASE_API="https://api.github.com/repos/kedacore/keda/releases/tags/v${KEDA_VERSION}"
GITEA_IMAGE="docker.gitea.com/gitea:${GITEA_VERSION}-rootless"

K3S_KUBECONFIG=/etc/rancher/k3s/k3s.yaml
K3S_UNIT=/etc/systemd/system/k3s.service
# k3s images, the Gitea volume (local-path keeps it under /var/lib/rancher) with the agent
# images in its registry, and the agents' build space: 20 GiB is a floor, not a sizing.
MIN_FREE_GIB=20

# Gitea's own namespace, not the pool's: the config repository gives raibid-ci a default-deny
# NetworkPolicy (Flux could not clone, Gitea could not call the receiver), and Flux owns that
# namespace (dropping it from the repository must not delete the repository's own host).
GITEA_NS=gitea
GITEA_PORT=3000
GITEA_ADMIN_SECRET=gitea-admin
GITEA_KEY_SECRET=gitea-secret-key
# The name the local stack gives its admin; not the config repository's owner (an organisation).
GITEA_ADMIN_USER=raibid-admin
GITEA_ADMIN_EMAIL=raibid-admin@raibid.local
# local-path does not enforce a size; other storage classes do.
GITEA_VOLUME_SIZE=50Gi
GITEA_CLUSTER_URL="http://gitea.${GITEA_NS}.svc.cluster.local:${GITEA_PORT}"
# Flux's notification-controller Service for receivers (port 80 -> http-webhook).
RECEIVER_HOST=webhook-receiver.flux-system.svc.cluster.local
RECEIVER_URL="http://${RECEIVER_HOST}"
FIELD_MANAGER=raibid-bootstrap

SHELL_PHASES=(preflight k3s flux keda gitea raibid)
PYTHON_PHASES=(repo config secrets objects webhook sync)

SCRIPT_PATH="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")" && pwd)/$(basename "${BASH_SOURCE[0]:-$0}")"
PROJECT_DIR="$(dirname "$SCRIPT_PATH")"

usage() {
  cat <<EOF
Usage: bash bootstrap.sh [OPTIONS]

From a bare DGX Spark (arm64, Linux) to a raibid-ci pool that Flux syncs from Gitea.
Phases, in order: ${SHELL_PHASES[*]}
  where raibid runs \`raibid bootstrap\`, whose phases are: ${PYTHON_PHASES[*]}
Each phase checks before it acts: a re-run changes nothing. preflight always runs (it only checks).

Options:
  --dry-run            print every action (commands, pinned versions, URLs, the checksum each
                       download is verified against) and change nothing; runs offline, needs no root
  --from PHASE         start at PHASE (a shell phase, or a raibid bootstrap phase)
  --only PHASE         run only PHASE (a raibid bootstrap phase runs only that Python phase)
  --kubeconfig PATH    target an existing cluster (skips k3s; root not needed)
  --context NAME       kubeconfig context
  --timeout DURATION   how long to wait for rollouts, e.g. 300s or 10m (default 5m)
  --set KEY=VALUE      a setting for the first \`raibid gitops init\` (repeatable)
  --dir DIR            where raibid bootstrap keeps the config repository checkout
  -h, --help           this text

Environment: RAIBID_BOOTSTRAP_CACHE (downloads; default /var/cache/raibid-bootstrap as root),
RAIBID_VENV (where raibid-gitops is installed when missing; default /opt/raibid/venv as root).

Pinned: k3s ${K3S_VERSION}, Flux v${FLUX_VERSION}, KEDA v${KEDA_VERSION}, Gitea ${GITEA_VERSION}.
Exit: 0 done, 1 a phase failed (the message says what to do), 2 bad options.
EOF
}

# --- output ------------------------------------------------------------------------------------
# A dry run's plan goes to stdout (it is the data of a dry run); progress goes to stderr; each
# phase of a real run ends with one line on stdout.
plan() { printf '%-9s %s\n' "$1" "$2"; }
say() { printf 'bootstrap: %s\n' "$*" >&2; }
result() { printf '%s: %s\n' "$1" "$2"; }
usage_error() {
  printf 'bootstrap: %s\n' "$1" >&2
  printf "Run 'bash bootstrap.sh --help' for the options.\n" >&2
  exit 2
}
# fail PHASE WHAT WHAT-TO-DO
fail() {
  printf 'bootstrap: %s failed: %s\n' "$1" "$2" >&2
  [ -z "${3:-}" ] || printf '  what to do: %s\n' "$3" >&2
  exit 1
}
# quote ARGS...: a command line for the plan; words of safe characters stay as they are.
quote() {
  local out="" a q="'"
  for a in "$@"; do
    if [[ "$a" =~ ^[][A-Za-z0-9_./:=,@%+\<\>-]+$ ]]; then
      out+="${out:+ }$a"
    else
      out+="${out:+ }'${a//$q/$q\\$q$q}'"
    fi
  done
  printf '%s' "$out"
}

# run COMMAND...: run it (its output is progress: to stderr), or in a dry run print it.
run() {
  if [ "$DRY_RUN" = 1 ]; then plan run "$(quote "$@")"; return 0; fi
  "$@" >&2
}

# check DESCRIPTION COMMAND...: a read-only probe. A dry run prints it and answers "not done"
# (it must not touch the cluster), so the plan shows every action a first run takes.
check() {
  local what=$1
  shift
  if [ "$DRY_RUN" = 1 ]; then plan check "$what"; return 1; fi
  "$@"
}

header() {
  if [ "$DRY_RUN" = 1 ]; then printf '\n== %s: %s\n' "$1" "$2"; else say "$1: $2"; fi
}

# --- kubectl -----------------------------------------------------------------------------------
KUBECTL=()
# init_kubectl PHASE: pick kubectl (k3s's when none is on PATH) and check that the cluster answers.
init_kubectl() {
  [ "$DRY_RUN" = 0 ] && [ ${#KUBECTL[@]} -eq 0 ] || return 0
  if command -v kubectl >/dev/null; then
    KUBECTL=(kubectl)
  elif [ -x /usr/local/bin/k3s ]; then
    KUBECTL=(/usr/local/bin/k3s kubectl)
  else
    fail "$1" "kubectl is not on PATH" "install kubectl, or run the k3s phase (it links kubectl to k3s)"
  fi
  KUBECTL+=(--kubeconfig "$KUBECONFIG_PATH")
  [ -z "$CONTEXT" ] || KUBECTL+=(--context "$CONTEXT")
  local i
  for i in 1 2 3 4 5 6; do
    "${KUBECTL[@]}" get namespace default -o name >/dev/null 2>&1 && return 0
    sleep 5
  done
  KUBECTL=()
  fail "$1" "the cluster does not answer (kubeconfig $KUBECONFIG_PATH${CONTEXT:+, context $CONTEXT})" \
    "check it with kubectl --kubeconfig $KUBECONFIG_PATH get nodes; without --kubeconfig, check k3s: systemctl status k3s"
}
kc() { "${KUBECTL[@]}" "$@"; }
# rkc ARGS...: kubectl that acts; its output is dropped, and a dry run prints it instead (the
# plan's header names the kubeconfig and context every kubectl line uses).
rkc() {
  if [ "$DRY_RUN" = 1 ]; then plan run "$(quote kubectl "$@")"; return 0; fi
  kc "$@" >/dev/null
}

# --- downloads: every file fetched is checked before use ---------------------------------------
# download URL DEST [checksums]
download() {
  local url=$1 dest=$2 kind=${3:-}
  if [ "$DRY_RUN" = 1 ]; then
    plan download "$url -> $dest${kind:+ ($kind)}"
    return 0
  fi
  mkdir -p "$(dirname "$dest")"
  local accept=()
  [[ "$url" != https://api.github.com/* ]] || accept=(-H "Accept: application/vnd.github+json")
  curl -fsSL --proto '=https' --tlsv1.2 --retry 3 --retry-delay 2 ${accept[@]+"${accept[@]}"} \
    -o "$dest.part" "$url" || { rm -f "$dest.part"; return 1; }
  mv -f "$dest.part" "$dest"
}

# verify_sha256 DIR FILE SUMS: FILE must have exactly one line in SUMS, and match it.
verify_sha256() {
  local dir=$1 file=$2 sums=$3
  if [ "$DRY_RUN" = 1 ]; then
    plan verify "sha256sum -c: $dir/$file against $dir/$sums"
    return 0
  fi
  local line
  line=$(grep -E "^[0-9a-f]{64}[ *]+\\*?${file//./\\.}\$" "$dir/$sums" || true)
  [ -n "$line" ] && [ "$(printf '%s\n' "$line" | wc -l)" -eq 1 ] || return 1
  (cd "$dir" && printf '%s\n' "$line" | sha256sum -c --quiet - >/dev/null 2>&1)
}

# fetch_verified PHASE DIR FILE URL SUMS SUMS_URL: reuse a verified pair from an earlier run,
# else download the checksum file and the file, and verify; a mismatch deletes the file.
fetch_verified() {
  local phase=$1 dir=$2 file=$3 url=$4 sums=$5 sums_url=$6
  if [ "$DRY_RUN" = 0 ] && [ -f "$dir/$file" ] && [ -f "$dir/$sums" ] && verify_sha256 "$dir" "$file" "$sums"; then
    say "$phase: using $dir/$file (verified against $sums)"
    return 0
  fi
  download "$sums_url" "$dir/$sums" checksums ||
    fail "$phase" "could not download $sums_url" "check this machine's internet access (curl $sums_url), then re-run"
  download "$url" "$dir/$file" ||
    fail "$phase" "could not download $url" "check this machine's internet access (curl -I $url), then re-run"
  if ! verify_sha256 "$dir" "$file" "$sums"; then
    rm -f "$dir/$file"
    fail "$phase" "$file does not match its sha256 in $sums_url (deleted)" \
      "the download was corrupted or altered; re-run to download it again, and report it if it persists"
  fi
}

# write_file PATH MODE < CONTENT: write only when the content differs.
write_file() {
  local path=$1 mode=$2 content
  content=$(cat)
  if [ "$DRY_RUN" = 1 ]; then
    plan write "$path (mode $mode, only if its content differs):"
    printf '%s\n' "$content" | sed 's/^/          | /'
    return 0
  fi
  if [ -f "$path" ] && [ "$(cat "$path")" = "$content" ]; then return 0; fi
  mkdir -p "$(dirname "$path")"
  printf '%s\n' "$content" >"$path.tmp"
  chmod "$mode" "$path.tmp"
  mv -f "$path.tmp" "$path"
}

# --- preflight ---------------------------------------------------------------------------------
PROBLEMS=()
problem() {
  if [ "$DRY_RUN" = 1 ]; then plan warning "$1 (a real run stops here)"; else PROBLEMS+=("$1"); fi
}
need_tool() { # TOOL WHY HOW
  if [ "$DRY_RUN" = 1 ]; then plan check "$1 on PATH ($2)"; fi
  command -v "$1" >/dev/null || problem "$1 is not on PATH, needed $2; $3"
}

phase_preflight() {
  header preflight "this machine and the tools"
  [ "$(uname -s)" = Linux ] || problem "this is $(uname -s); the DGX Spark runs Linux"
  if [ "$LOCAL" = 1 ] && [ "$CLUSTER_PHASE" = 1 ]; then
    [ "$DRY_RUN" = 0 ] || plan check "Linux on arm64 (uname -m: aarch64), the DGX Spark"
    [ "$ARCH" = arm64 ] || problem "this machine is $(uname -m), not arm64; to install onto another cluster from here, pass --kubeconfig"
  elif [[ "$ARCH" == unsupported:* ]]; then
    problem "no flux CLI is published for $(uname -m) in this script's pins; use an arm64 or amd64 machine"
  fi

  if [ "$LOCAL" = 1 ] && [ "$CLUSTER_PHASE" = 1 ]; then
    # k3s installs into /usr/local/bin and systemd, and its kubeconfig is readable by root only.
    if [ "$DRY_RUN" = 1 ]; then
      plan check "root (id -u = 0); otherwise a real run re-runs itself with sudo"
    elif [ "$(id -u)" != 0 ] && ! command -v sudo >/dev/null; then
      problem "k3s and its kubeconfig need root and sudo is not on PATH; run this as root"
    fi
  fi

  if [ "$INSTALL_K3S" = 1 ]; then
    need_tool systemctl "to run k3s as a service" "the DGX Spark's OS uses systemd"
    local where=/var/lib
    [ ! -d /var/lib/rancher ] || where=/var/lib/rancher
    [ "$DRY_RUN" = 0 ] || plan check "at least ${MIN_FREE_GIB} GiB free under $where (df)"
    local free_kib
    free_kib=$(df -Pk "$where" 2>/dev/null | awk 'NR==2 {print $4}')
    if [ -n "$free_kib" ] && [ "$free_kib" -lt $((MIN_FREE_GIB * 1024 * 1024)) ]; then
      problem "only $((free_kib / 1024 / 1024)) GiB free under $where; k3s, its images and Gitea's volume need ${MIN_FREE_GIB} GiB"
    fi
  fi
  if [ "$INSTALL_K3S" = 1 ] || selected flux || selected keda; then
    need_tool curl "to download the pinned releases" "apt-get install curl"
    need_tool sha256sum "to verify every download" "apt-get install coreutils"
  fi
  if selected flux; then need_tool tar "to unpack the flux CLI" "apt-get install tar"; fi
  if [ "$INSTALL_K3S" = 0 ] && { selected flux || selected keda || selected gitea || selected raibid; }; then
    [ "$DRY_RUN" = 0 ] || plan check "kubectl on PATH (or k3s's, /usr/local/bin/k3s kubectl)"
    command -v kubectl >/dev/null || [ -x /usr/local/bin/k3s ] ||
      problem "kubectl is not on PATH; install it, or run the k3s phase"
  fi
  if selected gitea; then need_tool diff "kubectl diff compares Gitea's objects with it" "apt-get install diffutils"; fi
  if selected keda || selected raibid; then
    need_tool python3 "for raibid-gitops and to read GitHub's release digests" "apt-get install python3"
    [ "$DRY_RUN" = 0 ] || plan check "python3 >= 3.11 (raibid-gitops requires it)"
    if command -v python3 >/dev/null && ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
      problem "python3 is $(python3 -c 'import platform; print(platform.python_version())'); raibid-gitops needs >= 3.11"
    fi
  fi
  if selected raibid; then
    need_tool git "raibid-gitops commits and pushes the config repository" "apt-get install git"
    [ "$DRY_RUN" = 0 ] || plan check "python3 can make a venv (venv, ensurepip) unless raibid is installed"
    if ! command -v raibid >/dev/null && [ ! -x "$VENV/bin/raibid" ] && command -v python3 >/dev/null &&
      ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
      problem "python3 cannot create a venv; apt-get install python3-venv"
    fi
  fi

  if [ ${#PROBLEMS[@]} -gt 0 ]; then
    local p
    for p in "${PROBLEMS[@]}"; do printf 'bootstrap: preflight: %s\n' "$p" >&2; done
    fail preflight "${#PROBLEMS[@]} problem(s) above" "fix them and re-run; nothing was changed"
  fi

  if [ "$DRY_RUN" = 0 ] && [ "$LOCAL" = 1 ] && [ "$CLUSTER_PHASE" = 1 ] && [ "$(id -u)" != 0 ]; then
    say "k3s and its kubeconfig need root: re-running with sudo"
    exec sudo -- bash "$SCRIPT_PATH" ${ORIGINAL_ARGS[@]+"${ORIGINAL_ARGS[@]}"}
  fi
  [ "$DRY_RUN" = 1 ] || result preflight ok
}

# --- k3s ---------------------------------------------------------------------------------------
k3s_installed_version() {
  [ -x /usr/local/bin/k3s ] || return 0
  /usr/local/bin/k3s --version 2>/dev/null | awk 'NR==1 {print $3}'
}

k3s_runs() { [ "$1" = "$K3S_VERSION" ] && systemctl is-active --quiet k3s; }

k3s_unit() {
  # What k3s's own installer writes for a server, minus its environment-file plumbing.
  cat <<'EOF'
[Unit]
Description=Lightweight Kubernetes (k3s), installed by raibid-gitops bootstrap.sh
Documentation=https://k3s.io
Wants=network-online.target
After=network-online.target

[Install]
WantedBy=multi-user.target

[Service]
Type=notify
EnvironmentFile=-/etc/default/%N
KillMode=process
Delegate=yes
User=root
LimitNOFILE=1048576
LimitNPROC=infinity
LimitCORE=infinity
TasksMax=infinity
TimeoutStartSec=0
Restart=always
RestartSec=5s
ExecStartPre=-/sbin/modprobe br_netfilter
ExecStartPre=-/sbin/modprobe overlay
ExecStart=/usr/local/bin/k3s server
EOF
}

wait_for_node() {
  if [ "$DRY_RUN" = 1 ]; then
    plan wait "until $K3S_KUBECONFIG exists and the node is Ready (kubectl wait --for=condition=Ready node --all --timeout=$TIMEOUT)"
    return 0
  fi
  # A first start unpacks k3s's data and images: tens of seconds.
  local i
  for i in $(seq 1 120); do
    [ -f "$K3S_KUBECONFIG" ] &&
      [ -n "$(/usr/local/bin/k3s kubectl --kubeconfig "$K3S_KUBECONFIG" get nodes -o name 2>/dev/null)" ] && break
    [ "$i" -lt 120 ] || fail k3s "k3s did not register its node within 4 minutes" \
      "see journalctl -u k3s; then re-run bootstrap.sh --from k3s"
    sleep 2
  done
  init_kubectl k3s
  kc wait --for=condition=Ready node --all --timeout="$TIMEOUT" >/dev/null ||
    fail k3s "the node is not Ready after $TIMEOUT" "see kubectl describe node and journalctl -u k3s; then re-run bootstrap.sh --from k3s"
}

phase_k3s() {
  header k3s "k3s $K3S_VERSION"
  if [ "$LOCAL" = 0 ]; then
    if [ "$DRY_RUN" = 1 ]; then plan skip "--kubeconfig targets an existing cluster"; else
      result k3s "skipped: --kubeconfig targets an existing cluster"; fi
    return 0
  fi
  local have=""
  [ "$DRY_RUN" = 1 ] || have=$(k3s_installed_version)
  if check "/usr/local/bin/k3s --version reports $K3S_VERSION and k3s.service is active: then nothing to do" \
    k3s_runs "$have"; then
    result k3s "$K3S_VERSION runs; nothing to do"
    return 0
  fi
  if [ -n "$have" ] && [ "$have" != "$K3S_VERSION" ]; then
    fail k3s "k3s $have is installed here; this bootstrap pins $K3S_VERSION" \
      "upgrade k3s deliberately, or keep it and skip this phase: bash bootstrap.sh --kubeconfig $K3S_KUBECONFIG"
  fi

  if [ "$have" != "$K3S_VERSION" ]; then
    local dir="$CACHE_DIR/k3s-$K3S_VERSION"
    fetch_verified k3s "$dir" "k3s-$TARGET_ARCH" "$K3S_TAG_URL/k3s-$TARGET_ARCH" \
      "sha256sum-$TARGET_ARCH.txt" "$K3S_TAG_URL/sha256sum-$TARGET_ARCH.txt"
    run install -m 0755 "$dir/k3s-$TARGET_ARCH" /usr/local/bin/k3s
  fi
  # The names k3s's installer links, unless the machine already has its own.
  local tool
  for tool in kubectl crictl ctr; do
    if [ "$DRY_RUN" = 1 ]; then
      plan run "ln -s k3s /usr/local/bin/$tool   (only if no $tool is on PATH)"
    elif ! command -v "$tool" >/dev/null; then
      ln -s k3s "/usr/local/bin/$tool"
    fi
  done
  # A unit someone else wrote (k3s's installer, with their flags) is theirs: only started.
  if [ "$DRY_RUN" = 1 ] || [ ! -f "$K3S_UNIT" ] || grep -q 'installed by raibid-gitops' "$K3S_UNIT"; then
    k3s_unit | write_file "$K3S_UNIT" 0644
  fi
  run systemctl daemon-reload
  run systemctl enable --now k3s.service
  wait_for_node
  [ "$DRY_RUN" = 1 ] || result k3s "installed $K3S_VERSION; kubeconfig $K3S_KUBECONFIG"
}

# --- flux --------------------------------------------------------------------------------------
# deploy_versions NS LABEL NAME...: one line per Deployment: its LABEL value, "unlabelled", or
# "-" when there is no such Deployment.
deploy_versions() {
  local ns=$1 label=$2 name v
  shift 2
  for name in "$@"; do
    if v=$(kc -n "$ns" get deployment "$name" -o "jsonpath={.metadata.labels.${label//./\\.}}" 2>/dev/null); then
      printf '%s\n' "${v:-unlabelled}"
    else
      printf '%s\n' -
    fi
  done
}

# install_state WANT VERSIONS: "current" (all at WANT), "absent" (none there, or some missing
# and the rest at WANT), or the first other version found ("unlabelled" included).
install_state() {
  local want=$1 versions=$2 v other="" missing=0
  while read -r v; do
    if [ "$v" = "-" ]; then missing=1; elif [ "$v" != "$want" ]; then other=${other:-$v}; fi
  done <<<"$versions"
  if [ -n "$other" ]; then echo "$other"; elif [ "$missing" = 1 ]; then echo absent; else echo current; fi
}

wait_available() { # NS PHASE DEPLOYMENT...
  local ns=$1 phase=$2 d
  shift 2
  for d in "$@"; do
    if [ "$DRY_RUN" = 1 ]; then
      plan wait "kubectl -n $ns rollout status deployment/$d --timeout=$TIMEOUT"
    else
      kc -n "$ns" rollout status "deployment/$d" --timeout="$TIMEOUT" >/dev/null ||
        fail "$phase" "deployment $ns/$d is not available after $TIMEOUT" \
          "see kubectl -n $ns describe deployment $d (and its pods' events), then re-run bootstrap.sh --from $phase"
    fi
  done
}

phase_flux() {
  header flux "Flux v$FLUX_VERSION ($FLUX_COMPONENTS)"
  local deps=(source-controller kustomize-controller notification-controller) state=absent
  if [ "$DRY_RUN" = 1 ]; then
    plan check "deployments ${deps[*]} in flux-system labelled app.kubernetes.io/version=v$FLUX_VERSION: then nothing to do"
  else
    state=$(install_state "v$FLUX_VERSION" "$(deploy_versions flux-system app.kubernetes.io/version "${deps[@]}")")
  fi
  case "$state" in
    current)
      wait_available flux-system flux "${deps[@]}"
      result flux "v$FLUX_VERSION runs; nothing to do"
      return 0
      ;;
    absent) ;;
    *)
      fail flux "Flux ${state/#unlabelled/of unknown version (not installed by flux install)} runs in this cluster; this bootstrap pins v$FLUX_VERSION" \
        "upgrade Flux deliberately (flux install of v$FLUX_VERSION, or flux bootstrap if it was bootstrapped), or keep it and skip this phase: bash bootstrap.sh --from keda"
      ;;
  esac
  local dir="$CACHE_DIR/flux-v$FLUX_VERSION" archive="flux_${FLUX_VERSION}_linux_${TARGET_ARCH}.tar.gz"
  fetch_verified flux "$dir" "$archive" "$FLUX_RELEASE_URL/$archive" \
    "flux_${FLUX_VERSION}_checksums.txt" "$FLUX_RELEASE_URL/flux_${FLUX_VERSION}_checksums.txt"
  run tar -xzf "$dir/$archive" -C "$dir" flux
  # The CLI carries its release's manifests (no download) and waits for the controllers.
  local ctx=()
  [ -z "$CONTEXT" ] || ctx=(--context "$CONTEXT")
  run "$dir/flux" install --components="$FLUX_COMPONENTS" --kubeconfig "$KUBECONFIG_PATH" \
    ${ctx[@]+"${ctx[@]}"} --timeout="$TIMEOUT" ||
    fail flux "flux install did not finish" \
      "see flux check and kubectl -n flux-system get pods; then re-run bootstrap.sh --from flux"
  [ "$DRY_RUN" = 1 ] || result flux "installed v$FLUX_VERSION ($FLUX_COMPONENTS)"
}

# --- keda --------------------------------------------------------------------------------------
# keda_digest JSON NAME: the sha256sum line for NAME from a GitHub release's API entry.
keda_digest() {
  python3 - "$1" "$2" "v$KEDA_VERSION" <<'PY'
import json, re, sys
path, name, tag = sys.argv[1:4]
with open(path, encoding="utf-8") as f:
    release = json.load(f)
if release.get("tag_name") != tag:
    sys.exit(f"the release entry is for {release.get('tag_name')!r}, not {tag}")
for asset in release.get("assets") or []:
    if asset.get("name") == name:
        digest = asset.get("digest") or ""
        if re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
            print(f"{digest[7:]}  {name}")
            sys.exit(0)
        sys.exit(f"GitHub lists no sha256 digest for {name}")
sys.exit(f"release {tag} has no asset {name}")
PY
}

phase_keda() {
  header keda "KEDA v$KEDA_VERSION"
  local deps=(keda-operator keda-metrics-apiserver keda-admission) state=absent
  if [ "$DRY_RUN" = 1 ]; then
    plan check "deployments ${deps[*]} in keda labelled app.kubernetes.io/version=$KEDA_VERSION: then nothing to do"
  else
    state=$(install_state "$KEDA_VERSION" "$(deploy_versions keda app.kubernetes.io/version "${deps[@]}")")
  fi
  case "$state" in
    current)
      wait_available keda keda "${deps[@]}"
      result keda "v$KEDA_VERSION runs; nothing to do"
      return 0
      ;;
    absent) ;;
    2.16.*)
      fail keda "KEDA $state runs in this cluster; it refuses the pool's trigger (\"activationLagCount required for Redis lag\")" \
        "upgrade KEDA to v$KEDA_VERSION (kubectl apply --server-side -f keda-$KEDA_VERSION.yaml, or helm upgrade if Helm installed it), then re-run bootstrap.sh --from keda"
      ;;
    *)
      fail keda "KEDA ${state/#unlabelled/of unknown version} runs in this cluster; this bootstrap pins v$KEDA_VERSION" \
        "upgrade KEDA deliberately, or keep it (2.16.x will not do) and skip this phase: bash bootstrap.sh --from gitea"
      ;;
  esac
  local dir="$CACHE_DIR/keda-v$KEDA_VERSION" file="keda-$KEDA_VERSION.yaml" sums="keda-$KEDA_VERSION.yaml.sha256"
  if [ "$DRY_RUN" = 1 ] || ! { [ -f "$dir/$file" ] && [ -f "$dir/$sums" ] && verify_sha256 "$dir" "$file" "$sums"; }; then
    download "$KEDA_RELEASE_API" "$dir/release.json" checksums ||
      fail keda "could not read $KEDA_RELEASE_API" "check this machine's internet access (GitHub's API allows 60 requests an hour without a token), then re-run"
    if [ "$DRY_RUN" = 1 ]; then
      plan run "python3: the sha256 GitHub publishes for $file (assets[].digest in $dir/release.json) -> $dir/$sums"
    else
      keda_digest "$dir/release.json" "$file" >"$dir/$sums" ||
        fail keda "no usable digest for $file in $KEDA_RELEASE_API" "download it yourself and compare with the release page; report it"
    fi
    download "$KEDA_RELEASE_URL/$file" "$dir/$file" ||
      fail keda "could not download $KEDA_RELEASE_URL/$file" "check this machine's internet access, then re-run"
    if ! verify_sha256 "$dir" "$file" "$sums"; then
      rm -f "$dir/$file"
      fail keda "$file does not match the digest GitHub publishes for it (deleted)" \
        "the download was corrupted or altered; re-run to download it again"
    fi
  fi
  # Server-side: KEDA's CRDs are too large for the last-applied annotation of a client-side apply.
  rkc apply --server-side --field-manager="$FIELD_MANAGER" -f "$dir/$file" ||
    fail keda "kubectl apply of $file failed" "see the message above; then re-run bootstrap.sh --from keda"
  wait_available keda keda "${deps[@]}"
  [ "$DRY_RUN" = 1 ] || result keda "installed v$KEDA_VERSION"
}

# --- gitea -------------------------------------------------------------------------------------
gitea_manifest() {
  cat <<EOF
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: gitea-data
  namespace: $GITEA_NS
  labels:
    app.kubernetes.io/name: gitea
    app.kubernetes.io/managed-by: $FIELD_MANAGER
spec:
  accessModes: [ReadWriteOnce]
  resources:
    requests:
      storage: $GITEA_VOLUME_SIZE
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: gitea
  namespace: $GITEA_NS
  labels:
    app.kubernetes.io/name: gitea
    app.kubernetes.io/version: "$GITEA_VERSION"
    app.kubernetes.io/managed-by: $FIELD_MANAGER
spec:
  replicas: 1
  # One ReadWriteOnce volume holding a SQLite database: never two Giteas at once.
  strategy:
    type: Recreate
  selector:
    matchLabels:
      app.kubernetes.io/name: gitea
  template:
    metadata:
      labels:
        app.kubernetes.io/name: gitea
    spec:
      securityContext:
        runAsUser: 1000
        runAsGroup: 1000
        runAsNonRoot: true
        fsGroup: 1000
      containers:
        - name: gitea
          image: $GITEA_IMAGE
          ports:
            - name: http
              containerPort: $GITEA_PORT
          env:
            # app.ini on the volume (no subPath: kubelet would create it root-owned).
            - name: GITEA_APP_INI
              value: /var/lib/gitea/custom/conf/app.ini
            - name: GITEA__security__INSTALL_LOCK
              value: "true"
            - name: GITEA__security__SECRET_KEY_URI
              value: file:///etc/gitea-secret/secret-key
            - name: GITEA__server__ROOT_URL
              value: $GITEA_CLUSTER_URL/
            - name: GITEA__server__DISABLE_SSH
              value: "true"
            - name: GITEA__server__START_SSH_SERVER
              value: "false"
            - name: GITEA__database__DB_TYPE
              value: sqlite3
            # The OCI container registry (and the other package registries).
            - name: GITEA__packages__ENABLED
              value: "true"
            - name: GITEA__service__DISABLE_REGISTRATION
              value: "true"
            # Webhooks may reach Flux's receiver (a private cluster address, refused by default).
            - name: GITEA__webhook__ALLOWED_HOST_LIST
              value: $RECEIVER_HOST
          volumeMounts:
            - name: data
              mountPath: /var/lib/gitea
            - name: secret-key
              mountPath: /etc/gitea-secret
              readOnly: true
          readinessProbe:
            httpGet:
              path: /api/healthz
              port: http
            periodSeconds: 10
          livenessProbe:
            httpGet:
              path: /api/healthz
              port: http
            initialDelaySeconds: 60
            periodSeconds: 10
            failureThreshold: 6
          resources:
            requests:
              cpu: 250m
              memory: 512Mi
            limits:
              memory: 2Gi
      volumes:
        - name: data
          persistentVolumeClaim:
            claimName: gitea-data
        - name: secret-key
          secret:
            secretName: $GITEA_KEY_SECRET
---
apiVersion: v1
kind: Service
metadata:
  name: gitea
  namespace: $GITEA_NS
  labels:
    app.kubernetes.io/name: gitea
    app.kubernetes.io/managed-by: $FIELD_MANAGER
spec:
  selector:
    app.kubernetes.io/name: gitea
  ports:
    - name: http
      port: $GITEA_PORT
      targetPort: http
EOF
}

# 32 random bytes as hex, one line: fine for YAML and for Gitea's password rules.
gen_secret() { printf '%s\n' "$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')"; }

# secret_yaml NAME KEY... : a Secret whose stringData values are read from stdin, one per line,
# so that no value ever appears on a command line.
secret_yaml() {
  local name=$1 key value
  shift
  printf 'apiVersion: v1\nkind: Secret\nmetadata:\n  name: %s\n  namespace: %s\n' "$name" "$GITEA_NS"
  printf '  labels:\n    app.kubernetes.io/managed-by: %s\ntype: Opaque\nstringData:\n' "$FIELD_MANAGER"
  for key in "$@"; do
    IFS= read -r value || [ -n "$value" ] || return 1
    printf '  %s: "%s"\n' "$key" "$value"
  done
}

ns_exists() { kc get namespace "$GITEA_NS" >/dev/null 2>&1; }
secret_exists() { kc -n "$GITEA_NS" get secret "$1" >/dev/null 2>&1; }
secret_value() { kc -n "$GITEA_NS" get secret "$1" -o "jsonpath={.data.$2}" | base64 -d; }
# token_works TOKEN: Gitea answers /api/v1/user with it. The header goes to curl on stdin.
token_works() {
  [ -n "$1" ] || return 1
  printf 'Authorization: token %s\n' "$1" |
    gitea_exec curl -fsS -o /dev/null -H @- "http://127.0.0.1:$GITEA_PORT/api/v1/user" 2>/dev/null
}
gitea_exec() { kc -n "$GITEA_NS" exec -i deployment/gitea -c gitea -- "$@"; }
# gitea_with_password ARGS...: `gitea admin user ARGS... --password P` in the pod, P read from
# stdin there: it is on no command line of this machine, only on the gitea process's inside the
# container (the CLI takes it no other way).
gitea_with_password() {
  # shellcheck disable=SC2016 # "$p" and "$@" are expanded by sh in the pod
  gitea_exec sh -c 'IFS= read -r p && exec gitea admin user "$@" --password "$p"' sh "$@"
}

phase_gitea() {
  header gitea "Gitea $GITEA_VERSION in namespace $GITEA_NS ($GITEA_IMAGE)"
  local changed=()

  if ! check "namespace $GITEA_NS exists" ns_exists; then
    rkc create namespace "$GITEA_NS"
    changed+=("namespace")
  fi

  # Secrets first: generated once and kept, since a new SECRET_KEY would make Gitea's encrypted
  # data unreadable and a new password would lock out whoever uses the old one.
  if ! check "Secret $GITEA_NS/$GITEA_KEY_SECRET exists (Gitea's SECRET_KEY; kept across re-runs)" \
    secret_exists "$GITEA_KEY_SECRET"; then
    if [ "$DRY_RUN" = 1 ]; then
      plan run "kubectl -n $GITEA_NS create -f -   (Secret $GITEA_KEY_SECRET: secret-key, generated here, sent on stdin, never printed)"
    else
      gen_secret | secret_yaml "$GITEA_KEY_SECRET" secret-key | kc create -f - >/dev/null
      changed+=("secret $GITEA_KEY_SECRET")
    fi
  fi
  local new_password=0
  if ! check "Secret $GITEA_NS/$GITEA_ADMIN_SECRET exists (admin username and password; kept across re-runs)" \
    secret_exists "$GITEA_ADMIN_SECRET"; then
    if [ "$DRY_RUN" = 1 ]; then
      plan run "kubectl -n $GITEA_NS create -f -   (Secret $GITEA_ADMIN_SECRET: username $GITEA_ADMIN_USER and a password generated here, sent on stdin, never printed)"
    else
      { printf '%s\n' "$GITEA_ADMIN_USER"; gen_secret; } |
        secret_yaml "$GITEA_ADMIN_SECRET" username password | kc create -f - >/dev/null
      new_password=1
      changed+=("secret $GITEA_ADMIN_SECRET")
    fi
  fi

  local manifest
  manifest=$(gitea_manifest)
  if [ "$DRY_RUN" = 1 ]; then
    plan check "kubectl diff --server-side of the objects below: identical, then nothing to apply"
    plan run "kubectl apply --server-side --field-manager=$FIELD_MANAGER -f -   (these objects):"
    printf '%s\n' "$manifest" | sed 's/^/          | /'
  else
    local rc=0
    printf '%s\n' "$manifest" | kc diff --server-side --field-manager="$FIELD_MANAGER" -f - >/dev/null 2>&1 || rc=$?
    if [ "$rc" -ne 0 ]; then
      printf '%s\n' "$manifest" | kc apply --server-side --field-manager="$FIELD_MANAGER" -f - >/dev/null ||
        fail gitea "kubectl apply of Gitea's objects failed" "see the message above; then re-run bootstrap.sh --from gitea"
      changed+=("objects")
    fi
  fi
  wait_available "$GITEA_NS" gitea gitea

  # The admin user, created with the CLI in the pod (gitea_with_password).
  local users="" password=""
  if [ "$DRY_RUN" = 0 ]; then
    users=$(gitea_exec gitea admin user list </dev/null) ||
      fail gitea "could not list Gitea's users (kubectl exec into deployment/gitea)" \
        "see kubectl -n $GITEA_NS logs deployment/gitea; then re-run bootstrap.sh --from gitea"
    password=$(secret_value "$GITEA_ADMIN_SECRET" password)
  fi
  local row
  row=$(printf '%s\n' "$users" | awk -v u="$GITEA_ADMIN_USER" '$2 == u')
  if ! check "Gitea admin user $GITEA_ADMIN_USER exists (gitea admin user list, in the pod)" test -n "$row"; then
    if [ "$DRY_RUN" = 1 ]; then
      plan run "kubectl -n $GITEA_NS exec -i deployment/gitea -- gitea admin user create --admin --username $GITEA_ADMIN_USER --email $GITEA_ADMIN_EMAIL --must-change-password=false --password (from Secret $GITEA_ADMIN_SECRET, on stdin)"
    else
      printf '%s\n' "$password" | gitea_with_password create --admin --username "$GITEA_ADMIN_USER" \
        --email "$GITEA_ADMIN_EMAIL" --must-change-password=false >/dev/null ||
        fail gitea "could not create Gitea user $GITEA_ADMIN_USER" "see the message above; then re-run bootstrap.sh --from gitea"
      changed+=("admin user")
    fi
  elif [ "$(printf '%s\n' "$row" | awk '{print $5}')" != true ]; then
    fail gitea "Gitea user $GITEA_ADMIN_USER exists but is not an admin" \
      "make it one (gitea admin user ... in the pod, or the site administration page), then re-run bootstrap.sh --from gitea"
  elif [ "$new_password" = 1 ]; then
    # The Secret was new but the user was not: make the password the one now kept.
    printf '%s\n' "$password" |
      gitea_with_password change-password --username "$GITEA_ADMIN_USER" --must-change-password=false >/dev/null ||
      fail gitea "could not set $GITEA_ADMIN_USER's password" "see the message above; then re-run bootstrap.sh --from gitea"
    changed+=("admin password")
  fi
  password=""

  # The admin token raibid bootstrap uses, kept in the Secret; a stored token that Gitea no
  # longer accepts is replaced. The check sends the token on stdin as curl's header file.
  local token=""
  [ "$DRY_RUN" = 1 ] || token=$(secret_value "$GITEA_ADMIN_SECRET" token 2>/dev/null || true)
  if ! check "Secret $GITEA_ADMIN_SECRET has a token Gitea accepts (GET /api/v1/user from inside the pod, token on stdin)" \
    token_works "$token"; then
    if [ "$DRY_RUN" = 1 ]; then
      plan run "kubectl -n $GITEA_NS exec deployment/gitea -- gitea admin user generate-access-token --username $GITEA_ADMIN_USER --token-name raibid-bootstrap-<UTC time> --scopes all --raw   (output captured, never printed)"
      plan run "kubectl -n $GITEA_NS patch secret $GITEA_ADMIN_SECRET --type merge --patch-file /dev/stdin   (the token, on stdin)"
    else
      token=$(gitea_exec gitea admin user generate-access-token --username "$GITEA_ADMIN_USER" \
        --token-name "raibid-bootstrap-$(date -u +%Y%m%dT%H%M%SZ)" --scopes all --raw </dev/null |
        grep -E '^[0-9a-f]{40}$' | tail -1) || true
      [ -n "$token" ] || fail gitea "gitea admin user generate-access-token gave no token" \
        "see kubectl -n $GITEA_NS logs deployment/gitea; then re-run bootstrap.sh --from gitea"
      printf '{"stringData":{"token":"%s"}}\n' "$token" |
        kc -n "$GITEA_NS" patch secret "$GITEA_ADMIN_SECRET" --type merge --patch-file /dev/stdin >/dev/null ||
        fail gitea "could not store the token in Secret $GITEA_ADMIN_SECRET" "see the message above; then re-run bootstrap.sh --from gitea"
      changed+=("admin token")
    fi
  fi
  token=""

  if [ "$DRY_RUN" = 1 ]; then return 0; fi
  if [ ${#changed[@]} -eq 0 ]; then
    result gitea "$GITEA_VERSION runs; nothing to do"
  else
    local what
    what=$(printf ', %s' "${changed[@]}")
    result gitea "$GITEA_VERSION ready (created or updated: ${what#, }); admin $GITEA_ADMIN_USER, credentials in Secret $GITEA_NS/$GITEA_ADMIN_SECRET"
  fi
}

# --- raibid ------------------------------------------------------------------------------------
PF_PID=""
PF_DIR=""
cleanup() {
  if [ -n "$PF_PID" ]; then kill "$PF_PID" 2>/dev/null || true; fi
  if [ -n "$PF_DIR" ]; then rm -rf "$PF_DIR"; fi
}

has_bootstrap() { "$1" bootstrap --help >/dev/null 2>&1; }

RAIBID=""
find_raibid() {
  if command -v raibid >/dev/null && has_bootstrap raibid; then
    RAIBID=raibid
  elif [ -x "$VENV/bin/raibid" ] && has_bootstrap "$VENV/bin/raibid"; then
    RAIBID=$VENV/bin/raibid
  else
    return 1
  fi
}
ensure_raibid() {
  if check "\`raibid bootstrap\` available (raibid on PATH, or $VENV/bin/raibid): then no install" find_raibid; then
    return 0
  fi
  if [ "$DRY_RUN" = 0 ] && ! grep -qs '^name = "raibid-gitops"' "$PROJECT_DIR/pyproject.toml"; then
    fail raibid "raibid is not installed and $PROJECT_DIR is not a raibid-gitops checkout" \
      "run bootstrap.sh from a clone of raibid-gitops, or pip install raibid-gitops first"
  fi
  if [ "$DRY_RUN" = 1 ] || [ ! -x "$VENV/bin/python" ]; then run python3 -m venv "$VENV"; fi
  run "$VENV/bin/pip" install --quiet "$PROJECT_DIR" ||
    fail raibid "pip could not install raibid-gitops from $PROJECT_DIR" "see pip's message above; then re-run bootstrap.sh --from raibid"
  RAIBID=$VENV/bin/raibid
  [ "$DRY_RUN" = 1 ] || has_bootstrap "$RAIBID" ||
    fail raibid "this raibid-gitops ($PROJECT_DIR) has no \`raibid bootstrap\`" "update the checkout (git pull), then re-run bootstrap.sh --from raibid"
}

# A port-forward to Gitea: the one URL that reaches it from this machine whether the cluster is
# this machine's k3s or another one (--kubeconfig).
start_port_forward() {
  PF_DIR=$(mktemp -d)
  # kubectl itself in the background (not through kc), so that $! is the process to stop.
  "${KUBECTL[@]}" -n "$GITEA_NS" port-forward --address 127.0.0.1 service/gitea ":$GITEA_PORT" >"$PF_DIR/out" 2>&1 &
  PF_PID=$!
  local i port
  for i in $(seq 1 60); do
    port=$(sed -n 's/^Forwarding from 127\.0\.0\.1:\([0-9]*\) .*/\1/p' "$PF_DIR/out" | head -1)
    if [ -n "$port" ]; then
      GITEA_LOCAL_URL="http://127.0.0.1:$port"
      return 0
    fi
    kill -0 "$PF_PID" 2>/dev/null || break
    [ "$i" -lt 60 ] || break
    sleep 0.5
  done
  fail raibid "kubectl port-forward to service $GITEA_NS/gitea did not start: $(head -c 300 "$PF_DIR/out")" \
    "check that Gitea runs (kubectl -n $GITEA_NS get pods), then re-run bootstrap.sh --from raibid"
}

phase_raibid() {
  local py="${PYTHON_PHASES[*]}"
  [ -z "$PY_ONLY" ] || py=$PY_ONLY
  [ -z "$PY_FROM" ] || py="from $PY_FROM"
  header raibid "raibid bootstrap ($py)"
  ensure_raibid

  local args=(bootstrap --kubeconfig "$KUBECONFIG_PATH")
  [ -z "$CONTEXT" ] || args+=(--context "$CONTEXT")
  GITEA_LOCAL_URL="http://127.0.0.1:<port>"
  if [ "$DRY_RUN" = 1 ]; then
    plan run "kubectl -n $GITEA_NS port-forward --address 127.0.0.1 service/gitea :$GITEA_PORT   (in the background, stopped on exit; <port> is the one it picks)"
    plan run "export RAIBID_GITEA_TOKEN from Secret $GITEA_NS/$GITEA_ADMIN_SECRET key token (never printed), RAIBID_GITEA_USER=$GITEA_ADMIN_USER"
  else
    start_port_forward
    RAIBID_GITEA_TOKEN=$(secret_value "$GITEA_ADMIN_SECRET" token) ||
      fail raibid "could not read the token from Secret $GITEA_NS/$GITEA_ADMIN_SECRET" "re-run bootstrap.sh --from gitea"
    [ -n "$RAIBID_GITEA_TOKEN" ] || fail raibid "Secret $GITEA_NS/$GITEA_ADMIN_SECRET has no token" "re-run bootstrap.sh --from gitea"
    export RAIBID_GITEA_TOKEN
    export RAIBID_GITEA_USER="$GITEA_ADMIN_USER"
  fi
  args+=(--gitea-url "$GITEA_LOCAL_URL" --gitea-cluster-url "$GITEA_CLUSTER_URL" --receiver-url "$RECEIVER_URL")
  [ -z "$DIR_OPT" ] || args+=(--dir "$DIR_OPT")
  local kv
  for kv in ${SETS[@]+"${SETS[@]}"}; do args+=(--set "$kv"); done
  [ -z "$PY_FROM" ] || args+=(--from "$PY_FROM")
  [ -z "$PY_ONLY" ] || args+=(--only "$PY_ONLY")
  [ "$TIMEOUT_SET" = 0 ] || args+=(--timeout "$TIMEOUT")

  if [ "$DRY_RUN" = 1 ]; then
    plan run "$(quote raibid "${args[@]}")"
    # It reads the cluster and Gitea, which a dry run must not touch (nor need).
    plan note "a dry run does not start it; its own plan, once the cluster is up: $(quote raibid "${args[@]}" --dry-run)"
    return 0
  fi
  local rc=0
  "$RAIBID" "${args[@]}" || rc=$?
  case "$rc" in
    0) ;;
    2) printf 'bootstrap: raibid bootstrap refused its input (see above)\n' >&2; exit 2 ;;
    *) fail raibid "raibid bootstrap failed (exit $rc)" "its message above names the phase; fix it, then re-run bootstrap.sh --from <that phase>" ;;
  esac
}

# --- options and which phases run -------------------------------------------------------------
in_list() {
  local x=$1
  shift
  local y
  for y in "$@"; do [ "$x" = "$y" ] && return 0; done
  return 1
}

index_of() {
  local i
  for i in "${!SHELL_PHASES[@]}"; do [ "${SHELL_PHASES[$i]}" = "$1" ] && { echo "$i"; return; }; done
  echo -1
}

selected() {
  local i
  i=$(index_of "$1")
  [ "$i" -ge "$FIRST_I" ] && [ "$i" -le "$LAST_I" ]
}

parse_args() {
  DRY_RUN=0
  FROM=""
  ONLY=""
  KUBECONFIG_OPT=""
  CONTEXT=""
  TIMEOUT="5m"
  TIMEOUT_SET=0
  DIR_OPT=""
  SETS=()

  while [ $# -gt 0 ]; do
    arg=$1
    case "$arg" in
      --dry-run) DRY_RUN=1 ;;
      -h | --help) usage; exit 0 ;;
      --from | --only | --kubeconfig | --context | --timeout | --set | --dir | \
        --from=* | --only=* | --kubeconfig=* | --context=* | --timeout=* | --set=* | --dir=*)
        if [[ "$arg" == *=* ]]; then
          opt=${arg%%=*} val=${arg#*=}
        else
          [ $# -ge 2 ] || usage_error "$arg needs a value"
          opt=$arg val=$2
          shift
        fi
        [ -n "$val" ] || usage_error "$opt needs a value"
        case "$opt" in
          --from) FROM=$val ;;
          --only) ONLY=$val ;;
          --kubeconfig) KUBECONFIG_OPT=$val ;;
          --context) CONTEXT=$val ;;
          --timeout) TIMEOUT=$val TIMEOUT_SET=1 ;;
          --set) SETS+=("$val") ;;
          --dir) DIR_OPT=$val ;;
        esac
        ;;
      *) usage_error "unknown option: $arg" ;;
    esac
    shift
  done

  for pair in "from:$FROM" "only:$ONLY"; do
    name=${pair#*:}
    [ -z "$name" ] || in_list "$name" "${SHELL_PHASES[@]}" "${PYTHON_PHASES[@]}" ||
      usage_error "unknown phase for --${pair%%:*}: '$name' (phases: ${SHELL_PHASES[*]}; raibid bootstrap's: ${PYTHON_PHASES[*]})"
  done
  [ -z "$FROM" ] || [ -z "$ONLY" ] || usage_error "--from and --only exclude each other"
  [[ "$TIMEOUT" =~ ^[1-9][0-9]*(s|m|h)$ ]] || usage_error "--timeout: '$TIMEOUT' is not a duration like 300s, 10m or 1h"
  for kv in ${SETS[@]+"${SETS[@]}"}; do
    [[ "$kv" == ?*=* ]] || usage_error "--set: '$kv' is not KEY=VALUE"
  done
  if [ -n "$KUBECONFIG_OPT" ]; then
    [ -f "$KUBECONFIG_OPT" ] || usage_error "--kubeconfig: no such file: $KUBECONFIG_OPT"
    KUBECONFIG_OPT="$(cd "$(dirname "$KUBECONFIG_OPT")" && pwd)/$(basename "$KUBECONFIG_OPT")"
  fi
  [ -z "$CONTEXT" ] || [[ "$CONTEXT" != -* ]] || usage_error "--context: '$CONTEXT' is not a context name"
}

# settle: what follows from the options (which phases, this machine, the cluster).
settle() {
  PY_FROM=""
  PY_ONLY=""
  if [ -n "$ONLY" ]; then
    if in_list "$ONLY" "${PYTHON_PHASES[@]}"; then PY_ONLY=$ONLY; first=raibid last=raibid; else first=$ONLY last=$ONLY; fi
  elif [ -n "$FROM" ]; then
    if in_list "$FROM" "${PYTHON_PHASES[@]}"; then PY_FROM=$FROM; first=raibid; else first=$FROM; fi
    last=raibid
  else
    first=preflight last=raibid
  fi
  FIRST_I=$(index_of "$first")
  LAST_I=$(index_of "$last")

  LOCAL=1 # the cluster is this machine's k3s
  [ -z "$KUBECONFIG_OPT" ] || LOCAL=0
  KUBECONFIG_PATH=${KUBECONFIG_OPT:-$K3S_KUBECONFIG}
  CLUSTER_PHASE=0
  for p in k3s flux keda gitea raibid; do selected "$p" && CLUSTER_PHASE=1; done
  INSTALL_K3S=0
  [ "$LOCAL" = 1 ] && selected k3s && INSTALL_K3S=1

  # Downloads (kept, and verified again before reuse) and the venv raibid-gitops goes into.
  if [ "$(id -u)" = 0 ]; then
    CACHE_DIR=${RAIBID_BOOTSTRAP_CACHE:-/var/cache/raibid-bootstrap}
    VENV=${RAIBID_VENV:-/opt/raibid/venv}
  else
    CACHE_DIR=${RAIBID_BOOTSTRAP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/raibid-bootstrap}
    VENV=${RAIBID_VENV:-${XDG_DATA_HOME:-$HOME/.local/share}/raibid/venv}
  fi

  case "$(uname -m)" in
    aarch64 | arm64) ARCH=arm64 ;;
    x86_64 | amd64) ARCH=amd64 ;;
    *) ARCH="unsupported:$(uname -m)" ;;
  esac
  # The DGX Spark is arm64; with --kubeconfig this machine only runs clients (flux, kubectl).
  TARGET_ARCH=$ARCH
  [ "$LOCAL" = 0 ] || TARGET_ARCH=arm64
}

# --- main --------------------------------------------------------------------------------------
main() {
  ORIGINAL_ARGS=("$@")
  parse_args "$@"
  settle
  trap cleanup EXIT
  trap 'exit 130' INT TERM
  if [ "$DRY_RUN" = 1 ]; then
    printf 'bootstrap.sh --dry-run: the plan. Nothing is run, downloaded or changed.\n'
    printf 'pins: k3s %s, Flux v%s, KEDA v%s, Gitea %s\n' "$K3S_VERSION" "$FLUX_VERSION" "$KEDA_VERSION" "$GITEA_VERSION"
    printf 'cluster: %s\n' "$([ "$LOCAL" = 1 ] && echo "this machine's k3s" || echo "an existing cluster (--kubeconfig)")"
    printf 'kubectl: every kubectl below runs as %s\n' "$(quote kubectl --kubeconfig "$KUBECONFIG_PATH" ${CONTEXT:+--context "$CONTEXT"})"
    runs=(preflight)
    for phase in k3s flux keda gitea raibid; do selected "$phase" && runs+=("$phase"); done
    printf 'phases: %s\n' "${runs[*]}"
  fi
  phase_preflight
  for phase in k3s flux keda gitea raibid; do
    selected "$phase" || continue
    [ "$phase" = k3s ] || init_kubectl "$phase"
    "phase_$phase"
  done
}

# Run when executed; a test may source the file to call its functions. Piped into bash, it has
# no checkout to install raibid-gitops from.
if [ -z "${BASH_SOURCE[0]:-}" ]; then
  printf 'bootstrap: run it from a raibid-gitops checkout: bash bootstrap.sh --help\n' >&2
  exit 2
elif [ "${BASH_SOURCE[0]}" = "$0" ]; then
  main "$@"
fi
