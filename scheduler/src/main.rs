use clap::Parser;

fn main() -> anyhow::Result<()> {
    let opts = rkube_scheduler::Options::parse();
    component_base::logging::init(&opts.log_format);
    rkube_scheduler::run(opts)
}
