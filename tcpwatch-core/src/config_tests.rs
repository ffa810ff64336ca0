//! Unit tests of `config`.
use super::toml_io::collect_leaves;
use super::*;
use crate::model::Severity;

fn err(text: &str) -> ConfigError {
    Config::from_toml_str(text).unwrap_err()
}

#[test]
fn embedded_default_equals_serde_default() {
    assert_eq!(Config::default_embedded().unwrap(), Config::default());
    assert_eq!(Config::from_toml_str("").unwrap(), Config::default());
}

#[test]
fn embedded_default_mentions_every_key() {
    // Every key of the schema appears in the file (url commented out, as it is unset).
    let mut leaves = Vec::new();
    collect_leaves(&schema_sample(), "", &mut leaves);
    for (path, _) in leaves {
        let last = path.rsplit('.').next().unwrap();
        assert!(
            DEFAULT_CONFIG_TOML.contains(&format!("{last} =")),
            "{path} missing"
        );
    }
}

#[test]
fn unknown_key_is_named() {
    let e = err("[detectors.close_wait]\nthreshold_secs = 10\n");
    assert_eq!(e.key(), Some("detectors.close_wait.threshold_secs"));
    let s = e.to_string();
    assert!(
        s.starts_with("detectors.close_wait.threshold_secs: unknown key"),
        "{s}"
    );
    assert!(s.contains("threshold_seconds"), "{s}");
    let e = err("[nope]\n");
    assert_eq!(e.key(), Some("nope"));
    let e = err("[daemon]\nlisten = \"127.0.0.1:1\"\nfoo = 1\n");
    assert_eq!(e.key(), Some("daemon.foo"));
}

#[test]
fn wrong_type_is_named() {
    let e = err("[detectors.close_wait]\nthreshold_seconds = \"30\"\n");
    assert_eq!(
        e.key(),
        Some("detectors.close_wait.threshold_seconds"),
        "{e}"
    );
    assert!(e.to_string().contains("string"), "{e}");
    let e = err("[daemon]\nsweep_interval_ms = -5\n");
    assert_eq!(e.key(), Some("daemon.sweep_interval_ms"), "{e}");
    let e = err("[daemon]\nlog_format = \"xml\"\n");
    assert_eq!(e.key(), Some("daemon.log_format"), "{e}");
    let e = err("[daemon]\nlisten = \"localhost\"\n");
    assert_eq!(e.key(), Some("daemon.listen"), "{e}");
    let e = err("daemon = 3\n");
    assert_eq!(e.key(), Some("daemon"), "{e}");
    let e = err("[detectors.awaiting_response]\nignore_local_ports = [80, 70000]\n");
    assert_eq!(
        e.key(),
        Some("detectors.awaiting_response.ignore_local_ports"),
        "{e}"
    );
}

#[test]
fn integers_are_accepted_for_seconds() {
    let c = Config::from_toml_str("[detectors.close_wait]\nthreshold_seconds = 45\n").unwrap();
    assert!((c.detectors.close_wait.threshold_seconds - 45.0).abs() < f64::EPSILON);
}

#[test]
fn out_of_range_is_named() {
    let e = err("[detectors.close_wait]\nthreshold_seconds = -1\n");
    assert_eq!(
        e.to_string(),
        "detectors.close_wait.threshold_seconds: must be > 0, got -1"
    );
    let e = err("[detectors.accept_backlog]\nfill_fraction = 1.5\n");
    assert_eq!(e.key(), Some("detectors.accept_backlog.fill_fraction"));
    let e = err("[daemon]\nhistory_len = 0\n");
    assert_eq!(
        e.to_string(),
        "daemon.history_len: must be between 1 and 4096, got 0"
    );
    let e = err("[detectors.awaiting_response]\nignore_remote_ports = [0]\n");
    assert_eq!(
        e.key(),
        Some("detectors.awaiting_response.ignore_remote_ports")
    );
    let e = err("[alertmanager]\nurl = \"ftp://x\"\n");
    assert_eq!(e.key(), Some("alertmanager.url"));
}

#[test]
fn event_drain_interval_stays_within_the_stream_budget() {
    // The live stream promises 100 ms; the drain period is what the reader adds.
    for v in [0, 101] {
        let e = err(&format!("[daemon]\nevent_drain_interval_ms = {v}\n"));
        assert_eq!(
            e.to_string(),
            format!("daemon.event_drain_interval_ms: must be between 1 and 100, got {v}")
        );
    }
    let c = Config::from_toml_str("[daemon]\nevent_drain_interval_ms = 100\n").unwrap();
    assert_eq!(c.daemon.event_drain_interval_ms, 100);
    assert_eq!(Config::default().daemon.event_drain_interval_ms, 20);
    assert!(Config::default().daemon.bpf_run_stats);
    let mut c = Config::default();
    c.apply_override("daemon.bpf_run_stats", "false").unwrap();
    assert!(!c.daemon.bpf_run_stats);
}

#[test]
fn syntax_error_has_line_and_column() {
    match err("[daemon]\nsweep_interval_ms = = 3\n") {
        ConfigError::Syntax { line, column, .. } => {
            assert_eq!(line, 2);
            assert!(column > 1);
        }
        other => panic!("unexpected {other:?}"),
    }
    let s = err("[daemon\n").to_string();
    assert!(s.contains("line 1"), "{s}");
}

#[test]
fn full_file_parses() {
    let c = Config::from_toml_str(
        r#"
        [daemon]
        listen = "0.0.0.0:9100"
        log_format = "json"
        [detectors]
        resolve_after_seconds = 0
        [detectors.awaiting_response]
        ignore_remote_ports = [5222, 443]
        [alertmanager]
        url = "http://127.0.0.1:9093"
        min_severity = "critical"
        "#,
    )
    .unwrap();
    assert_eq!(c.daemon.listen.port(), 9100);
    assert_eq!(c.daemon.log_format, LogFormat::Json);
    assert_eq!(
        c.detectors.awaiting_response.ignore_remote_ports,
        vec![5222, 443]
    );
    assert!(c.alertmanager.enabled());
    assert_eq!(c.alertmanager.min_severity, Severity::Critical);
    assert_eq!(c.detectors.close_wait, CloseWaitConfig::default());
}

#[test]
fn overrides_go_through_validation() {
    let mut c = Config::default();
    c.apply_override("detectors.close_wait.threshold_seconds", "10")
        .unwrap();
    assert!((c.detectors.close_wait.threshold_seconds - 10.0).abs() < f64::EPSILON);
    c.apply_override("daemon.listen", "0.0.0.0:1234").unwrap();
    assert_eq!(c.daemon.listen.port(), 1234);
    c.apply_override("daemon.log_format", "json").unwrap();
    assert_eq!(c.daemon.log_format, LogFormat::Json);
    c.apply_override("detectors.awaiting_response.ignore_local_ports", "[8080]")
        .unwrap();
    assert_eq!(c.detectors.awaiting_response.ignore_local_ports, vec![8080]);
    c.apply_override("alertmanager.url", "http://am:9093")
        .unwrap();
    assert_eq!(c.alertmanager.url.as_deref(), Some("http://am:9093"));
    c.apply_override("detectors.retransmit.enabled", "false")
        .unwrap();
    assert!(!c.detectors.retransmit.enabled);

    let before = c.clone();
    let e = c
        .apply_override("detectors.close_wait.threshold_seconds", "-1")
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "detectors.close_wait.threshold_seconds: must be > 0, got -1"
    );
    let e = c
        .apply_override("detectors.close_wait.nope", "1")
        .unwrap_err();
    assert_eq!(e.key(), Some("detectors.close_wait.nope"));
    let e = c
        .apply_override("daemon.sweep_interval_ms", "fast")
        .unwrap_err();
    assert_eq!(e.key(), Some("daemon.sweep_interval_ms"));
    let e = c.apply_override("daemon.listen.port", "1").unwrap_err();
    assert_eq!(e.key(), Some("daemon.listen"));
    assert_eq!(c, before);
}

#[test]
fn seconds_convert_to_ns() {
    assert_eq!(seconds_to_ns(1.5), 1_500_000_000);
    assert_eq!(seconds_to_ns(-3.0), 0);
    assert_eq!(seconds_to_ns(f64::NAN), 0);
}
