use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let opts = rkube::Options::parse();
    // the tool talks to people through its progress lines; components' info logs are noise here
    if std::env::var_os("RUST_LOG").is_none() {
        std::env::set_var("RUST_LOG", "warn");
    }
    component_base::logging::init(&opts.log_format);
    let cancel = component_base::shutdown::signal_token();
    rkube::run(opts, cancel).await
}
