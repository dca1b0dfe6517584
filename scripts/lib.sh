# Shared by scripts/test, scripts/demo and scripts/bench: one target
# directory outside the clone, and the system packages the build and the
# tests need, installed when missing.

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/skiff-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# Two cores: RocksDB's C++ and rustc must not oversubscribe them.
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
SKIFF_BIN="$CARGO_TARGET_DIR/release/skiff"

log() { printf '==> %s\n' "$*" >&2; }

# protoc for the etcd API, libclang for RocksDB's bindgen, etcd/etcdctl as
# the real peers the tests and benchmarks run against.
ensure_deps() {
    local missing=()
    command -v protoc >/dev/null || missing+=(protobuf-compiler)
    command -v etcd >/dev/null || missing+=(etcd-server)
    command -v etcdctl >/dev/null || missing+=(etcd-client)
    command -v clang >/dev/null || missing+=(clang)
    ls /usr/lib/llvm-*/lib/libclang.so* >/dev/null 2>&1 || missing+=(libclang-dev)
    command -v cc >/dev/null || missing+=(build-essential)
    command -v curl >/dev/null || missing+=(curl)
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing ${missing[*]}"
        if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
        $SUDO apt-get update -q
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
    fi
    command -v cargo >/dev/null || { echo "cargo is not installed: install Rust 1.95 with rustup" >&2; exit 1; }
    mkdir -p "$CARGO_TARGET_DIR"
}

build_release() {
    log "building skiff (release; the first build takes a while: RocksDB's C++)"
    cargo build --release --locked -p skiff
}

# The runtimes' tests, the demo and the benchmark: the rust targets the
# guests in examples/ build for, a local OCI registry (Debian's
# docker-registry), runc + a static busybox (container images made on the
# spot, the start-time comparison) and iproute2 (container pods' network
# namespaces).
ensure_wasm_deps() {
    local targets
    targets="$(rustup target list --installed 2>/dev/null || true)"
    for t in wasm32-wasip1 wasm32-wasip2; do
        grep -qx "$t" <<<"$targets" || { log "rustup target add $t"; rustup target add "$t"; }
    done
    local missing=()
    command -v docker-registry >/dev/null || missing+=(docker-registry)
    command -v runc >/dev/null || missing+=(runc)
    dpkg -s busybox-static >/dev/null 2>&1 || missing+=(busybox-static)
    command -v ip >/dev/null || missing+=(iproute2)
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing ${missing[*]}"
        if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
        $SUDO apt-get update -q
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
    fi
}

# Where scripts/build-examples puts the guests and the tests look for them.
export SKIFF_WASM_DIR="${SKIFF_WASM_DIR:-$CARGO_TARGET_DIR/wasm}"
