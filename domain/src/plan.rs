//! Plans and their limits (`docs/domain.md`, "Tenants and plans").

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Plan {
    Free,
    Team,
    Enterprise,
}

impl Plan {
    pub fn parse(s: &str) -> Option<Plan> {
        match s {
            "free" => Some(Plan::Free),
            "team" => Some(Plan::Team),
            "enterprise" => Some(Plan::Enterprise),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Plan::Free => "free",
            Plan::Team => "team",
            Plan::Enterprise => "enterprise",
        }
    }

    /// Seats (active members); `None` is unlimited.
    pub fn seat_limit(self) -> Option<u64> {
        match self {
            Plan::Free => Some(3),
            Plan::Team => Some(25),
            Plan::Enterprise => None,
        }
    }

    pub fn active_project_limit(self) -> Option<u64> {
        match self {
            Plan::Free => Some(3),
            Plan::Team => Some(100),
            Plan::Enterprise => None,
        }
    }

    /// Usage units per calendar month.
    pub fn monthly_usage_limit(self) -> Option<u64> {
        match self {
            Plan::Free => Some(10_000),
            Plan::Team => Some(1_000_000),
            Plan::Enterprise => None,
        }
    }

    /// This plan's multiple of the base request rate (`KEEL_RATE_LIMIT` is the free plan's);
    /// platform operators get the enterprise factor.
    pub fn rate_factor(self) -> u32 {
        match self {
            Plan::Free => 1,
            Plan::Team => 4,
            Plan::Enterprise => 16,
        }
    }
}
