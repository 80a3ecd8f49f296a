use clap::Parser;

// Every controller's cache lives on the heap and churns as objects change: glibc malloc's
// per-thread arenas kept freed pages resident (RSS grew well past the live data under
// hack/bench/controllers.sh); mimalloc returns them and packs small objects tighter.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let opts = rkube_controller_manager::Options::parse();
    component_base::logging::init(&opts.log_format);
    let cancel = component_base::shutdown::signal_token();
    rkube_controller_manager::run(opts, cancel).await
}
