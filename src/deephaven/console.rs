//! Server-side Python scripts through the console service. dhbus only runs
//! scripts it builds itself from validated identifiers and quoted literals.

use super::error::{DeephavenError, Result};
use super::session::Session;
use crate::proto::dh::script::grpc::{ExecuteCommandRequest, StartConsoleRequest};

/// A Python console on the server.
#[derive(Clone, Debug)]
pub struct Console {
    /// Session that owns the console export.
    session: Session,
    /// The console's export ticket.
    console: super::ticket::Ticket,
}

/// Variables a script created, updated or removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScriptChanges {
    /// Newly created variables.
    pub created: Vec<String>,
    /// Variables that changed.
    pub updated: Vec<String>,
    /// Variables that were removed.
    pub removed: Vec<String>,
}

impl Console {
    /// Starts a Python console.
    pub async fn start(session: &Session) -> Result<Console> {
        let ticket = session.new_export();
        session
            .console_client()
            .start_console(StartConsoleRequest { result_id: Some(ticket.to_proto()), session_type: "python".into() })
            .await
            .map_err(|s| session.status_err("StartConsole", s))?;
        Ok(Console { session: session.clone(), console: ticket })
    }

    /// Runs `code`; a Python error becomes [`DeephavenError::Script`].
    pub async fn run(&self, code: &str) -> Result<ScriptChanges> {
        let resp = self
            .session
            .console_client()
            .execute_command(ExecuteCommandRequest { console_id: Some(self.console.to_proto()), code: code.to_string() })
            .await
            .map_err(|s| self.session.status_err("ExecuteCommand", s))?
            .into_inner();
        if !resp.error_message.is_empty() {
            return Err(DeephavenError::Script(resp.error_message));
        }
        let names = |v: &[crate::proto::dh::grpc::FieldInfo]| v.iter().map(|f| f.field_name.clone()).collect();
        let changes = resp.changes.unwrap_or_default();
        Ok(ScriptChanges { created: names(&changes.created), updated: names(&changes.updated), removed: names(&changes.removed) })
    }
}
