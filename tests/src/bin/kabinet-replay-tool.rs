//! The `kabinet-replay` tool under test, built in this package so its tests
//! find it through `CARGO_BIN_EXE_kabinet-replay-tool` (that variable names only
//! binaries of the package whose tests run).

#[tokio::main]
async fn main() -> std::process::ExitCode {
    kabinet_replay::main().await
}
