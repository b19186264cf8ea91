//! Unit tests of metrics (`metrics.rs`).

use super::*;

#[test]
fn labels_line_up_with_their_enums() {
    assert_eq!(CLOSE_REASONS[CloseReason::Panic as usize], "panic");
    assert_eq!(CLOSE_REASONS[CloseReason::SlowConsumer as usize], "slow_consumer");
    assert_eq!(CLOSE_REASONS[CloseReason::Client as usize], "client");
}

#[test]
fn render_sums_workers_and_is_valid_exposition() {
    let m = Metrics::new(2);
    m.workers[0].ws_connections.fetch_add(3, Relaxed);
    m.workers[1].ws_connections.fetch_add(4, Relaxed);
    m.workers[1].http_response(426);
    m.workers[0].close(CloseReason::SlowConsumer);
    m.workers[1].reject("rate_limited");
    let text = m.render(&Snapshot { draining: true, ..Snapshot::default() });
    assert!(text.contains("\nwebsocket_connections_active 7\n"));
    assert!(text.contains("websocket_worker_connections_active{worker=\"1\"} 4\n"));
    assert!(text.contains("websocket_http_responses_total{status=\"426\"} 1\n"));
    assert!(text.contains("websocket_closes_total{reason=\"slow_consumer\"} 1\n"));
    assert!(text.contains("websocket_messages_rejected_total{code=\"rate_limited\"} 1\n"));
    assert!(text.contains("websocket_draining 1\n"));
    // Each family: HELP, TYPE (counter or gauge), then its samples; no name twice.
    let mut families = std::collections::HashSet::new();
    let mut family = "";
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if let Some(help) = line.strip_prefix("# HELP ") {
            family = help.split(' ').next().unwrap();
            assert!(families.insert(family), "{family} twice");
            let kind = lines.next().unwrap().strip_prefix(&format!("# TYPE {family} ")).unwrap();
            assert!(kind == "counter" || kind == "gauge", "{family}: {kind}");
            continue;
        }
        let (name, value) = line.rsplit_once(' ').unwrap();
        assert!(value.parse::<f64>().is_ok(), "{line}");
        assert_eq!(name.split('{').next().unwrap(), family, "{line} outside its family");
        assert!(name.starts_with("websocket_") || name.starts_with("process_"), "{line}");
    }
    assert!(families.len() > 40, "{} families", families.len());
}

#[test]
fn process_usage_reads_proc() {
    let (rss, user, system) = process_usage();
    assert!(rss > 0);
    assert!(user >= 0.0 && system >= 0.0);
}

#[test]
fn operations_doc_describes_every_metric() {
    let doc = include_str!("../../docs/operations.md");
    let text = Metrics::new(1).render(&Snapshot::default());
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let name = line.split_whitespace().nth(2).unwrap();
        assert!(doc.contains(&format!("`{name}")), "docs/operations.md does not describe {name}");
    }
}
