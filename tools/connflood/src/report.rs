//! The report: the original load test's figures (connections: connected,
//! disconnected, active, errors, reconnects; messages: sent, received,
//! expected, rate) plus latency, loss, duplicates, rejects and the pod
//! distribution; the verdict behind the exit status; the text and JSON
//! renderings (JSON keys are stable, see docs/connflood.md); and the
//! progress line.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::checker::Tally;
use crate::config::Config;
use crate::stats::{Counters, Histogram};

/// Everything the driver measured, handed to [`Report::build`].
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// The run's tag (in user names and message markers).
    pub tag: u32,
    /// Event counters.
    pub counters: Counters,
    /// Live-delivery latency, µs.
    pub latency: Histogram,
    /// Sequence accounting, summed over connections.
    pub tally: Tally,
    /// Connections that got a 101 at least once.
    pub connected: u64,
    /// Connections that gave up after the retry limit.
    pub failed: u64,
    /// Connections open and joined when the run was judged.
    pub active_at_end: u64,
    /// Sent messages nobody in this process saw, less the error frames
    /// their senders received.
    pub lost_unseen: u64,
    /// Connections per pod when judged.
    pub pods_current: BTreeMap<String, u64>,
    /// Opens per pod over the whole run.
    pub pods_all_opens: BTreeMap<String, u64>,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Time from the start until sending stopped.
    pub send_window: Duration,
    /// Time from the start until the run was judged.
    pub judged_at: Duration,
    /// The hard deadline stopped the run.
    pub deadline_hit: bool,
    /// CPU seconds used by connflood (user + system).
    pub cpu_secs: f64,
    /// Peak resident memory, MiB.
    pub max_rss_mib: f64,
    /// Work time of each event-loop iteration, µs (how long a batch of
    /// events kept the loop from reading other sockets).
    pub loop_busy: Histogram,
    /// Most readiness events handled in one iteration.
    pub max_events: u64,
}

/// The report (serialised as the `--json` file).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Format version of this JSON.
    pub version: u32,
    /// Whether the run passed (exit status 0).
    pub passed: bool,
    /// Why it did not, one sentence each.
    pub failures: Vec<String>,
    /// What was run.
    pub config: ConfigSummary,
    /// Timing.
    pub timing: Timing,
    /// Connection figures.
    pub connections: Connections,
    /// Message figures.
    pub messages: Messages,
    /// Live-delivery latency.
    pub latency_ms: Latency,
    /// Connections per pod.
    pub pods: Pods,
    /// Breakdowns.
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Close frames received from the server, by code ("0": without a code).
    pub close_codes: BTreeMap<String, u64>,
    /// Error frames received, by `code`.
    pub rejected_by_code: BTreeMap<String, u64>,
    /// Protocol rules the server broke.
    pub protocol: Protocol,
    /// connflood's own resource use.
    pub process: Process,
}

/// The run's settings.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigSummary {
    /// Target URLs.
    pub urls: Vec<String>,
    /// Connections to hold.
    pub connections: usize,
    /// Ramp, seconds.
    pub ramp_up_secs: f64,
    /// Sending time after the ramp, seconds.
    pub duration_secs: f64,
    /// Interval between a connection's messages, ms.
    pub msg_interval_ms: f64,
    /// Rooms.
    pub rooms: usize,
    /// Sending connections.
    pub senders: usize,
    /// Message text size.
    pub payload_bytes: usize,
    /// Settle time, seconds.
    pub settle_secs: f64,
    /// Source addresses used.
    pub bind_addresses: usize,
    /// Retry limit.
    pub max_retries: u32,
    /// Whether rejects were allowed.
    pub allow_rejects: bool,
    /// Whether permessage-deflate was offered (`--deflate`).
    pub deflate: bool,
    /// This run's tag (hex), found in user names `cf-<tag>-<conn>`.
    pub tag: String,
}

/// Timing figures.
#[derive(Debug, Clone, Serialize)]
pub struct Timing {
    /// Wall time of the whole run.
    pub elapsed_secs: f64,
    /// From the start until sending stopped.
    pub send_window_secs: f64,
    /// From the start until the run was judged (end of settle).
    pub judged_at_secs: f64,
    /// Whether the hard deadline (ramp + duration + settle + 30 s) stopped it.
    pub deadline_hit: bool,
}

/// Connection figures.
#[derive(Debug, Clone, Serialize)]
pub struct Connections {
    /// Connections asked for.
    pub target: u64,
    /// Connections that got a 101 at least once.
    pub connected: u64,
    /// Connections that never did.
    pub never_connected: u64,
    /// Connections that gave up after `max_retries` consecutive failures.
    pub failed: u64,
    /// Open and joined when judged.
    pub active: u64,
    /// Not open when judged (target - active).
    pub not_open_at_end: u64,
    /// Open connections that ended before the final close.
    pub disconnected: u64,
    /// Failures of every kind (see errors_by_kind).
    pub errors: u64,
    /// Connects after a connection's first.
    pub reconnects: u64,
    /// TCP connects started.
    pub attempts: u64,
    /// 101s received.
    pub opens: u64,
    /// Server pings answered with a pong.
    pub pings_answered: u64,
    /// `system` frames announcing a server shutdown.
    pub shutdown_notices: u64,
    /// Upgrades that agreed to permessage-deflate.
    pub deflate_negotiated: u64,
}

/// Message figures.
#[derive(Debug, Clone, Serialize)]
pub struct Messages {
    /// Chat messages sent.
    pub sent: u64,
    /// Chat frames received: live plus history.
    pub received: u64,
    /// Live chat frames received.
    pub received_live: u64,
    /// Chat frames received in join history.
    pub received_history: u64,
    /// Deliveries the connections were responsible for.
    pub expected: u64,
    /// Of those, received (once each).
    pub delivered: u64,
    /// Messages sent per second over the send window.
    pub send_rate: f64,
    /// Live chat frames received per second until judged.
    pub receive_rate: f64,
    /// Bytes on the wire (header and payload) per live chat frame received.
    pub wire_bytes_per_delivery: f64,
    /// Live chat frames received compressed (permessage-deflate).
    pub compressed_deliveries: u64,
    /// Every loss: lost_gap + lost_tail + lost_unrecovered + lost_unseen.
    pub lost: u64,
    /// Seqs skipped inside a connection's sequence.
    pub lost_gap: u64,
    /// Seqs a connection open at the end never got, up to its room's highest.
    pub lost_tail: u64,
    /// Seqs a resume answered `recovered: false` could not replay.
    pub lost_unrecovered: u64,
    /// Sent messages nobody saw (less the error frames the sender got).
    pub lost_unseen: u64,
    /// Resumes answered with `recovered: false`.
    pub unrecovered_resumes: u64,
    /// Of those, how many did not show the missing range (counted 1 each).
    pub unrecovered_unknown: u64,
    /// Seqs a connection received twice.
    pub duplicated: u64,
    /// Seqs that arrived after a later seq.
    pub reordered: u64,
    /// Error frames received.
    pub rejected: u64,
}

/// Latency of live deliveries, milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Number of samples.
    pub samples: u64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

/// Connections per pod.
#[derive(Debug, Clone, Serialize)]
pub struct Pods {
    /// Open connections per pod when judged.
    pub current: BTreeMap<String, u64>,
    /// Opens per pod over the run.
    pub all_opens: BTreeMap<String, u64>,
}

/// Protocol rules the server broke.
#[derive(Debug, Clone, Serialize)]
pub struct Protocol {
    /// Anomalies by kind (bad_json, binary_frame, wrong_room, …).
    pub anomalies: BTreeMap<String, u64>,
    /// Joins whose lastSeq was below the resume point.
    pub seq_regressions: u64,
    /// Joins with malformed history.
    pub history_anomalies: u64,
    /// Chat frames before the join frame.
    pub chat_before_join: u64,
}

/// connflood's own resource use.
#[derive(Debug, Clone, Serialize)]
pub struct Process {
    /// CPU seconds (user + system).
    pub cpu_secs: f64,
    /// CPU use as a percentage of one core over the run.
    pub cpu_percent: f64,
    /// Peak resident memory, MiB.
    pub max_rss_mib: f64,
    /// Event-loop iterations.
    pub loop_iterations: u64,
    /// 99th percentile of an iteration's work time, ms.
    pub loop_busy_p99_ms: f64,
    /// Longest iteration's work time, ms.
    pub loop_busy_max_ms: f64,
    /// Most readiness events handled in one iteration.
    pub loop_max_events: u64,
}

/// Microseconds as milliseconds (exact to the µs).
fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn per_sec(n: u64, d: Duration) -> f64 {
    if d.is_zero() {
        0.0
    } else {
        round3(n as f64 / d.as_secs_f64())
    }
}

impl Report {
    /// Builds the report and its verdict.
    pub fn build(cfg: &Config, o: &Outcome) -> Report {
        let c = &o.counters;
        let t = &o.tally;
        let target = cfg.connections as u64;
        let lost = t.lost() + o.lost_unseen;
        let connections = Connections {
            target,
            connected: o.connected,
            never_connected: target - o.connected.min(target),
            failed: o.failed,
            active: o.active_at_end,
            not_open_at_end: target - o.active_at_end.min(target),
            disconnected: c.disconnects,
            errors: c.errors,
            reconnects: c.reconnects,
            attempts: c.attempts,
            opens: c.opens,
            pings_answered: c.pongs,
            shutdown_notices: c.shutdown_notices,
            deflate_negotiated: c.deflate_opens,
        };
        let messages = Messages {
            sent: c.sent,
            received: c.received_live + c.received_history,
            received_live: c.received_live,
            received_history: c.received_history,
            expected: t.expected,
            delivered: t.delivered,
            send_rate: per_sec(c.sent, o.send_window),
            receive_rate: per_sec(c.received_live, o.judged_at),
            wire_bytes_per_delivery: if c.received_live == 0 {
                0.0
            } else {
                c.chat_wire_bytes as f64 / c.received_live as f64
            },
            compressed_deliveries: c.chat_compressed,
            lost,
            lost_gap: t.lost_gap,
            lost_tail: t.lost_tail,
            lost_unrecovered: t.lost_unrecovered,
            lost_unseen: o.lost_unseen,
            unrecovered_resumes: t.unrecovered_resumes,
            unrecovered_unknown: t.unrecovered_unknown,
            duplicated: t.duplicated,
            reordered: t.reordered,
            rejected: c.rejected(),
        };
        let protocol = Protocol {
            anomalies: c.protocol_anomalies.clone(),
            seq_regressions: t.seq_regressions,
            history_anomalies: t.history_anomalies,
            chat_before_join: t.chat_before_join,
        };

        let mut failures = Vec::new();
        if connections.never_connected > 0 {
            failures.push(format!("{} of {} connections never connected", connections.never_connected, target));
        }
        if o.failed > connections.never_connected {
            failures.push(format!(
                "{} connections gave up reconnecting after {} attempts",
                o.failed - connections.never_connected,
                cfg.max_retries
            ));
        }
        // Connections that gave up are reported above; the rest were still
        // reconnecting (or never started) when the run was judged.
        let not_open = target.saturating_sub(o.active_at_end).saturating_sub(o.failed);
        if not_open > 0 {
            failures.push(format!("{not_open} connections were not open (and joined) at the end"));
        }
        if lost > 0 {
            failures.push(format!(
                "{lost} messages lost (gap {}, tail {}, unrecovered {}, seen by nobody {})",
                t.lost_gap, t.lost_tail, t.lost_unrecovered, o.lost_unseen
            ));
        }
        if t.duplicated > 0 {
            failures.push(format!("{} duplicated deliveries", t.duplicated));
        }
        if t.reordered > 0 {
            failures.push(format!("{} deliveries out of seq order", t.reordered));
        }
        if messages.rejected > 0 && !cfg.allow_rejects {
            failures.push(format!("{} messages rejected with an error frame (see --allow-rejects)", messages.rejected));
        }
        if t.seq_regressions > 0 {
            failures.push(format!(
                "{} resumes found their room's sequence restarted below the resume point (server state lost)",
                t.seq_regressions
            ));
        }
        let anomalies: u64 = c.protocol_anomalies.values().sum::<u64>() + t.history_anomalies + t.chat_before_join;
        if anomalies > 0 {
            failures.push(format!("{anomalies} protocol anomalies from the server"));
        }
        if o.deadline_hit {
            failures.push("stopped by the hard deadline".into());
        }

        let elapsed = o.elapsed.as_secs_f64();
        Report {
            version: 1,
            passed: failures.is_empty(),
            failures,
            config: ConfigSummary {
                urls: cfg.urls.iter().map(|u| u.to_string()).collect(),
                connections: cfg.connections,
                ramp_up_secs: cfg.ramp_up.as_secs_f64(),
                duration_secs: cfg.duration.as_secs_f64(),
                msg_interval_ms: cfg.msg_interval.as_secs_f64() * 1000.0,
                rooms: cfg.rooms,
                senders: cfg.senders,
                payload_bytes: cfg.payload,
                settle_secs: cfg.settle.as_secs_f64(),
                bind_addresses: cfg.binds.len(),
                max_retries: cfg.max_retries,
                allow_rejects: cfg.allow_rejects,
                deflate: cfg.deflate,
                tag: format!("{:08x}", o.tag),
            },
            timing: Timing {
                elapsed_secs: round3(elapsed),
                send_window_secs: round3(o.send_window.as_secs_f64()),
                judged_at_secs: round3(o.judged_at.as_secs_f64()),
                deadline_hit: o.deadline_hit,
            },
            connections,
            messages,
            latency_ms: Latency {
                samples: o.latency.count(),
                p50: ms(o.latency.percentile(50.0)),
                p90: ms(o.latency.percentile(90.0)),
                p99: ms(o.latency.percentile(99.0)),
                p999: ms(o.latency.percentile(99.9)),
                max: ms(o.latency.max()),
                mean: round3(o.latency.mean() / 1000.0),
            },
            pods: Pods { current: o.pods_current.clone(), all_opens: o.pods_all_opens.clone() },
            errors_by_kind: c.errors_by_kind.clone(),
            close_codes: c.close_codes.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            rejected_by_code: c.rejected_by_code.clone(),
            protocol,
            process: Process {
                cpu_secs: round3(o.cpu_secs),
                cpu_percent: if elapsed > 0.0 { round3(100.0 * o.cpu_secs / elapsed) } else { 0.0 },
                max_rss_mib: round3(o.max_rss_mib),
                loop_iterations: o.loop_busy.count(),
                loop_busy_p99_ms: ms(o.loop_busy.percentile(99.0)),
                loop_busy_max_ms: ms(o.loop_busy.max()),
                loop_max_events: o.max_events,
            },
        }
    }

    /// The exit status: 0 passed, 1 failed.
    pub fn exit_code(&self) -> i32 {
        if self.passed {
            0
        } else {
            1
        }
    }

    /// The JSON rendering.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// The text rendering.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let cf = &self.config;
        let c = &self.connections;
        let m = &self.messages;
        let l = &self.latency_ms;
        let _ = writeln!(s, "=== connflood report (run {}) ===", cf.tag);
        let _ = writeln!(s, "Target:      {}", cf.urls.join(", "));
        let _ = writeln!(
            s,
            "Load:        {} connections, {} rooms, {} senders every {} ms, {} B messages",
            cf.connections, cf.rooms, cf.senders, cf.msg_interval_ms, cf.payload_bytes
        );
        let _ = writeln!(
            s,
            "Timing:      ramp {} s + {} s sending + {} s settle; elapsed {:.1} s{}",
            cf.ramp_up_secs,
            cf.duration_secs,
            cf.settle_secs,
            self.timing.elapsed_secs,
            if self.timing.deadline_hit { " (HARD DEADLINE HIT)" } else { "" }
        );
        let _ = writeln!(s, "Connections:");
        let _ = writeln!(
            s,
            "  connected:     {} / {} (never: {}, gave up: {})",
            c.connected, c.target, c.never_connected, c.failed
        );
        let _ = writeln!(s, "  disconnected:  {}", c.disconnected);
        let _ = writeln!(s, "  active:        {} (at the end)", c.active);
        let _ = writeln!(s, "  errors:        {}{}", c.errors, breakdown(&self.errors_by_kind));
        let _ = writeln!(s, "  reconnects:    {}", c.reconnects);
        if c.pings_answered + c.shutdown_notices > 0 {
            let _ = writeln!(s, "  pings answered: {}, shutdown notices: {}", c.pings_answered, c.shutdown_notices);
        }
        let _ = writeln!(s, "Messages:");
        let _ = writeln!(s, "  sent:          {} ({:.1}/s)", m.sent, m.send_rate);
        let _ =
            writeln!(s, "  received:      {} (live {}, history {})", m.received, m.received_live, m.received_history);
        let _ = writeln!(s, "  expected:      {} (delivered {})", m.expected, m.delivered);
        let _ = writeln!(s, "  rate:          {:.1} msg/s received", m.receive_rate);
        let _ = writeln!(
            s,
            "  wire:          {:.1} B per chat delivery ({} of {} compressed; deflate agreed on {} upgrades{})",
            m.wire_bytes_per_delivery,
            m.compressed_deliveries,
            m.received_live,
            c.deflate_negotiated,
            if cf.deflate { "" } else { ", not offered" }
        );
        let _ = writeln!(
            s,
            "  lost:          {} (gap {}, tail {}, unrecovered {}, seen by nobody {})",
            m.lost, m.lost_gap, m.lost_tail, m.lost_unrecovered, m.lost_unseen
        );
        let _ = writeln!(s, "  duplicated:    {} (reordered {})", m.duplicated, m.reordered);
        let _ = writeln!(s, "  rejected:      {}{}", m.rejected, breakdown(&self.rejected_by_code));
        if m.unrecovered_resumes > 0 {
            let _ = writeln!(
                s,
                "  resumes with recovered:false: {} ({} of unknown size)",
                m.unrecovered_resumes, m.unrecovered_unknown
            );
        }
        let _ = writeln!(
            s,
            "Latency:       p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  max {:.3} ms  ({} samples)",
            l.p50, l.p90, l.p99, l.p999, l.max, l.samples
        );
        let _ = writeln!(s, "Pods (now):    {}", pods(&self.pods.current));
        let _ = writeln!(s, "Pods (opens):  {}", pods(&self.pods.all_opens));
        if !self.close_codes.is_empty() {
            let _ = writeln!(s, "Close codes:   {}", pods(&self.close_codes));
        }
        let p = &self.protocol;
        if !p.anomalies.is_empty() || p.seq_regressions + p.history_anomalies + p.chat_before_join > 0 {
            let _ = writeln!(
                s,
                "Protocol:      {} seq regressions, {} history anomalies, {} chats before join{}",
                p.seq_regressions,
                p.history_anomalies,
                p.chat_before_join,
                breakdown(&p.anomalies)
            );
        }
        let _ = writeln!(
            s,
            "connflood:     {:.1} CPU s ({:.1} % of a core), peak RSS {:.1} MiB; loop busy p99 {:.3} ms, max {:.3} ms, \
             up to {} events at once",
            self.process.cpu_secs,
            self.process.cpu_percent,
            self.process.max_rss_mib,
            self.process.loop_busy_p99_ms,
            self.process.loop_busy_max_ms,
            self.process.loop_max_events
        );
        if self.passed {
            let _ = writeln!(s, "Result:        PASS");
        } else {
            let _ = writeln!(s, "Result:        FAIL");
            for f in &self.failures {
                let _ = writeln!(s, "  - {f}");
            }
        }
        s
    }
}

fn breakdown(map: &BTreeMap<String, u64>) -> String {
    if map.is_empty() {
        String::new()
    } else {
        format!(" ({})", map.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", "))
    }
}

fn pods(map: &BTreeMap<String, u64>) -> String {
    if map.is_empty() {
        "-".into()
    } else {
        map.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join(", ")
    }
}

/// Figures for one progress line.
#[derive(Debug, Clone, Copy, Default)]
pub struct Status {
    /// Seconds since the start.
    pub t: f64,
    /// Phase name.
    pub phase: &'static str,
    /// Connections that got a 101 at least once.
    pub connected: u64,
    /// Open and joined now.
    pub active: u64,
    /// Target.
    pub target: u64,
    /// Reconnects so far.
    pub reconnects: u64,
    /// Errors so far.
    pub errors: u64,
    /// Messages sent so far.
    pub sent: u64,
    /// Live chat frames received so far.
    pub received: u64,
    /// Live chat frames per second over the last interval.
    pub rate: f64,
    /// p99 latency of the deliveries over the last interval, ms.
    pub p99_ms: f64,
    /// connflood's CPU use over the last interval, % of a core.
    pub cpu_percent: f64,
}

impl Status {
    /// One progress line (no line ending).
    pub fn line(&self) -> String {
        format!(
            "[{:>6.1}s {:<7}] conn {}/{} active {} reconn {} err {} | sent {} recv {} ({:.0} msg/s) p99 {:.2} ms | cpu {:.0}%",
            self.t,
            self.phase,
            self.connected,
            self.target,
            self.active,
            self.reconnects,
            self.errors,
            self.sent,
            self.received,
            self.rate,
            self.p99_ms,
            self.cpu_percent
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::from_args as cfg;

    fn clean(n: u64) -> Outcome {
        let mut o = Outcome { connected: n, active_at_end: n, ..Default::default() };
        o.counters.sent = 10;
        o.counters.received_live = 100;
        o.tally.expected = 100;
        o.tally.delivered = 100;
        o.send_window = Duration::from_secs(10);
        o.judged_at = Duration::from_secs(20);
        o.elapsed = Duration::from_secs(21);
        o.cpu_secs = 2.1;
        o.latency.record(1500);
        o.pods_current.insert("pod-a".into(), n);
        o
    }

    #[test]
    fn a_clean_run_passes() {
        let c = cfg(&["--connections", "10"]);
        let r = Report::build(&c, &clean(10));
        assert!(r.passed, "{:?}", r.failures);
        assert_eq!(r.exit_code(), 0);
        assert_eq!((r.messages.send_rate, r.messages.receive_rate), (1.0, 5.0));
        assert_eq!(r.process.cpu_percent, 10.0);
        assert!(r.to_text().contains("Result:        PASS"));
    }

    #[test]
    fn each_failure_fails_the_run() {
        let c = cfg(&["--connections", "10"]);
        type Breaker = Box<dyn Fn(&mut Outcome)>;
        let cases: Vec<(&str, Breaker)> = vec![
            ("never connected", Box::new(|o| o.connected = 9)),
            ("not open", Box::new(|o| o.active_at_end = 9)),
            ("gave up", Box::new(|o| o.failed = 1)),
            ("lost", Box::new(|o| o.tally.lost_gap = 1)),
            ("lost", Box::new(|o| o.tally.lost_tail = 1)),
            ("lost", Box::new(|o| o.tally.lost_unrecovered = 1)),
            ("lost", Box::new(|o| o.lost_unseen = 1)),
            ("duplicated", Box::new(|o| o.tally.duplicated = 1)),
            ("out of seq order", Box::new(|o| o.tally.reordered = 1)),
            (
                "rejected",
                Box::new(|o| {
                    o.counters.rejected_by_code.insert("too_long".into(), 1);
                }),
            ),
            ("protocol", Box::new(|o| o.counters.anomaly("bad_json"))),
            ("sequence restarted", Box::new(|o| o.tally.seq_regressions = 1)),
            ("protocol", Box::new(|o| o.tally.history_anomalies = 1)),
            ("protocol", Box::new(|o| o.tally.chat_before_join = 1)),
            ("deadline", Box::new(|o| o.deadline_hit = true)),
        ];
        for (want, break_it) in cases {
            let mut o = clean(10);
            break_it(&mut o);
            let r = Report::build(&c, &o);
            assert!(!r.passed, "{want}");
            assert_eq!(r.exit_code(), 1);
            assert!(r.failures.iter().any(|f| f.contains(want)), "{want}: {:?}", r.failures);
            assert!(r.to_text().contains("FAIL"));
        }
    }

    #[test]
    fn rejects_can_be_allowed() {
        let c = cfg(&["--connections", "10", "--allow-rejects"]);
        let mut o = clean(10);
        o.counters.rejected_by_code.insert("rate_limited".into(), 3);
        let r = Report::build(&c, &o);
        assert!(r.passed, "{:?}", r.failures);
        assert_eq!(r.messages.rejected, 3);
    }

    #[test]
    fn a_connection_that_gave_up_is_reported_once() {
        let c = cfg(&["--connections", "10"]);
        let mut o = clean(10);
        o.failed = 1;
        o.active_at_end = 9;
        let r = Report::build(&c, &o);
        assert_eq!(r.failures.len(), 1, "{:?}", r.failures);
        o.connected = 9;
        let r = Report::build(&c, &o);
        assert_eq!(r.failures.len(), 1, "{:?}", r.failures);
        assert!(r.failures[0].contains("never connected"));
    }

    #[test]
    fn json_keys_are_stable() {
        let c = cfg(&["--connections", "10"]);
        let mut o = clean(10);
        o.counters.close_codes.insert(1001, 2);
        let v: serde_json::Value = serde_json::from_str(&Report::build(&c, &o).to_json()).unwrap();
        for path in [
            "/version",
            "/passed",
            "/failures",
            "/config/urls",
            "/config/connections",
            "/config/ramp_up_secs",
            "/config/duration_secs",
            "/config/msg_interval_ms",
            "/config/rooms",
            "/config/senders",
            "/config/payload_bytes",
            "/config/settle_secs",
            "/config/tag",
            "/timing/elapsed_secs",
            "/timing/deadline_hit",
            "/connections/target",
            "/connections/connected",
            "/connections/never_connected",
            "/connections/failed",
            "/connections/active",
            "/connections/not_open_at_end",
            "/connections/disconnected",
            "/connections/errors",
            "/connections/reconnects",
            "/connections/pings_answered",
            "/connections/shutdown_notices",
            "/messages/sent",
            "/messages/received",
            "/messages/expected",
            "/messages/delivered",
            "/messages/send_rate",
            "/messages/receive_rate",
            "/messages/lost",
            "/messages/lost_gap",
            "/messages/lost_tail",
            "/messages/lost_unrecovered",
            "/messages/lost_unseen",
            "/messages/duplicated",
            "/messages/reordered",
            "/messages/rejected",
            "/latency_ms/p50",
            "/latency_ms/p90",
            "/latency_ms/p99",
            "/latency_ms/max",
            "/pods/current/pod-a",
            "/pods/all_opens",
            "/errors_by_kind",
            "/close_codes/1001",
            "/rejected_by_code",
            "/protocol/anomalies",
            "/process/cpu_percent",
        ] {
            assert!(v.pointer(path).is_some(), "{path}");
        }
        assert_eq!(v["latency_ms"]["p50"], 1.5);
    }

    /// Every key of the JSON (maps empty, so only fixed keys) is in the docs.
    #[test]
    fn every_json_key_is_documented() {
        let docs = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/connflood.md"));
        let c = cfg(&["--connections", "1"]);
        let v: serde_json::Value = serde_json::to_value(Report::build(&c, &Outcome::default())).unwrap();
        fn walk(v: &serde_json::Value, path: &str, out: &mut Vec<String>) {
            if let serde_json::Value::Object(m) = v {
                for (k, child) in m {
                    let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                    if child.is_object() && !child.as_object().is_some_and(|o| o.is_empty()) {
                        walk(child, &p, out);
                    } else {
                        out.push(p);
                    }
                }
            }
        }
        let mut keys = Vec::new();
        walk(&v, "", &mut keys);
        assert!(keys.len() > 50, "{}", keys.len());
        for key in keys {
            let leaf = key.rsplit('.').next().unwrap();
            assert!(
                docs.contains(&format!("`{key}`"))
                    || docs.contains(&format!("`{leaf}`"))
                    || docs.contains(&format!("{leaf}`")),
                "{key} is not in docs/connflood.md"
            );
        }
    }

    #[test]
    fn status_line() {
        let s =
            Status { t: 5.0, phase: "ramp", connected: 10, active: 9, target: 20, p99_ms: 1.234, ..Default::default() };
        let line = s.line();
        assert!(line.contains("conn 10/20 active 9") && line.contains("p99 1.23 ms"), "{line}");
    }
}
