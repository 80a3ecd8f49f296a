use clap::Parser;

fn main() -> anyhow::Result<()> {
    let opts = rkube::Options::parse();
    component_base::logging::init(&opts.log_format);
    rkube::run(opts)
}
