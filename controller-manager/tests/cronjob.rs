//! The CronJob controller (with the Job controller and a fake kubelet that finishes pods)
//! against a real apiserver: a CronJob whose last schedule time lies minutes back starts the
//! most recent missed run at once, named after its scheduled minute, records it, sees it
//! complete, and trims the finished history to `successfulJobsHistoryLimit`.

use crate::common::{Cluster, WAIT};
use component_base::testing::eventually;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::Event;
use k8s_openapi::jiff::{Timestamp, ToSpan};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

fn owned_jobs(jobs: &[Job], uid: &str) -> Vec<String> {
    let mut names: Vec<String> = jobs
        .iter()
        .filter(|j| j.metadata.owner_references.iter().flatten().any(|r| r.uid == uid && r.controller == Some(true)))
        .filter_map(|j| j.metadata.name.clone())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cronjob_starts_the_latest_missed_run_and_keeps_the_history_limit() {
    let mut cluster = Cluster::start().await;
    cluster.start_batch_nodes(1).await;
    let client = cluster.client.clone();
    let cjs: Api<CronJob> = Api::namespaced(client.clone(), "default");
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();

    let cj: CronJob = serde_json::from_value(json!({
        "metadata": {"name": "tick"},
        "spec": {"schedule": "*/1 * * * *", "successfulJobsHistoryLimit": 1,
                 "jobTemplate": {"metadata": {"labels": {"app": "tick"}},
                                 "spec": {"template": {"spec": {"restartPolicy": "Never",
                                          "containers": [{"name": "c", "image": "exit-0"}]}}}}},
    }))
    .expect("cronjob");
    let cj = cjs.create(&pp, &cj).await.expect("create");
    let uid = cj.metadata.uid.clone().expect("uid");
    // Two earlier runs that finished, as if the controller had started them.
    let now = Timestamp::now();
    for (i, age) in [(1, 30), (2, 20)] {
        let started = now.checked_sub(age.minutes()).expect("ts");
        let j: Job = serde_json::from_value(json!({
            "metadata": {"name": format!("tick-old{i}"), "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob",
                         "name": "tick", "uid": uid, "controller": true, "blockOwnerDeletion": true}]},
            "spec": {"suspend": true, "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "exit-0"}]}}},
        }))
        .expect("job");
        jobs.create(&pp, &j).await.expect("old job");
        let status = json!({"status": {"startTime": started.to_string(), "completionTime": started.to_string(),
            "succeeded": 1, "conditions": [
                {"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached"},
                {"type": "Complete", "status": "True", "reason": "CompletionsReached"}]}});
        jobs.patch_status(&format!("tick-old{i}"), &PatchParams::default(), &Patch::Merge(&status))
            .await
            .expect("status");
    }
    // The last run was scheduled three minutes ago: the runs since were missed.
    let last = now.checked_sub(3.minutes()).expect("ts");
    let status = json!({"status": {"lastScheduleTime": last.strftime("%Y-%m-%dT%H:%M:00Z").to_string()}});
    cjs.patch_status("tick", &PatchParams::default(), &Patch::Merge(&status)).await.expect("cronjob status");

    cluster.start_controller_manager(&["--controllers=cronjob,job"]);
    let all = ListParams::default();
    // The latest due minute: now's minute, unless a minute boundary passes meanwhile.
    eventually("the missed run starts, completes, and the history is trimmed", WAIT, || async {
        let list = jobs.list(&all).await.expect("jobs").items;
        let names = owned_jobs(&list, &uid);
        let done = list.iter().any(|j| {
            j.metadata.name.as_deref() == names.first().map(String::as_str)
                && j.status.as_ref().and_then(|s| s.completion_time.as_ref()).is_some()
        });
        names.len() == 1 && !names[0].starts_with("tick-old") && done
    })
    .await;
    let list = jobs.list(&all).await.expect("jobs").items;
    let name = owned_jobs(&list, &uid).remove(0);
    let minute: i64 = name.trim_start_matches("tick-").parse().expect("minutes since the epoch");
    assert!(minute * 60 <= Timestamp::now().as_second() && minute * 60 > last.as_second(), "{name}");
    let job = jobs.get(&name).await.expect("job");
    let ann = job.metadata.annotations.clone().unwrap_or_default();
    let scheduled = Timestamp::from_second(minute * 60).expect("ts");
    assert_eq!(
        ann.get("batch.kubernetes.io/cronjob-scheduled-timestamp").map(String::as_str),
        Some(scheduled.strftime("%Y-%m-%dT%H:%M:%SZ").to_string().as_str())
    );
    assert_eq!(job.metadata.labels.unwrap_or_default().get("app").map(String::as_str), Some("tick"));

    eventually("status records the run", WAIT, || async {
        let st = cjs.get("tick").await.expect("cj").status.unwrap_or_default();
        st.active.is_none_or(|a| a.is_empty())
            && st.last_schedule_time.as_ref().map(|t| t.0.as_second()) >= Some(minute * 60)
            && st.last_successful_time.is_some()
    })
    .await;
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    eventually("events as upstream", WAIT, || async {
        let evs = events.list(&all).await.expect("events").items;
        let r: Vec<String> = evs
            .into_iter()
            .filter(|e| e.involved_object.kind.as_deref() == Some("CronJob"))
            .filter_map(|e| e.reason)
            .collect();
        ["SuccessfulCreate", "SawCompletedJob", "SuccessfulDelete"].iter().all(|w| r.iter().any(|x| x == w))
    })
    .await;
    cluster.stop().await;
}

/// `kubectl create cronjob`, `create job --from=cronjob/…`, `get jobs`, `get cronjobs` with
/// kubectl 1.27, 1.30 and 1.33.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_creates_cronjobs_and_jobs_from_them() {
    let mut cluster = Cluster::start().await;
    cluster.start_batch_nodes(1).await;
    cluster.start_controller_manager(&["--controllers=cronjob,job"]);
    let jobs: Api<Job> = Api::namespaced(cluster.client.clone(), "default");
    let dir = cluster.server.cert_dir.path().to_path_buf();
    for minor in [27u32, 30, 33] {
        let (cj, job) = (format!("nightly{minor}"), format!("manual{minor}"));
        let d = dir.clone();
        let (c, j) = (cj.clone(), job.clone());
        tokio::task::spawn_blocking(move || {
            let k = component_base::testing::Kubectl::new(minor, &d);
            k.ok(&["create", "cronjob", &c, "--image=exit-0", "--schedule=0 3 * * *", "--restart=Never"]);
            k.ok(&["create", "job", &j, &format!("--from=cronjob/{c}")]);
        })
        .await
        .expect("kubectl");
        eventually(&format!("kubectl 1.{minor}: {job} completes"), WAIT, || async {
            jobs.get(&job).await.ok().and_then(|j| j.status).and_then(|s| s.succeeded) == Some(1)
        })
        .await;
        let j = jobs.get(&job).await.expect("job");
        let ann = j.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(ann.get("cronjob.kubernetes.io/instantiate").map(String::as_str), Some("manual"));
        let d = dir.clone();
        let (c, jn) = (cj.clone(), job.clone());
        tokio::task::spawn_blocking(move || {
            let k = component_base::testing::Kubectl::new(minor, &d);
            let table = k.ok(&["get", "jobs"]);
            let row = table.lines().find(|l| l.starts_with(&format!("{jn} "))).unwrap_or_default().to_string();
            assert!(row.contains("1/1"), "kubectl 1.{minor} get jobs:\n{table}");
            let table = k.ok(&["get", "cronjobs"]);
            let row = table.lines().find(|l| l.starts_with(&format!("{c} "))).unwrap_or_default().to_string();
            assert!(row.contains("0 3 * * *") && row.contains("False"), "kubectl 1.{minor} get cronjobs:\n{table}");
        })
        .await
        .expect("kubectl");
    }
    cluster.stop().await;
}
