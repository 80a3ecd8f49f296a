use clap::Parser;

// The apiserver's allocator, chosen for glibc malloc's per-thread-arena fragmentation with
// several threads. Against glibc's malloc in the controllers bench (docs/benchmarks.md): within
// 0.5 MiB at 10,000 pods now that pods are cached compactly, 5-7 MiB more before that.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let opts = rkube_controller_manager::Options::parse();
    component_base::logging::init(&opts.log_format);
    let cancel = component_base::shutdown::signal_token();
    rkube_controller_manager::run(opts, cancel).await
}
