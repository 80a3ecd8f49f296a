//! The watch cache: one etcd watch per resource feeds an in-memory copy of every object and a
//! window of recent events. Lists at `resourceVersion=0` and watches are served from here, so
//! N watchers cost one etcd watch. A watch older than the window is served by a watch of its
//! own on etcd (which answers 410 once etcd has compacted that revision).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use super::{set_resource_version, Etcd, KeyValue, StorageError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// A cached object: its JSON value, and its serialized form, made once on first use, so a
/// list or a watch event of an unchanged object costs a copy, not a serialization.
///
/// Objects off the etcd watch keep the stored bytes and are parsed on first use: most writes
/// (a create nobody lists or watches yet) then cost the cache no parse at all.
#[derive(Debug)]
pub struct Obj {
    value: OnceLock<Value>,
    /// The stored JSON and its revision, until `value` is parsed from them.
    stored: Mutex<Option<(bytes::Bytes, i64)>>,
    json: OnceLock<bytes::Bytes>,
}

impl Obj {
    pub fn new(value: Value) -> Self {
        Self { value: OnceLock::from(value), stored: Mutex::new(None), json: OnceLock::new() }
    }
    /// An object as etcd stores it, carrying `rev` as its resourceVersion once parsed. The
    /// bytes are checked to be JSON now, so that what cannot be decoded is refused here as
    /// [`decode`] would refuse it.
    pub fn stored(value: &[u8], rev: i64) -> Result<Self, StorageError> {
        check_json(value)?;
        Ok(Self {
            value: OnceLock::new(),
            stored: Mutex::new(Some((bytes::Bytes::copy_from_slice(value), rev))),
            json: OnceLock::new(),
        })
    }
    pub fn value(&self) -> &Value {
        self.value.get_or_init(|| {
            let stored = match self.stored.lock() {
                Ok(mut s) => s.take(),
                Err(poisoned) => poisoned.into_inner().take(),
            };
            // `stored` is taken only here, and this runs once; it is None only for `Obj::new`,
            // whose value is set already.
            let Some((raw, rev)) = stored else { return Value::Null };
            decode(&raw, rev).unwrap_or_else(|e| {
                // Only JSON nested deeper than the parser's limit passes `check_json` and fails here.
                tracing::error!(error = %e, "cached object does not decode");
                Value::Null
            })
        })
    }
    /// The object as JSON bytes.
    pub fn json(&self) -> &bytes::Bytes {
        self.json
            .get_or_init(|| bytes::Bytes::from(serde_json::to_vec(self.value()).expect("a Value always serializes")))
    }
}

impl std::ops::Deref for Obj {
    type Target = Value;
    fn deref(&self) -> &Value {
        self.value()
    }
}

#[derive(Debug)]
pub struct WatchEvent {
    pub kind: EventType,
    pub key: String,
    /// The object after the change (for DELETED: the last state), resourceVersion = `rev`.
    pub object: Arc<Obj>,
    /// The object before the change, if it existed.
    pub prev: Option<Arc<Obj>>,
    pub rev: i64,
}

#[derive(Debug, Clone)]
pub enum CacheMsg {
    Event(Arc<WatchEvent>),
    /// The cache re-listed (etcd watch lost); watchers must end so clients re-list.
    Reset,
}

#[derive(Debug)]
pub enum WatchFromError {
    /// The requested revision is older than the window; carries the oldest revision served.
    TooOld(i64),
    NotReady,
}

pub struct CacheWatch {
    /// Events to send first, in order.
    pub initial: Vec<Arc<WatchEvent>>,
    pub rx: broadcast::Receiver<CacheMsg>,
    /// The revision the initial events bring the watcher to.
    pub rev: i64,
}

struct State {
    objects: BTreeMap<String, Arc<Obj>>,
    events: VecDeque<Arc<WatchEvent>>,
    /// Events cover revisions in `(oldest, rev]`.
    oldest: i64,
    rev: i64,
    ready: bool,
}

pub struct Cacher {
    etcd: Etcd,
    prefix: String,
    state: RwLock<State>,
    tx: broadcast::Sender<CacheMsg>,
    rev_tx: watch::Sender<i64>,
    capacity: usize,
}

/// Parses a stored value into an object carrying `rev` as its resourceVersion.
pub fn decode(value: &[u8], rev: i64) -> Result<Value, StorageError> {
    let mut obj: Value = serde_json::from_slice(value).map_err(|e| StorageError::Corrupt(e.to_string()))?;
    set_resource_version(&mut obj, rev);
    Ok(obj)
}

/// Whether `value` is JSON [`decode`] accepts, without building it: UTF-8 (which skipping a
/// string does not check) and well-formed.
fn check_json(value: &[u8]) -> Result<(), StorageError> {
    std::str::from_utf8(value).map_err(|e| StorageError::Corrupt(e.to_string()))?;
    serde_json::from_slice::<serde::de::IgnoredAny>(value).map_err(|e| StorageError::Corrupt(e.to_string()))?;
    Ok(())
}

/// Turns one etcd watch event into ours. `known_prev` is the previous object when the caller
/// tracks it (the cache); otherwise etcd's prev_kv is used.
pub fn convert_event(
    etcd: &Etcd,
    ev: &etcd_client::Event,
    known_prev: Option<Arc<Obj>>,
) -> Option<Result<WatchEvent, StorageError>> {
    let key = etcd.key_name(ev.kv()?.key());
    convert(key, ev, known_prev)
}

/// [`convert_event`] for a key already stripped of the prefix.
fn convert(
    key: String,
    ev: &etcd_client::Event,
    known_prev: Option<Arc<Obj>>,
) -> Option<Result<WatchEvent, StorageError>> {
    let kv = ev.kv()?;
    let rev = kv.mod_revision();
    let prev = match known_prev {
        Some(p) => Some(p),
        None => match ev.prev_kv() {
            Some(p) => match Obj::stored(p.value(), p.mod_revision()) {
                Ok(o) => Some(Arc::new(o)),
                Err(e) => return Some(Err(e)),
            },
            None => None,
        },
    };
    match ev.event_type() {
        etcd_client::EventType::Put => {
            let obj = match Obj::stored(kv.value(), rev) {
                Ok(o) => o,
                Err(e) => return Some(Err(e)),
            };
            let kind = if kv.create_revision() == kv.mod_revision() || prev.is_none() {
                EventType::Added
            } else {
                EventType::Modified
            };
            Some(Ok(WatchEvent { kind, key, object: Arc::new(obj), prev, rev }))
        }
        etcd_client::EventType::Delete => {
            let mut last = prev.as_deref().map(|o| o.value().clone()).unwrap_or(Value::Null);
            if last.is_null() {
                // Nothing to report without the last state; etcd always sends prev_kv with
                // with_prev_key unless it was compacted away.
                return None;
            }
            set_resource_version(&mut last, rev);
            Some(Ok(WatchEvent { kind: EventType::Deleted, key, object: Arc::new(Obj::new(last)), prev, rev }))
        }
    }
}

impl Cacher {
    pub fn new(etcd: Etcd, prefix: String, capacity: usize) -> Arc<Self> {
        let (tx, _) = broadcast::channel(4096);
        let (rev_tx, _) = watch::channel(0);
        Arc::new(Self {
            etcd,
            prefix,
            state: RwLock::new(State {
                objects: BTreeMap::new(),
                events: VecDeque::new(),
                oldest: 0,
                rev: 0,
                ready: false,
            }),
            tx,
            rev_tx,
            capacity,
        })
    }

    pub fn is_ready(&self) -> bool {
        self.state.read().map(|s| s.ready).unwrap_or(false)
    }

    pub fn revision(&self) -> i64 {
        self.state.read().map(|s| s.rev).unwrap_or(0)
    }

    /// Keeps the cache in step with etcd until cancelled; re-lists after any watch failure.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        loop {
            let result = tokio::select! {
                _ = cancel.cancelled() => return,
                r = self.list_and_watch(&cancel) => r,
            };
            if let Err(e) = result {
                tracing::warn!(prefix = %self.prefix, error = %e, "watch cache lost its etcd watch; re-listing");
            }
            if let Ok(mut s) = self.state.write() {
                s.ready = false;
                let _ = self.tx.send(CacheMsg::Reset);
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }

    async fn list_and_watch(&self, cancel: &CancellationToken) -> Result<(), StorageError> {
        let mut objects = BTreeMap::new();
        let mut rev = 0;
        let mut start_after: Option<String> = None;
        loop {
            let page = self.etcd.list(&self.prefix, rev, start_after.as_deref(), 5000).await?;
            rev = page.revision;
            for kv in &page.items {
                match decode(&kv.value, kv.mod_revision) {
                    Ok(obj) => {
                        objects.insert(kv.key.clone(), Arc::new(Obj::new(obj)));
                    }
                    Err(e) => tracing::error!(key = %kv.key, error = %e, "skipping undecodable object"),
                }
            }
            match (page.more, page.items.last()) {
                (true, Some(KeyValue { key, .. })) => start_after = Some(key.clone()),
                _ => break,
            }
        }
        {
            let mut s = self.state.write().map_err(|_| StorageError::Unavailable("cache lock poisoned".into()))?;
            s.objects = objects;
            s.events.clear();
            s.oldest = rev;
            s.rev = rev;
            s.ready = true;
        }
        self.rev_tx.send_replace(rev);
        let mut stream = self.etcd.watch(&self.prefix, rev + 1, false).await?;
        loop {
            let msg = tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                m = stream.message() => m?,
            };
            let Some(resp) = msg else {
                return Err(StorageError::Unavailable("etcd closed the watch".into()));
            };
            if resp.canceled() {
                return Err(StorageError::Unavailable(format!(
                    "etcd cancelled the watch (compact revision {})",
                    resp.compact_revision()
                )));
            }
            self.apply(resp.events());
        }
    }

    fn apply(&self, events: &[etcd_client::Event]) {
        let Ok(mut s) = self.state.write() else { return };
        for ev in events {
            let key = match ev.kv() {
                Some(kv) => self.etcd.key_name(kv.key()),
                None => continue,
            };
            let prev = s.objects.get(&key).cloned();
            let converted = match convert(key.clone(), ev, prev) {
                Some(Ok(c)) => c,
                Some(Err(e)) => {
                    tracing::error!(key = %key, error = %e, "skipping undecodable event");
                    continue;
                }
                None => continue,
            };
            let event = Arc::new(converted);
            match event.kind {
                EventType::Deleted => {
                    s.objects.remove(&event.key);
                }
                _ => {
                    s.objects.insert(event.key.clone(), event.object.clone());
                }
            }
            s.rev = s.rev.max(event.rev);
            s.events.push_back(event.clone());
            while s.events.len() > self.capacity {
                if let Some(old) = s.events.pop_front() {
                    s.oldest = old.rev;
                }
            }
            let _ = self.tx.send(CacheMsg::Event(event));
        }
        // Progress notifications (no events) never move the revision: etcd 3.4 can send one
        // ahead of events it has not delivered yet, and a watcher resuming from it would miss them.
        let rev = s.rev;
        drop(s);
        self.rev_tx.send_replace(rev);
    }

    /// Every object whose key starts with `key_prefix`, and the revision they are at.
    pub fn list(&self, key_prefix: &str) -> Result<(Vec<Arc<Obj>>, i64), WatchFromError> {
        let s = self.state.read().map_err(|_| WatchFromError::NotReady)?;
        if !s.ready {
            return Err(WatchFromError::NotReady);
        }
        let items = s
            .objects
            .range(key_prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(key_prefix))
            .map(|(_, v)| v.clone())
            .collect();
        Ok((items, s.rev))
    }

    /// One object from the cache.
    pub fn get(&self, key: &str) -> Option<Arc<Obj>> {
        self.state.read().ok().and_then(|s| s.objects.get(key).cloned())
    }

    /// Waits until the cache has seen `rev`; false on timeout.
    pub async fn wait_for(&self, rev: i64, timeout: Duration) -> bool {
        let mut rx = self.rev_tx.subscribe();
        let reached = tokio::time::timeout(timeout, async { rx.wait_for(|r| *r >= rev).await.is_ok() }).await;
        matches!(reached, Ok(true))
    }

    /// Starts a watch. `from: None` sends the current state as ADDED events first; `Some(rv)`
    /// sends every change after `rv`.
    pub fn watch(&self, key_prefix: &str, from: Option<i64>) -> Result<CacheWatch, WatchFromError> {
        let s = self.state.read().map_err(|_| WatchFromError::NotReady)?;
        if !s.ready {
            return Err(WatchFromError::NotReady);
        }
        let rx = self.tx.subscribe();
        let initial = match from {
            None => s
                .objects
                .range(key_prefix.to_string()..)
                .take_while(|(k, _)| k.starts_with(key_prefix))
                .map(|(k, v)| {
                    Arc::new(WatchEvent {
                        kind: EventType::Added,
                        key: k.clone(),
                        object: v.clone(),
                        prev: None,
                        rev: s.rev,
                    })
                })
                .collect(),
            Some(rv) => {
                if rv < s.oldest {
                    return Err(WatchFromError::TooOld(s.oldest));
                }
                s.events.iter().filter(|e| e.rev > rv && e.key.starts_with(key_prefix)).cloned().collect()
            }
        };
        Ok(CacheWatch { initial, rx, rev: s.rev })
    }

    /// After a lagged receiver: the events after `rv` and a fresh receiver, if still in the window.
    pub fn catch_up(&self, key_prefix: &str, rv: i64) -> Result<CacheWatch, WatchFromError> {
        self.watch(key_prefix, Some(rv))
    }

    pub fn etcd(&self) -> &Etcd {
        &self.etcd
    }
}
