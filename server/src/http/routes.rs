//! Routing of a parsed request: the HTTP endpoints answered at once, and
//! the WebSocket routes turned into an upgrade for the worker to carry out.
//!
//! | path | answer |
//! | --- | --- |
//! | `/`, `/ws` + Upgrade | chat WebSocket (`room`, `name`, `since`; `token` with auth on) |
//! | `/` | the chat page |
//! | `/echo` + Upgrade | raw echo WebSocket, only with `ECHO_ROUTE=1` |
//! | `/health` | 200 JSON while alive; 503 once a worker thread died |
//! | `/ready` | 200 when accepting, 503 draining or full |
//! | `/metrics` | Prometheus text |
//! | `/stats` | the original server's JSON figures |
//! | `/history` | a room's last messages, newest first (a token with auth on) |
//!
//! With `ADMIN_PORT` set ([`route_on`]), a connection accepted on the admin
//! listener reaches `/health`, `/ready` and `/metrics` only, and a
//! connection on the public port no longer reaches `/metrics` (404).

use super::assets;
use super::query::{history_params, join_params, JoinParams};
use super::request::Head;
use super::response::Response;
use super::upgrade;
use crate::auth::{self, Denial, Identity};
use crate::chat::history::{Backing, Entry};
use crate::metrics::{self, Snapshot};
use crate::state::{Phase, ServerState};

/// What the worker does with a request.
#[derive(Debug)]
pub enum Route {
    /// Send this response.
    Respond(Response),
    /// `/history` of a room this pod must load first, or deeper than its
    /// ring with MongoDB behind it: ask the history loader for the room's
    /// last `limit`, answer with [`history_response`] when it replies.
    LoadHistory {
        /// The room.
        room: String,
        /// Messages asked for.
        limit: usize,
    },
    /// Refused by authentication (401/403): count the reason, send the answer.
    Denied(Denial),
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
    /// The chat, with the token's identity when authentication is on.
    Chat(JoinParams, Option<Identity>),
    /// Raw echo, for conformance testing.
    Echo,
}

/// The listener a connection was accepted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// `PORT`: clients.
    Public,
    /// `ADMIN_PORT`: the kubelet's probes and Prometheus.
    Admin,
}

/// Paths a connection accepted on the admin listener may reach.
const ADMIN_PATHS: &[&str] = &["/health", "/ready", "/metrics"];

/// Decides what to do with `head` arriving on `listener`: 404 for a path
/// that listener does not serve, otherwise [`route`].
pub fn route_on(listener: Listener, head: &Head<'_>, state: &ServerState) -> Route {
    let reachable = match listener {
        Listener::Admin => ADMIN_PATHS.contains(&head.path),
        Listener::Public => state.config.admin_port.is_none() || head.path != "/metrics",
    };
    if !reachable {
        return Route::Respond(Response::text(404, ""));
    }
    route(head, state)
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
            // An unknown path is 404 whatever the method; 405 is for a known one.
            let asset = assets::find(path);
            let endpoint = matches!(path, "/health" | "/ready" | "/metrics" | "/stats" | "/history");
            if !endpoint && asset.is_none() {
                return Route::Respond(Response::text(404, ""));
            }
            if head.method != "GET" && head.method != "HEAD" {
                return Route::Respond(Response::text(405, "").header("Allow", "GET, HEAD"));
            }
            Route::Respond(match (path, asset) {
                ("/health", _) => health(state),
                ("/ready", _) => ready(state),
                ("/metrics", _) => Response::new(200)
                    .header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                    .body(state.metrics.render(&snapshot(state))),
                ("/stats", _) => stats(state),
                ("/history", _) => return history(head, state),
                (_, Some(asset)) => asset.response(),
                (_, None) => Response::text(404, ""),
            })
        }
    }
}

fn chat_upgrade(head: &Head<'_>, state: &ServerState) -> Route {
    let accept = match upgrade::check(head, &state.config.allowed_origins) {
        Ok(a) => a,
        Err(resp) => return Route::Respond(resp),
    };
    let params = match join_params(head.query) {
        Ok(params) => params,
        Err(name) => return Route::Respond(Response::text(400, &format!("invalid query parameter `{name}`"))),
    };
    match auth::authorize(state.config.auth.as_ref(), head, &params.room) {
        Ok(identity) => Route::Upgrade { accept, kind: UpgradeKind::Chat(params, identity) },
        Err(denial) => Route::Denied(denial),
    }
}

/// The answer to an upgrade when the process is full.
pub fn at_capacity() -> Response {
    Response::text(503, "at capacity, try another replica").header("Retry-After", "5")
}

fn health(state: &ServerState) -> Response {
    if let Some(dead) = state.metrics.workers.iter().position(|w| w.died.load(std::sync::atomic::Ordering::Relaxed) > 0)
    {
        // A dead worker's clients are gone and its share of the port is
        // closed: the kubelet must restart the pod.
        return Response::json(
            503,
            format!(
                r#"{{"status":"unhealthy","reason":"worker {dead} died","pod":{}}}"#,
                crate::chat::protocol::json_string(&state.config.pod_name)
            ),
        );
    }
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

/// `/history`: from this pod's ring when it holds what was asked for;
/// otherwise through the history loader (see [`Route::LoadHistory`]).
fn history(head: &Head<'_>, state: &ServerState) -> Route {
    let (room, limit) = match history_params(head.query) {
        Ok(p) => p,
        Err(name) => return Route::Respond(Response::text(400, &format!("invalid query parameter `{name}`"))),
    };
    if let Err(denial) = auth::authorize(state.config.auth.as_ref(), head, &room) {
        return Route::Denied(denial);
    }
    let h = &state.history;
    let deeper = || {
        matches!(h.backing(), Backing::Store { deep: true })
            && h.last_seq(&room).saturating_sub(limit as u64) + 1 < h.first_seq(&room)
    };
    if state.loader.is_some() && (h.needs_load(&room, None) || deeper()) {
        return Route::LoadHistory { room, limit };
    }
    Route::Respond(history_response(&h.recent(&room, limit), &[], limit))
}

/// The `/history` answer: the newest `limit` of `ring` (newest first, as
/// [`History::recent`](crate::chat::history::History::recent) returns them)
/// followed by `older` (oldest first, from MongoDB), newest first.
pub fn history_response(ring: &[Entry], older: &[Entry], limit: usize) -> Response {
    let oldest_held = ring.last().map_or(u64::MAX, |e| e.seq);
    let entries: Vec<&Entry> =
        ring.iter().chain(older.iter().rev().filter(|e| e.seq < oldest_held)).take(limit).collect();
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
        inbox_dropped: state.inboxes.iter().map(|i| i.dropped()).sum(),
        publish_queue_depth: state.publish.len(),
        history_rooms,
        history_bytes,
        rss_bytes,
        cpu_seconds: user + system,
        uptime_seconds: state.uptime_secs(),
        max_connections: state.config.max_connections,
    }
}
