//! The markdown table the benchmark prints: one row per measurement, the apiserver next to
//! etcd where there is an etcd equivalent, the target and whether it was met.

use std::fmt::Write;

use crate::cpu::{PerOp, Usage};
use crate::list::ListResult;
use crate::load::Throughput;
use crate::rss::Rss;
use crate::stats::{mib, ms, Summary};
use crate::watch::Fanout;
use crate::Options;

/// Idle RSS the apiserver should stay under.
const IDLE_RSS_TARGET: u64 = 40 << 20;
/// Creates through the apiserver as a share of raw etcd puts.
const CREATE_RATIO_TARGET: f64 = 0.60;
/// Write to last watcher, p99.
const WATCH_P99_TARGET_MS: f64 = 100.0;

pub struct Report<'a> {
    pub opts: &'a Options,
    pub idle: Rss,
    pub after: Rss,
    pub puts: Throughput,
    pub txns: Throughput,
    pub creates: Throughput,
    pub pods: Throughput,
    pub lists: ListResult,
    pub etcd_watch: Summary,
    pub fanout: Fanout,
    pub gets: Throughput,
    pub usage: Vec<Usage>,
    /// CPU per operation in the write phases, named by operation.
    pub per_op: Vec<(&'static str, PerOp)>,
    pub cores: usize,
}

fn met(ok: bool) -> &'static str {
    if ok {
        "yes"
    } else {
        "**no**"
    }
}

/// 12345.6 -> "12,346".
fn count(v: f64) -> String {
    let s = format!("{:.0}", v.max(0.0));
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn throughput(t: &Throughput, unit: &str) -> String {
    format!(
        "{} {unit}/s ({} in {:.1} s; p50 {}, p99 {})",
        count(t.per_second()),
        count(t.ops as f64),
        t.elapsed.as_secs_f64(),
        ms(t.latency.p50),
        ms(t.latency.p99)
    )
}

impl Report<'_> {
    pub fn render(&self) -> String {
        let o = self.opts;
        let mut rows: Vec<[String; 5]> = Vec::new();

        let ratio = if self.puts.per_second() > 0.0 { self.creates.per_second() / self.puts.per_second() } else { 0.0 };
        rows.push([
            format!(
                "create 1 KiB ConfigMaps, {} concurrent clients, {} s or {} ops",
                o.create_clients,
                o.create_seconds,
                count(o.create_max as f64)
            ),
            throughput(&self.creates, "creates"),
            throughput(&self.puts, "puts"),
            format!("≥ {:.0} % of etcd", CREATE_RATIO_TARGET * 100.0),
            format!("{} ({:.0} %)", met(ratio >= CREATE_RATIO_TARGET), ratio * 100.0),
        ]);

        rows.push([
            "for reference: etcd doing what a create asks of it (create-if-absent txn, one prefix watch)".into(),
            "—".into(),
            throughput(&self.txns, "txns"),
            "—".into(),
            format!(
                "creates are {:.0} % of this",
                100.0 * self.creates.per_second() / self.txns.per_second().max(1e-9)
            ),
        ]);

        let l = &self.lists;
        let faster = l.api.p50 < l.etcd.p50;
        rows.push([
            format!(
                "list {} pods: `GET /api/v1/pods?resourceVersion=0` (watch cache) vs etcd range, p50 of {}",
                count(l.items as f64),
                l.api.n
            ),
            format!("{} (p99 {}; {} JSON)", ms(l.api.p50), ms(l.api.p99), mib(l.api_bytes as u64)),
            format!("{} (p99 {}; {} stored)", ms(l.etcd.p50), ms(l.etcd.p99), mib(l.etcd_bytes as u64)),
            "cached list faster than the etcd range".into(),
            format!(
                "{} ({:.2}× the etcd time)",
                met(faster),
                l.api.p50.as_secs_f64() / l.etcd.p50.as_secs_f64().max(1e-9)
            ),
        ]);

        let f = &self.fanout;
        let p99_ok = f.last.n == f.writes && f.last.p99.as_secs_f64() * 1000.0 < WATCH_P99_TARGET_MS;
        rows.push([
            format!(
                "watch latency, write → **last** of {} watchers, {} writes every {} ms",
                count(f.watchers as f64),
                f.writes,
                o.watch_interval_ms
            ),
            format!("p50 {}, p99 {}, max {}", ms(f.last.p50), ms(f.last.p99), ms(f.last.max)),
            format!(
                "p50 {}, p99 {}, max {} (one etcd watch)",
                ms(self.etcd_watch.p50),
                ms(self.etcd_watch.p99),
                ms(self.etcd_watch.max)
            ),
            format!("p99 < {WATCH_P99_TARGET_MS:.0} ms"),
            met(p99_ok).into(),
        ]);
        rows.push([
            "watch latency, write → **first** watcher".into(),
            format!("p50 {}, p99 {}", ms(f.first.p50), ms(f.first.p99)),
            "—".into(),
            "—".into(),
            "—".into(),
        ]);

        rows.push([
            format!("GET one ConfigMap, {} keep-alive connections, {} s", o.get_connections, o.get_seconds),
            throughput(&self.gets, "req"),
            "—".into(),
            "—".into(),
            "—".into(),
        ]);
        rows.push([
            format!(
                "create {} pods, {} concurrent clients (setup for the list)",
                count(o.pods as f64),
                o.create_clients
            ),
            throughput(&self.pods, "creates"),
            "—".into(),
            "—".into(),
            "—".into(),
        ]);
        rows.push([
            "apiserver RSS, idle after start".into(),
            mib(self.idle.current),
            "—".into(),
            format!("< {}", mib(IDLE_RSS_TARGET)),
            met(self.idle.current < IDLE_RSS_TARGET).into(),
        ]);
        rows.push([
            "apiserver RSS after the load (peak during it)".into(),
            format!("{} (peak {})", mib(self.after.current), mib(self.after.peak)),
            "—".into(),
            "—".into(),
            "—".into(),
        ]);

        let mut out = String::new();
        out.push_str("| measurement | rkube-apiserver | etcd directly | target | met |\n");
        out.push_str("|---|---|---|---|---|\n");
        for r in &rows {
            let _ = writeln!(out, "| {} |", r.join(" | "));
        }

        let mut notes = Vec::new();
        for (what, t) in [
            ("creates", &self.creates),
            ("puts", &self.puts),
            ("etcd txns", &self.txns),
            ("pod creates", &self.pods),
            ("GETs", &self.gets),
        ] {
            if t.errors > 0 {
                notes.push(format!(
                    "{} {what} failed (first: {})",
                    t.errors,
                    t.first_error.as_deref().unwrap_or("unknown")
                ));
            }
        }
        if f.missing > 0 {
            notes.push(format!(
                "{} of {} watch events never arrived; latency covers the {} writes every watcher saw",
                f.missing,
                f.watchers * f.writes,
                f.last.n
            ));
        }
        notes.push(format!(
            "opening the {} watch streams took {:.1} s",
            count(f.watchers as f64),
            f.connect.as_secs_f64()
        ));
        out.push('\n');
        for n in notes {
            let _ = writeln!(out, "- {n}");
        }

        let _ = writeln!(
            out,
            "\nWhere the CPU went, in cores busy on average over each phase ({} cores in all):\n",
            self.cores
        );
        out.push_str("| phase | wall | whole machine | rkube-apiserver | etcd | load generator | other processes |\n");
        out.push_str("|---|---|---|---|---|---|---|\n");
        for u in &self.usage {
            let _ = writeln!(
                out,
                "| {} | {:.1} s | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
                u.phase,
                u.wall.as_secs_f64(),
                u.machine,
                u.apiserver,
                u.etcd,
                u.loadgen,
                u.other()
            );
        }
        out.push_str("\nCPU time per operation in the write phases (what a request costs, steadier than a rate):\n\n");
        out.push_str("| operation | rkube-apiserver | etcd | load generator |\n");
        out.push_str("|---|---|---|---|\n");
        for (what, p) in &self.per_op {
            let _ =
                writeln!(out, "| {what} | {:.0} µs | {:.0} µs | {:.0} µs |", p.apiserver_us, p.etcd_us, p.loadgen_us);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::count;

    #[test]
    fn counts_have_thousands_separators() {
        assert_eq!(count(0.0), "0");
        assert_eq!(count(999.4), "999");
        assert_eq!(count(1234.0), "1,234");
        assert_eq!(count(1_234_567.0), "1,234,567");
    }
}
