use clap::Parser;

// One thread: answers are in-memory lookups, and the cluster tool runs this next to the
// control plane, where every MiB counts.
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let opts = rkube_dns::Options::parse();
    component_base::logging::init(&opts.log_format);
    let cancel = component_base::shutdown::signal_token();
    rkube_dns::run(opts, cancel).await
}
