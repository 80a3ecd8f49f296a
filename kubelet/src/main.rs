use clap::Parser;

fn main() -> anyhow::Result<()> {
    let opts = rkube_kubelet::Options::parse();
    component_base::logging::init(&opts.log_format);
    rkube_kubelet::run(opts)
}
