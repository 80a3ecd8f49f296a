//! The resources a controller acts on, from the apiserver's discovery: every served kind
//! that can be listed, watched and deleted, including ones this binary has no types for.

use kube::discovery::{ApiCapabilities, ApiResource, Discovery, Scope};

#[derive(Clone, Debug)]
pub struct Resource {
    pub ar: ApiResource,
    pub namespaced: bool,
}

/// Every listable, watchable, deletable resource (subresources excluded).
pub async fn deletable(client: &kube::Client) -> anyhow::Result<Vec<Resource>> {
    let discovery = Discovery::new(client.clone()).run().await?;
    let mut out = Vec::new();
    for group in discovery.groups() {
        for (ar, caps) in group.recommended_resources() {
            if wants(&caps) {
                out.push(Resource { ar, namespaced: caps.scope == Scope::Namespaced });
            }
        }
    }
    Ok(out)
}

fn wants(caps: &ApiCapabilities) -> bool {
    ["list", "watch", "delete"].iter().all(|v| caps.supports_operation(v))
}
