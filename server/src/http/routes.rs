//! Routing of a parsed request: the HTTP endpoints answered at once, and
//! the WebSocket routes turned into an upgrade for the worker to carry out.
//!
//! | path | answer |
//! | --- | --- |
//! | `/`, `/ws` + Upgrade | chat WebSocket (`room`, `name`, `since`) |
//! | `/` | the chat page |
//! | `/echo` + Upgrade | raw echo WebSocket, only with `ECHO_ROUTE=1` |
//! | `/health` | 200 JSON while alive |
//! | `/ready` | 200 when accepting, 503 draining or full |
//! | `/metrics` | Prometheus text |
//! | `/stats` | the original server's JSON figures |
//! | `/history` | a room's last messages, newest first |

use super::assets;
use super::query::{history_params, join_params, JoinParams};
use super::request::Head;
use super::response::Response;
use super::upgrade;
use crate::metrics::{self, Snapshot};
use crate::state::{Phase, ServerState};

/// What the worker does with a request.
#[derive(Debug)]
pub enum Route {
    /// Send this response.
    Respond(Response),
    /// Switch the connection to WebSocket (after the capacity check).
    Upgrade {
        /// The `Sec-WebSocket-Accept` value.
        accept: String,
        /// Which WebSocket service.
        kind: UpgradeKind,
    },
}

/// The WebSocket services.
#[derive(Debug)]
pub enum UpgradeKind {
    /// The chat.
    Chat(JoinParams),
    /// Raw echo, for conformance testing.
    Echo,
}

/// Decides what to do with `head`.
pub fn route(head: &Head<'_>, state: &ServerState) -> Route {
    let config = &state.config;
    match head.path {
        "/ws" => chat_upgrade(head, state),
        "/" if head.upgrade_websocket => chat_upgrade(head, state),
        "/echo" if config.echo_route => match upgrade::check(head, &[]) {
            Ok(accept) => Route::Upgrade { accept, kind: UpgradeKind::Echo },
            Err(resp) => Route::Respond(resp),
        },
        path => {
            if head.method != "GET" && head.method != "HEAD" {
                return Route::Respond(Response::text(405, "").header("Allow", "GET, HEAD"));
            }
            Route::Respond(match path {
                "/health" => health(state),
                "/ready" => ready(state),
                "/metrics" => Response::new(200)
                    .header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                    .body(state.metrics.render(&snapshot(state))),
                "/stats" => stats(state),
                "/history" => history(head.query, state),
                _ => match assets::find(path) {
                    Some(asset) => asset.response(),
                    None => Response::text(404, ""),
                },
            })
        }
    }
}

fn chat_upgrade(head: &Head<'_>, state: &ServerState) -> Route {
    let accept = match upgrade::check(head, &state.config.allowed_origins) {
        Ok(a) => a,
        Err(resp) => return Route::Respond(resp),
    };
    match join_params(head.query) {
        Ok(params) => Route::Upgrade { accept, kind: UpgradeKind::Chat(params) },
        Err(name) => Route::Respond(Response::text(400, &format!("invalid query parameter `{name}`"))),
    }
}

/// The answer to an upgrade when the process is full.
pub fn at_capacity() -> Response {
    Response::text(503, "at capacity, try another replica").header("Retry-After", "5")
}

fn health(state: &ServerState) -> Response {
    Response::json(
        200,
        format!(
            r#"{{"status":"healthy","pod":{},"connections":{},"uptime":{:.0}}}"#,
            crate::chat::protocol::json_string(&state.config.pod_name),
            state.ws_count(),
            state.uptime_secs()
        ),
    )
}

fn ready(state: &ServerState) -> Response {
    let status = match state.phase() {
        Phase::Running if state.ready() => "ready",
        Phase::Running => "full",
        Phase::Draining | Phase::Closing => "draining",
    };
    let code = if status == "ready" { 200 } else { 503 };
    Response::json(code, format!(r#"{{"status":"{status}","connections":{}}}"#, state.ws_count()))
}

fn stats(state: &ServerState) -> Response {
    let (rss, user, system) = metrics::process_usage();
    let (received, delivered) = state.metrics.messages();
    Response::json(
        200,
        format!(
            concat!(
                r#"{{"active_connections":{},"total_connections":{},"pod_name":{},"uptime":{:.0},"#,
                r#""memory":{{"rss":{}}},"cpu":{{"user":{},"system":{}}},"#,
                r#""messages":{{"received":{},"delivered":{}}},"workers":{}}}"#
            ),
            state.ws_count(),
            state.metrics.upgrades(),
            crate::chat::protocol::json_string(&state.config.pod_name),
            state.uptime_secs(),
            rss,
            (user * 1e6) as u64,
            (system * 1e6) as u64,
            received,
            delivered,
            state.inboxes.len(),
        ),
    )
}

fn history(query: &str, state: &ServerState) -> Response {
    let (room, limit) = match history_params(query) {
        Ok(p) => p,
        Err(name) => return Response::text(400, &format!("invalid query parameter `{name}`")),
    };
    let entries = state.history.recent(&room, limit);
    let mut body = Vec::with_capacity(2 + entries.iter().map(|e| e.json().len() + 1).sum::<usize>());
    body.push(b'[');
    for (i, e) in entries.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(e.json());
    }
    body.push(b']');
    Response::new(200).header("Content-Type", "application/json").header("Cache-Control", "no-store").body(body)
}

/// The figures `/metrics` reads at scrape time.
pub fn snapshot(state: &ServerState) -> Snapshot {
    let (rss_bytes, user, system) = metrics::process_usage();
    let (history_rooms, history_bytes) = state.history.usage();
    Snapshot {
        draining: state.phase() != Phase::Running,
        inbox_depth: state.inboxes.iter().map(|i| i.len()).sum(),
        publish_queue_depth: state.publish.len(),
        history_rooms,
        history_bytes,
        rss_bytes,
        cpu_seconds: user + system,
        uptime_seconds: state.uptime_secs(),
        max_connections: state.config.max_connections,
    }
}
