use clap::Parser;

#[tokio::main]
async fn main() {
    let opts = rkube::Options::parse();
    // the tool talks to people through its progress lines; components' info logs are noise here
    if std::env::var_os("RUST_LOG").is_none() {
        std::env::set_var("RUST_LOG", "warn");
    }
    component_base::logging::init(&opts.log_format);
    let cancel = component_base::shutdown::signal_token();
    if let Err(e) = rkube::run(opts, cancel).await {
        // a message for people, not a backtrace
        eprintln!("Error: {e:#}");
        std::process::exit(1);
    }
}
