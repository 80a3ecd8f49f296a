use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let opts = rkube_controller_manager::Options::parse();
    component_base::logging::init(&opts.log_format);
    let cancel = component_base::shutdown::signal_token();
    rkube_controller_manager::run(opts, cancel).await
}
