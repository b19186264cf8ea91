//! Per-room permissions: the `rooms` claim of a token, a list of room
//! names where a trailing `*` makes a prefix (`team-*` grants `team-a`,
//! `team-b`, …; `*` grants every room). No claim grants every room.

/// The rooms a token may join and read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// No `rooms` claim: every room.
    All,
    /// Exact names and prefixes (stored without their `*`).
    Some {
        /// Exact room names.
        exact: Vec<String>,
        /// Prefixes.
        prefixes: Vec<String>,
    },
}

impl Grant {
    /// The grant of a `rooms` claim (`None`: absent).
    pub fn from_claim(rooms: Option<Vec<String>>) -> Grant {
        let Some(rooms) = rooms else { return Grant::All };
        let mut exact = Vec::new();
        let mut prefixes = Vec::new();
        for r in rooms {
            match r.strip_suffix('*') {
                Some(prefix) => prefixes.push(prefix.to_string()),
                None => exact.push(r),
            }
        }
        Grant::Some { exact, prefixes }
    }

    /// Whether `room` is granted.
    pub fn allows(&self, room: &str) -> bool {
        match self {
            Grant::All => true,
            Grant::Some { exact, prefixes } => {
                exact.iter().any(|r| r == room) || prefixes.iter().any(|p| room.starts_with(p.as_str()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(rooms: &[&str]) -> Grant {
        Grant::from_claim(Some(rooms.iter().map(|s| s.to_string()).collect()))
    }

    #[test]
    fn exact_names_and_prefixes() {
        let g = grant(&["lobby", "team-*"]);
        assert!(g.allows("lobby"));
        assert!(!g.allows("lobby2"), "an exact name is not a prefix");
        assert!(g.allows("team-a") && g.allows("team-"));
        assert!(!g.allows("team") && !g.allows("other"));
        assert!(grant(&["*"]).allows("anything"));
        assert!(!grant(&[]).allows("lobby"), "an empty list grants nothing");
        assert!(Grant::from_claim(None).allows("lobby"), "no claim grants everything");
    }
}
