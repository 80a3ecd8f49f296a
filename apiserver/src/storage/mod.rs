//! Storage on etcd: the raw key-value store (`etcd`) and the per-resource watch cache
//! (`cache`). Objects are stored as JSON without `metadata.resourceVersion`; on the way out the
//! resourceVersion is the key's etcd modification revision.

pub mod cache;
pub mod etcd;

pub use cache::{Cacher, EventType, WatchEvent};
pub use etcd::{etcd_latency, Etcd, EtcdLatency, KeyValue, ListPage};

#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    #[error("key not found")]
    NotFound,
    #[error("key already exists")]
    AlreadyExists,
    #[error("revision mismatch")]
    Conflict,
    #[error("required revision {requested} has been compacted (oldest available {compacted})")]
    Compacted { requested: i64, compacted: i64 },
    #[error("required revision {0} is a future revision")]
    FutureRevision(i64),
    #[error("etcd: {0}")]
    Unavailable(String),
    #[error("stored object is not valid JSON: {0}")]
    Corrupt(String),
}

impl From<etcd_client::Error> for StorageError {
    fn from(e: etcd_client::Error) -> Self {
        let s = e.to_string();
        if s.contains("required revision has been compacted") {
            StorageError::Compacted { requested: 0, compacted: 0 }
        } else if s.contains("required revision is a future revision") {
            StorageError::FutureRevision(0)
        } else {
            StorageError::Unavailable(s)
        }
    }
}

/// Sets `metadata.resourceVersion` to `rev`.
pub fn set_resource_version(obj: &mut serde_json::Value, rev: i64) {
    if let Some(meta) = obj.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        meta.insert("resourceVersion".into(), serde_json::Value::String(rev.to_string()));
    }
}
