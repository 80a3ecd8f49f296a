use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let opts = rkube_apiserver::Options::parse();
    component_base::logging::init(&opts.log_format);
    let cancel = component_base::shutdown::signal_token();
    let running = rkube_apiserver::start(opts, cancel).await?;
    running.wait().await;
    Ok(())
}
