#!/usr/bin/env bash
# The one test command (README, .ci/run): installs what the tests need, then runs every check.
# In CI (CI=true) a missing tool is a failure, never a skip.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/sbin"

step() { printf '\n==> %s\n' "$*"; }

step "Debian tools: real SMTP peers (smtp-sink/smtp-source, swaks with TLS), the test node's runtime"
# swaks does TLS only with Net::SSLeay + IO::Socket::SSL, which --no-install-recommends leaves out.
swaks_tls() { swaks --support 2>&1 | grep -q '^=== TLS supported'; }
missing=()
command -v smtp-sink >/dev/null || missing+=(postfix)
command -v swaks >/dev/null || missing+=(swaks)
command -v swaks >/dev/null && swaks_tls || missing+=(libnet-ssleay-perl libio-socket-ssl-perl)
command -v openssl >/dev/null || missing+=(openssl)
command -v promtool >/dev/null || missing+=(prometheus) # promtool and prometheus: alert and dashboard tests
# The node tests' single-node cluster (test/control-plane/node.ts): container runtime, CNI plugins,
# what kubelet, kube-proxy and kube-router call.
command -v containerd >/dev/null && command -v ctr >/dev/null || missing+=(containerd)
command -v runc >/dev/null || missing+=(runc)
[ -x /usr/lib/cni/bridge ] && [ -x /usr/lib/cni/host-local ] && [ -x /usr/lib/cni/portmap ] || missing+=(containernetworking-plugins)
command -v ip >/dev/null || missing+=(iproute2)
command -v nsenter >/dev/null || missing+=(util-linux)
command -v iptables >/dev/null || missing+=(iptables)
command -v ipset >/dev/null || missing+=(ipset)
command -v conntrack >/dev/null || missing+=(conntrack)
if ((${#missing[@]})); then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -o DPkg::Lock::Timeout=600 -y -qq --no-install-recommends \
      "${missing[@]}" >/dev/null
  else
    echo "missing ${missing[*]}: run 'sudo apt-get install ${missing[*]}'" >&2
    exit 1
  fi
fi
if ! swaks_tls; then
  echo "swaks has no TLS support ($(swaks --support 2>&1 | grep TLS)): install libnet-ssleay-perl libio-socket-ssl-perl" >&2
  exit 1
fi

step "Node dependencies"
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi

step "Test control plane and node (etcd, Kubernetes, CoreDNS, kube-router; built from Go modules once, then cached)"
npm run --silent control-plane -- build

step "powercut-fs for the power-loss test (FUSE in Go, built once, cached; needs /dev/fuse and root)"
[ -e /dev/fuse ] || { echo "/dev/fuse is missing: the power-loss test needs FUSE (modprobe fuse)" >&2; exit 1; }
node --import tsx -e "import('./test/helpers/powercut.ts').then((m) => m.powercutBinary())"

step "Typecheck, lint, generated CRDs, docs/reference.md, deploy/monitoring and the Helm chart up to date"
npx tsc -p tsconfig.json --noEmit
npx biome check .
npm run --silent crds:check
npm run --silent reference:check
npm run --silent monitoring:check
npm run --silent helm-chart:check

step "Images without Docker (relay, client, pause; rebuilt only when their inputs change)"
# Built here rather than inside the tests, so a cold build does not compete with timed tests.
npm run --silent image -- all >/dev/null

step "Tests"
report="$(mktemp -t email-relay-vitest-XXXXXX.json)"
status=0
npx vitest run --reporter=default --reporter=json --outputFile.json="$report" "$@" || status=$?
# A plain closing line for CI: "tests: N passed, N failed".
node -e 'const r = require(process.argv[1]); console.log(`tests: ${r.numPassedTests} passed, ${r.numFailedTests} failed`)' "$report" || true
rm -f "$report"
exit "$status"
