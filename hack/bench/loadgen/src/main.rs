use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let opts = rkube_bench::Options::parse();
    let table = rkube_bench::run(opts).await?;
    print!("{table}");
    Ok(())
}
