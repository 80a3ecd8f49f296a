use clap::Parser;

// glibc malloc was a fifth of the CPU a create costs (profiled under hack/bench/apiserver.sh);
// mimalloc's per-thread free lists make those allocations cheap.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let opts = rkube_apiserver::Options::parse();
    component_base::logging::init(&opts.log_format);
    let cancel = component_base::shutdown::signal_token();
    let running = rkube_apiserver::start(opts, cancel).await?;
    running.wait().await;
    Ok(())
}
