use clap::Parser;

fn main() -> anyhow::Result<()> {
    let opts = rkube_proxy::Options::parse();
    component_base::logging::init(&opts.log_format);
    rkube_proxy::run(opts)
}
