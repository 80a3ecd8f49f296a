use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let opts = rkube_scheduler::Options::parse();
    component_base::logging::init(&opts.log_format);
    let cancel = component_base::shutdown::signal_token();
    rkube_scheduler::run(opts, cancel).await
}
