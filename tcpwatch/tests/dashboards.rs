//! The Grafana dashboards in `deploy/grafana/`: their structure (title, uid, panels with
//! targets, template variables) and, as root, every panel query run through a real Prometheus
//! (Debian's `prometheus`) that scrapes a real daemon: each must parse, and the core panels
//! must return data, so a renamed metric or a broken expression fails here.
#![allow(
    clippy::unwrap_used,
    reason = "integration test: a failed step is the test's failure (covers helpers outside #[test] fns)"
)]

mod support;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use support::prometheus::{self, Prometheus};
use support::{Daemon, Netns, connect, listener, privileged, wait_for};

const DASHBOARDS: [&str; 3] = [
    "fleet-overview.json",
    "node-drilldown.json",
    "self-health.json",
];

/// Panels that may legitimately return nothing on a quiet test host: (uid, panel title).
/// (The incident tables are not here: the test makes an incident for them.)
const MAY_BE_EMPTY: [(&str, &str); 4] = [
    ("tcpwatch-fleet", "Worst flagged connections"),
    ("tcpwatch-node", "Flagged connections"),
    // Needs upstream incidents naming one remote (an unreachable peer): none in this test.
    (
        "tcpwatch-fleet",
        "Cluster-wide upstream failures (nodes failing per remote)",
    ),
    // cAdvisor's metric, only present in a cluster.
    ("tcpwatch-self", "Container memory and CPU (cAdvisor)"),
];

fn grafana_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana")
}

fn load(name: &str) -> Value {
    let path = grafana_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// One panel query: (dashboard uid, panel title, expression).
struct Query {
    uid: String,
    panel: String,
    expr: String,
}

/// Checks the dashboard's structure and returns its panel queries and template-variable
/// queries (the selector inside `label_values(...)`).
#[allow(clippy::too_many_lines, reason = "one linear list of schema checks")]
fn check_and_extract(name: &str, d: &Value) -> (Vec<Query>, Vec<String>) {
    let uid = d["uid"]
        .as_str()
        .unwrap_or_else(|| panic!("{name}: no uid"))
        .to_owned();
    assert!(
        d["title"].as_str().is_some_and(|t| !t.is_empty()),
        "{name}: no title"
    );
    assert!(
        d["schemaVersion"].as_u64().is_some(),
        "{name}: no schemaVersion"
    );
    let vars = d["templating"]["list"]
        .as_array()
        .unwrap_or_else(|| panic!("{name}: no templating.list"));
    let names: BTreeSet<&str> = vars.iter().filter_map(|v| v["name"].as_str()).collect();
    let ds = vars
        .iter()
        .find(|v| v["name"] == "datasource")
        .unwrap_or_else(|| panic!("{name}: no datasource variable"));
    assert_eq!(ds["type"], "datasource", "{name}");
    assert_eq!(ds["query"], "prometheus", "{name}");
    for want in ["namespace", "node"] {
        assert!(names.contains(want), "{name}: no `{want}` variable");
    }
    let mut var_queries = Vec::new();
    for v in vars.iter().filter(|v| v["type"] == "query") {
        assert_eq!(
            v["datasource"]["uid"], "${datasource}",
            "{name}: variable {}",
            v["name"]
        );
        let q = v["query"]["query"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: variable {} has no query", v["name"]));
        let inner = q
            .strip_prefix("label_values(")
            .and_then(|r| r.rsplit_once(','))
            .map_or_else(
                || panic!("{name}: variable query {q} is not label_values(selector, label)"),
                |(sel, _)| sel.trim().to_owned(),
            );
        var_queries.push(inner);
    }

    let panels = d["panels"]
        .as_array()
        .unwrap_or_else(|| panic!("{name}: no panels"));
    assert!(!panels.is_empty(), "{name}: no panels");
    let mut ids = BTreeSet::new();
    let mut queries = Vec::new();
    for p in panels {
        let title = p["title"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: panel without title"))
            .to_owned();
        assert!(p["type"].as_str().is_some(), "{name}/{title}: no type");
        assert!(
            ids.insert(
                p["id"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("{name}/{title}: no id"))
            ),
            "{name}/{title}: duplicate id"
        );
        for k in ["x", "y", "w", "h"] {
            assert!(
                p["gridPos"][k].as_u64().is_some(),
                "{name}/{title}: gridPos.{k}"
            );
        }
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{name}/{title}");
        let targets = p["targets"]
            .as_array()
            .unwrap_or_else(|| panic!("{name}/{title}: no targets"));
        assert!(!targets.is_empty(), "{name}/{title}: no targets");
        for t in targets {
            assert!(
                t["refId"].as_str().is_some(),
                "{name}/{title}: target without refId"
            );
            let expr = t["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("{name}/{title}: target without expr"));
            // Every $variable used is defined (Grafana's built-ins aside).
            for var in expr.split('$').skip(1) {
                let v: String = var
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                assert!(
                    v.starts_with("__") || names.contains(v.as_str()),
                    "{name}/{title}: undefined ${v}"
                );
            }
            queries.push(Query {
                uid: uid.clone(),
                panel: title.clone(),
                expr: expr.to_owned(),
            });
        }
    }
    (queries, var_queries)
}

/// Grafana's substitutions for a run outside Grafana.
fn substitute(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$__interval", "15s")
        .replace("$namespace", ".*")
        .replace("$node", ".*")
        .replace("$pod", ".*")
}

#[test]
fn dashboards_are_well_formed_and_use_real_metrics() {
    // The metric families are registered in src/serve/metrics/*.rs.
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/serve/metrics");
    let mut metrics_src = String::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let rust = path.extension().is_some_and(|e| e == "rs");
        if rust && name != "tests.rs" && !name.ends_with("_tests.rs") {
            metrics_src.push_str(&std::fs::read_to_string(&path).unwrap());
        }
    }
    let mut uids = BTreeSet::new();
    for name in DASHBOARDS {
        let d = load(name);
        let (queries, _) = check_and_extract(name, &d);
        assert!(
            uids.insert(d["uid"].as_str().unwrap_or_default().to_owned()),
            "{name}: duplicate uid"
        );
        for q in queries {
            // Every tcpwatch_* name used is exported (histogram suffixes aside).
            for word in q.expr.split(|c: char| !(c.is_alphanumeric() || c == '_')) {
                if let Some(base) = word.strip_prefix("tcpwatch_") {
                    let base = ["_bucket", "_count", "_sum"]
                        .iter()
                        .find_map(|s| base.strip_suffix(s))
                        .unwrap_or(base);
                    assert!(
                        metrics_src.contains(&format!("\"tcpwatch_{base}\"")),
                        "{name}/{}: tcpwatch_{base} is not in src/metrics*.rs",
                        q.panel
                    );
                }
            }
        }
    }
}

/// An instant query: (status field, number of result series, raw body).
fn query(prom: &Prometheus, expr: &str) -> (String, usize, String) {
    let v = prom.query(expr);
    let status = v["status"].as_str().unwrap_or("no answer").to_owned();
    let n = v["data"]["result"].as_array().map_or(0, Vec::len);
    (status, n, v.to_string())
}

#[test]
fn every_panel_query_runs_against_prometheus_scraping_the_daemon() {
    if !privileged() {
        return;
    }
    let daemon = Daemon::start(&[
        "daemon.sweep_interval_ms=500",
        "detectors.close_wait.threshold_seconds=2",
    ]);
    let prom = Prometheus::start(&prometheus::scrape_config(daemon.port, false, None), &[]);
    // An incident for the incident panels: a CLOSE_WAIT this process leaks (close_wait_leak).
    let ns = Netns::new("dash");
    let (l, addr) = listener(&ns, 4);
    let client = connect(&ns, addr);
    let (leaked, _) = l.accept().unwrap();
    drop(client);
    // rate() needs two samples in its window: wait for a few scrapes.
    let scraped = wait_for(Duration::from_secs(40), || {
        let (_, n, _) = query(&prom, "count_over_time(tcpwatch_ready[1m]) >= 4");
        (n > 0).then_some(())
    });
    assert!(
        scraped.is_some(),
        "prometheus did not scrape the daemon: {}",
        prom.log_tail()
    );
    let port = addr.port();
    let incident = wait_for(Duration::from_secs(40), || {
        let (_, n, _) = query(&prom, &format!("tcpwatch_incident{{port=\"{port}\"}}"));
        (n > 0).then_some(())
    });
    assert!(
        incident.is_some(),
        "no tcpwatch_incident for the leak on :{port} in prometheus; incidents: {}",
        daemon.get_json("/api/v1/incidents")
    );

    let mut failures = Vec::new();
    let mut ran = 0;
    for name in DASHBOARDS {
        let d = load(name);
        let (queries, var_queries) = check_and_extract(name, &d);
        for sel in var_queries {
            let (status, n, body) = query(&prom, &substitute(&sel));
            if status != "success" || n == 0 {
                failures.push(format!(
                    "{name} variable {sel}: {status}, {n} series: {body}"
                ));
            }
            ran += 1;
        }
        for q in queries {
            let expr = substitute(&q.expr);
            let (status, n, body) = query(&prom, &expr);
            let may_be_empty = MAY_BE_EMPTY.contains(&(q.uid.as_str(), q.panel.as_str()));
            if status != "success" || (n == 0 && !may_be_empty) {
                failures.push(format!(
                    "{name} / {}: {expr}: {status}, {n} series: {body}",
                    q.panel
                ));
            }
            ran += 1;
        }
    }
    eprintln!("{ran} dashboard queries run against prometheus");
    assert!(
        failures.is_empty(),
        "dashboard queries failed:\n{}",
        failures.join("\n")
    );
    drop(leaked);
    drop(prom);
    drop(daemon);
}
