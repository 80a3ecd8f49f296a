use clap::Parser;

fn main() -> anyhow::Result<()> {
    let opts = rkube_kubelet::Options::parse();
    component_base::logging::init(&opts.log_format);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async {
        let cancel = component_base::shutdown::signal_token();
        rkube_kubelet::run(opts, cancel).await
    })?;
    Ok(())
}
