//! The `kabinet` server under test, as a separate process (multi-process and
//! crash tests run it with `serve`).

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match kabinet_graphql::cli::main().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kabinet: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
