//! `cargo run --release -p skiff-wasm-shim --example bench [WASM_DIR]`:
//! runs `wasm_shim::bench` and prints its table. WASM_DIR defaults to
//! `$SKIFF_WASM_DIR`, then `$CARGO_TARGET_DIR/wasm`.

fn main() -> anyhow::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("SKIFF_WASM_DIR").ok())
        .or_else(|| {
            std::env::var("CARGO_TARGET_DIR")
                .ok()
                .map(|t| format!("{t}/wasm"))
        })
        .ok_or_else(|| {
            anyhow::anyhow!("usage: bench WASM_DIR (built by scripts/build-examples)")
        })?;
    let opts = wasm_shim::bench::Options::new(dir);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let report = rt
        .block_on(wasm_shim::bench::run(&opts))
        .map_err(anyhow::Error::msg)?;
    print!("{}", report.table());
    Ok(())
}
