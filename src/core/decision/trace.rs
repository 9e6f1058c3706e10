//! The checks a decision performed, in order, for `okta-jwt explain`. Recorded only when the
//! caller asks (`Env::trace`): the filter's own requests pay one branch per stage.

use serde::Serialize;

use crate::core::denial::Denial;

use super::halt::Halt;
use super::outcome::Decision;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: Option<String>,
}

/// What a failed stage says about itself.
pub trait Detail {
    fn detail(&self) -> String;
}

impl Detail for Denial {
    fn detail(&self) -> String {
        format!("{}: {}", self.reason.as_str(), self.detail)
    }
}

impl Detail for Halt {
    fn detail(&self) -> String {
        match self {
            Halt::Deny(d) => d.detail(),
            Halt::Scope(scope) => format!("insufficient_scope: requires {scope}"),
            Halt::Limited { retry_after_s, .. } => {
                format!("rate_limited: retry after {retry_after_s} s")
            }
            Halt::Wait { refetch: true, .. } => "waits for a refetch of the key set".into(),
            Halt::Wait { .. } => "waits for the first key fetch".into(),
            Halt::Introspect { .. } => "waits for the introspection answer".into(),
            Halt::NeedClientCert => "needs the client certificate".into(),
        }
    }
}

impl Decision {
    /// Records a check when tracing; `detail` is only computed then.
    pub fn note(&mut self, name: &'static str, ok: bool, detail: impl FnOnce() -> Option<String>) {
        if let Some(checks) = self.checks.as_mut() {
            checks.push(Check {
                name,
                ok,
                detail: detail(),
            });
        }
    }

    /// Records a stage's result and hands it back, for `?`.
    pub fn step<T, E: Detail>(&mut self, name: &'static str, r: Result<T, E>) -> Result<T, E> {
        match &r {
            Ok(_) => self.note(name, true, || None),
            Err(e) => self.note(name, false, || Some(e.detail())),
        }
        r
    }
}
