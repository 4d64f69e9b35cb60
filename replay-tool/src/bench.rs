pub async fn run(_args: &crate::cli::BenchArgs) -> anyhow::Result<()> {
    anyhow::bail!("todo")
}
