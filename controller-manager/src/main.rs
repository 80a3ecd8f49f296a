use clap::Parser;

// The apiserver's allocator, chosen for glibc malloc's per-thread-arena fragmentation with
// several threads. Not yet measured against glibc on its own: the controllers bench moved
// within run-to-run noise with this and the garbage collector change together (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let opts = rkube_controller_manager::Options::parse();
    component_base::logging::init(&opts.log_format);
    let cancel = component_base::shutdown::signal_token();
    rkube_controller_manager::run(opts, cancel).await
}
