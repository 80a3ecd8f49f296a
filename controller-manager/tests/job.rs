//! The Job and TTL-after-finished controllers against a real apiserver, with a fake kubelet
//! that finishes pods with the exit code their image names: completions with bounded
//! parallelism counted exactly once (tracking finalizers removed), Indexed completion, the pod
//! failure policy, the active deadline, suspend and resume, backoff between failed pods up to
//! the backoff limit, and deletion after `ttlSecondsAfterFinished`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use crate::common::{Cluster, WAIT};
use component_base::testing::eventually;
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use serde_json::json;

fn job(name: &str, image: &str, spec: serde_json::Value) -> Job {
    let mut v = json!({
        "metadata": {"name": name},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": image}]}}},
    });
    if let (Some(s), Some(extra)) = (v["spec"].as_object_mut(), spec.as_object()) {
        s.extend(extra.clone());
    }
    serde_json::from_value(v).expect("job")
}

fn condition(j: &Job, type_: &str) -> Option<(String, String)> {
    let c = j.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == type_ && c.status == "True")?;
    Some((c.reason.clone().unwrap_or_default(), c.message.clone().unwrap_or_default()))
}

async fn job_pods(client: &kube::Client, name: &str) -> Vec<Pod> {
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    api.list(&ListParams::default().labels(&format!("batch.kubernetes.io/job-name={name}"))).await.expect("pods").items
}

async fn reasons(client: &kube::Client, name: &str) -> Vec<String> {
    let api: Api<Event> = Api::namespaced(client.clone(), "default");
    let evs = api.list(&ListParams::default()).await.expect("events").items;
    evs.into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(name) && e.involved_object.kind.as_deref() == Some("Job"))
        .filter_map(|e| e.reason)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_complete_fail_and_suspend_as_upstream() {
    let mut cluster = Cluster::start().await;
    cluster.start_batch_nodes(2).await;
    let client = cluster.client.clone();
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();

    // The most pods of "para" ever active at once, and every pod uid it ever had.
    let active: Arc<Mutex<HashMap<String, bool>>> = Arc::default();
    let max_active = Arc::new(Mutex::new(0usize));
    let (a, m) = (active.clone(), max_active.clone());
    let watch = tokio::spawn(
        watcher(pods.clone(), watcher::Config::default().labels("batch.kubernetes.io/job-name=para"))
            .default_backoff()
            .applied_objects()
            .for_each(move |p| {
                if let Ok(p) = p {
                    let phase = p.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
                    let is_active =
                        phase != "Succeeded" && phase != "Failed" && p.metadata.deletion_timestamp.is_none();
                    let mut a = a.lock().expect("lock");
                    a.insert(p.metadata.uid.unwrap_or_default(), is_active);
                    let n = a.values().filter(|v| **v).count();
                    let mut m = m.lock().expect("lock");
                    *m = (*m).max(n);
                }
                futures::future::ready(())
            }),
    );

    cluster.start_controller_manager(&["--controllers=job,ttl-after-finished,garbagecollector"]);
    jobs.create(&pp, &job("para", "exit-0-after-400", json!({"completions": 5, "parallelism": 2})))
        .await
        .expect("para");
    jobs.create(
        &pp,
        &job("indexed", "exit-0", json!({"completions": 3, "parallelism": 3, "completionMode": "Indexed"})),
    )
    .await
    .expect("indexed");
    let policy = json!({"backoffLimit": 6, "podFailurePolicy": {"rules": [
        {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [42]}}]}});
    jobs.create(&pp, &job("policy", "exit-42", policy)).await.expect("policy");
    jobs.create(&pp, &job("deadline", "sleep", json!({"activeDeadlineSeconds": 2}))).await.expect("deadline");
    jobs.create(&pp, &job("paused", "exit-0", json!({"suspend": true}))).await.expect("paused");
    jobs.create(&pp, &job("ttl", "exit-0", json!({"ttlSecondsAfterFinished": 1}))).await.expect("ttl");

    // Completions with parallelism 2: complete, 5 pods in all, never more than 2 at once.
    eventually("para completes", WAIT, || async {
        condition(&jobs.get("para").await.expect("para"), "Complete").is_some()
    })
    .await;
    let para = jobs.get("para").await.expect("para");
    let st = para.status.clone().unwrap_or_default();
    assert_eq!((st.succeeded, st.failed.unwrap_or(0), st.active.unwrap_or(0)), (Some(5), 0, 0));
    assert_eq!(st.uncounted_terminated_pods.unwrap_or_default().succeeded.unwrap_or_default(), Vec::<String>::new());
    assert!(st.start_time.is_some() && st.completion_time.is_some());
    assert_eq!(
        condition(&para, "SuccessCriteriaMet"),
        Some(("CompletionsReached".into(), "Reached expected number of succeeded pods".into()))
    );
    assert_eq!(condition(&para, "Complete").map(|c| c.0).as_deref(), Some("CompletionsReached"));
    assert!(*max_active.lock().expect("lock") <= 2, "at most parallelism pods at once");
    assert_eq!(active.lock().expect("lock").len(), 5, "exactly completions pods were created");
    let ps = job_pods(&client, "para").await;
    assert_eq!(ps.len(), 5);
    for p in &ps {
        assert!(p.metadata.finalizers.clone().unwrap_or_default().is_empty(), "tracking finalizer removed");
        let l = p.metadata.labels.clone().unwrap_or_default();
        assert_eq!(l.get("job-name").map(String::as_str), Some("para"));
        assert_eq!(l.get("controller-uid"), para.metadata.uid.as_ref());
    }
    eventually("para events", WAIT, || async {
        let r = reasons(&client, "para").await;
        r.iter().filter(|r| *r == "SuccessfulCreate").count() == 5 && r.iter().any(|r| r == "Completed")
    })
    .await;
    watch.abort();

    // Indexed: each index once, and the pods know theirs.
    eventually("indexed completes", WAIT, || async {
        condition(&jobs.get("indexed").await.expect("indexed"), "Complete").is_some()
    })
    .await;
    let st = jobs.get("indexed").await.expect("indexed").status.unwrap_or_default();
    assert_eq!((st.completed_indexes.as_deref(), st.succeeded), (Some("0-2"), Some(3)));
    let mut seen = HashSet::new();
    for p in job_pods(&client, "indexed").await {
        let idx =
            p.metadata.annotations.clone().unwrap_or_default()["batch.kubernetes.io/job-completion-index"].clone();
        assert_eq!(p.metadata.labels.clone().unwrap_or_default()["batch.kubernetes.io/job-completion-index"], idx);
        let spec = p.spec.clone().expect("spec");
        assert_eq!(spec.hostname, Some(format!("indexed-{idx}")));
        assert!(spec.containers[0].env.clone().unwrap_or_default().iter().any(|e| e.name == "JOB_COMPLETION_INDEX"));
        assert!(seen.insert(idx), "one pod per index");
    }

    // A FailJob rule ends the Job at the first matching exit code.
    eventually("policy fails", WAIT, || async { condition(&jobs.get("policy").await.expect("j"), "Failed").is_some() })
        .await;
    let j = jobs.get("policy").await.expect("policy");
    let (reason, msg) = condition(&j, "Failed").expect("failed");
    assert_eq!(reason, "PodFailurePolicy");
    assert!(msg.contains("failed with exit code 42 matching FailJob rule at index 0"), "{msg}");
    assert!(condition(&j, "FailureTarget").is_some());
    assert_eq!(job_pods(&client, "policy").await.len(), 1);

    // The active deadline fails the Job and stops its pod.
    eventually("deadline fails", WAIT, || async {
        condition(&jobs.get("deadline").await.expect("j"), "Failed").is_some()
    })
    .await;
    let j = jobs.get("deadline").await.expect("deadline");
    assert_eq!(condition(&j, "Failed").map(|c| c.0).as_deref(), Some("DeadlineExceeded"));
    eventually("deadline pods gone", WAIT, || async { job_pods(&client, "deadline").await.is_empty() }).await;

    // Suspended: no pods; resumed: runs to completion.
    let j = jobs.get("paused").await.expect("paused");
    assert_eq!(condition(&j, "Suspended").map(|c| c.0).as_deref(), Some("JobSuspended"));
    assert!(job_pods(&client, "paused").await.is_empty());
    assert!(j.status.unwrap_or_default().start_time.is_none());
    jobs.patch("paused", &PatchParams::default(), &Patch::Merge(json!({"spec": {"suspend": false}})))
        .await
        .expect("resume");
    eventually("resumed completes", WAIT, || async {
        condition(&jobs.get("paused").await.expect("j"), "Complete").is_some()
    })
    .await;
    let r = reasons(&client, "paused").await;
    assert!(r.contains(&"Suspended".to_string()) && r.contains(&"Resumed".to_string()), "{r:?}");

    // ttlSecondsAfterFinished: the finished Job and its pods are deleted.
    eventually("ttl job deleted", WAIT, || async { jobs.get_opt("ttl").await.expect("get").is_none() }).await;
    eventually("ttl pods deleted", WAIT, || async { job_pods(&client, "ttl").await.is_empty() }).await;

    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_pods_are_recreated_with_backoff_until_the_backoff_limit() {
    let mut cluster = Cluster::start().await;
    cluster.start_batch_nodes(1).await;
    let client = cluster.client.clone();
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    cluster.start_controller_manager(&["--controllers=job"]);
    jobs.create(&PostParams::default(), &job("flaky", "exit-1-after-100", json!({"backoffLimit": 1})))
        .await
        .expect("job");
    eventually("flaky fails", WAIT, || async { condition(&jobs.get("flaky").await.expect("j"), "Failed").is_some() })
        .await;
    let j = jobs.get("flaky").await.expect("flaky");
    assert_eq!(
        condition(&j, "Failed"),
        Some(("BackoffLimitExceeded".into(), "Job has reached the specified backoff limit".into()))
    );
    let st = j.status.clone().unwrap_or_default();
    assert_eq!((st.failed, st.succeeded.unwrap_or(0), st.active.unwrap_or(0)), (Some(2), 0, 0));
    assert!(st.completion_time.is_none(), "only a complete Job has a completion time");
    let mut ps = job_pods(&client, "flaky").await;
    assert_eq!(ps.len(), 2, "the first pod and one retry");
    ps.sort_by_key(|p| p.metadata.creation_timestamp.clone().map(|t| t.0));
    let finished = ps[0].status.clone().and_then(|s| s.container_statuses).expect("statuses")[0]
        .state
        .clone()
        .and_then(|s| s.terminated)
        .and_then(|t| t.finished_at)
        .expect("finished")
        .0;
    let retried = ps[1].metadata.creation_timestamp.clone().expect("created").0;
    let gap = retried.duration_since(finished);
    assert!(gap >= k8s_openapi::jiff::SignedDuration::from_secs(9), "10 s backoff before the retry, got {gap:?}");
    assert!(gap < k8s_openapi::jiff::SignedDuration::from_secs(20), "but not much more, got {gap:?}");
    assert!(ps.iter().all(|p| p.metadata.finalizers.clone().unwrap_or_default().is_empty()));
    eventually("failure event", WAIT, || async {
        reasons(&client, "flaky").await.iter().any(|r| r == "BackoffLimitExceeded")
    })
    .await;
    cluster.stop().await;
}
