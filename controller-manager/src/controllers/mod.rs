//! The registry of controllers. Upstream names, so `--controllers=*,-garbagecollector` reads
//! as it does for kube-controller-manager.

pub mod discovery;
pub mod garbagecollector;
pub mod namespace;

use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

/// What every controller gets.
#[derive(Clone)]
pub struct Context {
    pub client: kube::Client,
    pub cancel: CancellationToken,
}

pub struct Descriptor {
    pub name: &'static str,
    pub enabled_by_default: bool,
    pub start: fn(Context) -> BoxFuture<'static, anyhow::Result<()>>,
}

pub static DESCRIPTORS: &[Descriptor] = &[
    Descriptor { name: "garbagecollector", enabled_by_default: true, start: |c| Box::pin(garbagecollector::run(c)) },
    Descriptor { name: "namespace", enabled_by_default: true, start: |c| Box::pin(namespace::run(c)) },
];

/// Applies `--controllers`: `*` = every default, `name` adds one, `-name` removes one.
pub fn select(flags: &[String]) -> anyhow::Result<Vec<&'static Descriptor>> {
    let star = flags.iter().any(|f| f == "*");
    let mut out = Vec::new();
    for d in DESCRIPTORS {
        let on = flags.iter().any(|f| f == d.name);
        let off = flags.iter().any(|f| f.strip_prefix('-') == Some(d.name));
        if (on || (star && d.enabled_by_default)) && !off {
            out.push(d);
        }
    }
    for f in flags {
        let name = f.trim_start_matches('-');
        if name != "*" && !DESCRIPTORS.iter().any(|d| d.name == name) {
            anyhow::bail!("--controllers: unknown controller {name:?}");
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn star_minus_one_switches_it_off() {
        let names: Vec<_> =
            select(&["*".into(), "-garbagecollector".into()]).expect("valid").iter().map(|d| d.name).collect();
        assert_eq!(names, ["namespace"]);
    }

    #[test]
    fn unknown_controller_is_an_error() {
        assert!(select(&["nope".into()]).is_err());
    }
}
