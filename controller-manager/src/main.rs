use clap::Parser;

fn main() -> anyhow::Result<()> {
    let opts = rkube_controller_manager::Options::parse();
    component_base::logging::init(&opts.log_format);
    rkube_controller_manager::run(opts)
}
